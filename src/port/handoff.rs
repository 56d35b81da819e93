//! Handing this end of the channel to a new owner (a child process, a transfer): its
//! descriptors, its lazily created socket, and the moved mark.

use std::os::fd::{AsFd, BorrowedFd};

use crate::shm::segment::Segment;

use super::*;

impl MessagePort {
    /// Publishes this port's state for whoever attaches to its end next, and marks it moved
    /// so that dropping this handle closes nothing.
    pub(crate) fn prepare_move(&self) {
        if let Ok(mut rx) = self.rx.try_borrow_mut() {
            rx.flush();
        }
        self.moved.set(true);
    }

    /// What carries this end elsewhere: the segment, the side and the socket.
    pub(crate) fn parts(&self) -> std::io::Result<(&Segment, usize, BorrowedFd<'_>)> {
        Ok((&self.seg, self.side, self.socket()?))
    }

    /// This end's socket, created with its peer's on first need. A channel whose two ports
    /// live in one process needs none until one of them leaves (spawned or transferred)
    /// or posts a transfer; the first to need one creates the pair and leaves the other
    /// end with the segment, where the peer port picks it up.
    pub(super) fn socket(&self) -> std::io::Result<BorrowedFd<'_>> {
        if let Some(s) = self.sock.get() {
            return Ok(s.as_fd());
        }
        let mine = self.seg.take_or_create_socket(self.side)?;
        Ok(self.sock.get_or_init(|| mine).as_fd())
    }

    /// Undoes [`prepare_move`](Self::prepare_move) when the move failed.
    pub(crate) fn unmark_moved(&self) {
        self.moved.set(false);
    }
}
