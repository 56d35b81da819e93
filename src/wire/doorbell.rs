//! Doorbells: the one-byte socket message a writer sends when its reader waits outside the
//! port (in a `PortSet` or a future) and asked for one (`WANTS_DOORBELL`).

use std::os::fd::{BorrowedFd, OwnedFd};

use crate::sys;

/// The one byte of a doorbell message: "the ring you read has news". A descriptor-passing
/// note is [`SOCKET_MESSAGE`](super::transfer::SOCKET_MESSAGE) bytes, so the two never look
/// alike.
pub(crate) const DOORBELL: u8 = 0xDB;

/// Rings the doorbell of the port at the other end of `sock`, never waiting: a full socket
/// buffer already holds a doorbell, and a gone peer needs none.
pub(crate) fn ring(sock: BorrowedFd<'_>) {
    sys::send_byte_nonblocking(sock, DOORBELL);
}

/// Consumes the doorbells at the head of `sock`'s queue, stopping at the first message that
/// is not one (a descriptor-passing note stays for the receive that expects it), or after
/// `limit` of them. Returns how many it consumed.
pub(crate) fn drain(sock: BorrowedFd<'_>, limit: usize) -> usize {
    sys::drain_byte_messages(sock, DOORBELL, limit)
}

/// True for a received socket message that is a doorbell rather than a note.
pub(crate) fn is_doorbell(bytes: &[u8], fds: &[OwnedFd]) -> bool {
    bytes == [DOORBELL] && fds.is_empty()
}
