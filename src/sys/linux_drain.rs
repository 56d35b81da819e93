//! Consuming a run of one-byte messages (doorbells) from a `SOCK_SEQPACKET` socket in three
//! system calls, however long the run, instead of two per message.
//!
//! A descriptor-passing note may sit behind the doorbells and must stay queued for the
//! receive that expects it, so nothing is consumed before it is seen to be a doorbell. A
//! plain `MSG_PEEK` always shows the head of the queue; with the socket's peek offset
//! (`SO_PEEK_OFF`, set to 0 first) each peek moves on to the next message, so one
//! `recvmmsg(MSG_PEEK)` shows up to [`BATCH`] of them. The leading doorbells among them are
//! then consumed by one more `recvmmsg`. This port is the socket's only reader, so the
//! messages consumed are the ones peeked. A kernel without peek offsets on this socket type
//! gets the two calls per message.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Messages looked at per `recvmmsg`.
const BATCH: usize = 64;

/// Consumes the one-byte messages equal to `byte` at the head of `sock`'s queue, stopping
/// at the first other message (which stays queued) or after `limit`. Returns how many.
pub(crate) fn drain_byte_messages(sock: BorrowedFd<'_>, byte: u8, limit: usize) -> usize {
    let mut drained = 0;
    while drained < limit {
        let batch = (limit - drained).min(BATCH);
        let Some(run) = leading_run(sock, byte, batch) else {
            return drained + drain_one_by_one(sock, byte, limit - drained);
        };
        if run > 0 {
            consume(sock, run);
        }
        drained += run;
        if run < batch {
            break;
        }
    }
    drained
}

/// How many of the first `batch` queued messages are `[byte]` with no descriptors, before
/// any other; `None` when the socket cannot peek past its head.
fn leading_run(sock: BorrowedFd<'_>, byte: u8, batch: usize) -> Option<usize> {
    let zero: libc::c_int = 0;
    // SAFETY: `zero` is a live c_int and its size is passed; SO_PEEK_OFF reads an int.
    let set = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&raw const zero).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return None;
    }
    let mut heads = [[0u8; 2]; BATCH];
    let mut got = [(0, 0); BATCH];
    let n = recv_batch(
        sock,
        &mut heads[..batch],
        libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        &mut got,
    );
    let run = got[..n]
        .iter()
        .zip(&heads)
        .take_while(|((len, flags), head)| {
            // A longer message reports its true length (MSG_TRUNC), and one carrying
            // descriptors reports MSG_CTRUNC (we gave no room for them): neither is a
            // doorbell.
            *len == 1 && head[0] == byte && flags & libc::MSG_CTRUNC == 0
        })
        .count();
    Some(run)
}

/// Consumes the next `count` messages, known to be one byte long with no descriptors.
fn consume(sock: BorrowedFd<'_>, count: usize) {
    let mut heads = [[0u8; 2]; BATCH];
    recv_batch(
        sock,
        &mut heads[..count],
        libc::MSG_DONTWAIT,
        &mut [(0, 0); BATCH],
    );
}

/// One `recvmmsg` of up to `bufs.len()` messages, each into its buffer and with no room
/// for descriptors. Returns how many it received, with `(length, msg_flags)` of each in
/// `got` (the length is the message's own with `MSG_TRUNC`).
fn recv_batch(
    sock: BorrowedFd<'_>,
    bufs: &mut [[u8; 2]],
    flags: libc::c_int,
    got: &mut [(usize, libc::c_int); BATCH],
) -> usize {
    let n = bufs.len();
    let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); BATCH];
    let mut msgs = [MaybeUninit::<libc::mmsghdr>::uninit(); BATCH];
    for (i, buf) in bufs.iter_mut().enumerate() {
        iovs[i].write(libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        });
        // SAFETY: an all-zero `mmsghdr` is valid (null name and control, no iovecs).
        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
        m.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
        m.msg_hdr.msg_iovlen = 1;
        msgs[i].write(m);
    }
    // SAFETY: the first `n` entries of `msgs` are initialized, each naming one initialized
    // iovec over a live 2-byte buffer that outlives the call; no name or control buffer is
    // given, so the kernel writes only the buffers, `msg_len` and `msg_flags`; a null
    // timeout with MSG_DONTWAIT never waits.
    let received = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    let received = usize::try_from(received).unwrap_or(0).min(n);
    for (out, m) in got.iter_mut().zip(&msgs[..received]) {
        // SAFETY: initialized above, and `recvmmsg` only filled in fields.
        let m = unsafe { m.assume_init_ref() };
        *out = (m.msg_len as usize, m.msg_hdr.msg_flags);
    }
    received
}

/// The fallback: a peek and a receive per message.
fn drain_one_by_one(sock: BorrowedFd<'_>, byte: u8, limit: usize) -> usize {
    use rustix::net::{RecvFlags, recv};
    let mut head = [0u8; 2];
    let mut drained = 0;
    while drained < limit {
        let peeked = recv(
            sock,
            &mut head,
            RecvFlags::DONTWAIT | RecvFlags::PEEK | RecvFlags::TRUNC,
        );
        if !matches!(peeked, Ok((_, 1))) || head[0] != byte {
            break;
        }
        let _ = recv(sock, &mut head, RecvFlags::DONTWAIT);
        drained += 1;
    }
    drained
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::{recv_with_fds, send_byte_nonblocking, send_with_fds, socket_pair};

    const BELL: u8 = 0xDB;

    #[test]
    fn a_run_longer_than_a_batch_is_drained_and_the_note_behind_it_stays_with_its_descriptor() {
        let (a, b) = socket_pair().unwrap();
        for _ in 0..BATCH + 7 {
            send_byte_nonblocking(a.as_fd(), BELL);
        }
        send_with_fds(a.as_fd(), b"note", &[a.as_fd()], false).unwrap();
        send_byte_nonblocking(a.as_fd(), BELL);
        assert_eq!(drain_byte_messages(b.as_fd(), BELL, 1000), BATCH + 7);
        let mut buf = [0u8; 16];
        let note = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..note.len], note.fds.len()), (&b"note"[..], 1));
        assert_eq!(drain_byte_messages(b.as_fd(), BELL, 1000), 1);
    }

    #[test]
    fn a_one_byte_message_carrying_a_descriptor_is_not_a_doorbell() {
        let (a, b) = socket_pair().unwrap();
        send_byte_nonblocking(a.as_fd(), BELL);
        send_with_fds(a.as_fd(), &[BELL], &[a.as_fd()], false).unwrap();
        assert_eq!(drain_byte_messages(b.as_fd(), BELL, 1000), 1);
        let mut buf = [0u8; 16];
        let kept = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..kept.len], kept.fds.len()), (&[BELL][..], 1));
    }

    #[test]
    fn the_drain_stops_at_its_limit_and_at_another_byte() {
        let (a, b) = socket_pair().unwrap();
        for _ in 0..10 {
            send_byte_nonblocking(a.as_fd(), BELL);
        }
        send_byte_nonblocking(a.as_fd(), 0x01);
        assert_eq!(drain_byte_messages(b.as_fd(), BELL, 4), 4);
        assert_eq!(drain_byte_messages(b.as_fd(), BELL, 1000), 6);
        assert_eq!(drain_byte_messages(b.as_fd(), BELL, 1000), 0);
        let mut buf = [0u8; 4];
        let other = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..other.len], &[0x01]);
    }

    #[test]
    fn an_empty_socket_drains_nothing() {
        let (_a, b) = socket_pair().unwrap();
        assert_eq!(drain_byte_messages(b.as_fd(), BELL, 1000), 0);
    }
}
