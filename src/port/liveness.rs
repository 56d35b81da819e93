//! Whether the peer is still there: the closed flags, the kernel's hang-up report, and
//! poisoning a channel whose shared memory is impossible.

use std::os::fd::AsFd;

use crate::error::{MessageError, TryRecvError};
use crate::shm::ring::{Consumer, Corrupt};
use crate::shm::wake::{WANTS_DOORBELL, wake};
use crate::sys;
use crate::sys::sync::Ordering;

use super::*;

/// How many empty `try_recv` calls pass between two kernel liveness checks.
pub(super) const LIVENESS_EVERY: u32 = 64;

impl MessagePort {
    /// True when the peer is known to be gone without asking the kernel.
    #[inline]
    pub(super) fn peer_gone_cheap(&self) -> bool {
        match self.peer.get() {
            PeerState::Alive => {
                // Acquire: pairs with the Release store in the peer's `Drop`, so every
                // record the peer published before closing is visible to our next peek.
                if self
                    .seg
                    .closed_flag(self.side.peer())
                    .load(Ordering::Acquire)
                    != 0
                {
                    self.peer.set(PeerState::Gone);
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }

    pub(super) fn liveness_due(&self) -> bool {
        let n = self.liveness_countdown.get();
        if n <= 1 {
            self.liveness_countdown.set(LIVENESS_EVERY);
            true
        } else {
            self.liveness_countdown.set(n - 1);
            false
        }
    }

    /// Asks the kernel whether every descriptor of the peer's socket is closed (its process
    /// exited or was killed). One `poll` system call.
    pub(super) fn check_liveness_now(&self) -> bool {
        if self.peer_gone_cheap() {
            return true;
        }
        // No socket yet: the peer is in this process (it would have left one for us when
        // it left), and its Drop sets the closed flag checked above.
        let sock = self.sock.get().or_else(|| {
            let deposited = self.seg.take_deposited_socket(self.side)?;
            Some(self.sock.get_or_init(|| deposited))
        });
        if sock.is_some_and(|s| sys::peer_hung_up(s.as_fd())) {
            event!(
                info,
                "the peer of a port (side {:?}) is gone: its process exited or was killed",
                self.side
            );
            self.peer.set(PeerState::Gone);
            true
        } else {
            false
        }
    }

    pub(super) fn poison_rx(
        &self,
        rx: std::cell::RefMut<'_, Consumer>,
        c: Corrupt,
    ) -> TryRecvError {
        drop(rx);
        self.poison(c);
        TryRecvError::MessageError(MessageError::Corrupt(c.0))
    }

    /// Stops all use of a segment whose metadata is impossible, and tells the peer.
    pub(super) fn poison(&self, why: Corrupt) {
        event!(
            warn,
            "a channel's shared memory is impossible ({}): the port is poisoned and reports Disconnected",
            why.0
        );
        self.peer.set(PeerState::Poisoned);
        self.announce_close();
    }

    pub(super) fn announce_close(&self) {
        // Release: pairs with the peer's Acquire load in `peer_gone_cheap`.
        self.seg.closed_flag(self.side).store(1, Ordering::Release);
        // The peer may sleep waiting for data from us or for room in the ring it fills.
        self.wake_peer(&self.seg.ring_ctrl(self.side).reader_sleeping);
        self.wake_peer(&self.seg.ring_ctrl(self.side.peer()).writer_sleeping);
    }

    /// Wakes the peer waiting on `word` (for data in the ring we write, or for room in the
    /// ring we read): a futex wake if it sleeps, a doorbell on its socket if it waits in a
    /// [`PortSet`](crate::PortSet), a future or an event loop.
    #[inline]
    pub(super) fn wake_peer(&self, word: &crate::sys::sync::AtomicU32) {
        self.ring_if_asked(wake(word));
    }

    /// A record was published in the ring we write: counted; wakes the reader if it
    /// waits (without a full fence while it busy-polls, `shm/polling.rs`).
    #[inline]
    pub(super) fn published(&self, ring: &crate::shm::ring::RingMem) {
        self.posts.set(self.posts.get() + 1);
        self.ring_if_asked(crate::shm::polling::wake_reader(ring.ctrl()));
    }

    /// Rings the doorbell when the sleep word's `bits`, as a wake returned them, ask for it.
    #[inline]
    fn ring_if_asked(&self, bits: u32) {
        if bits & WANTS_DOORBELL != 0 {
            self.ring_doorbell();
        }
    }

    #[cold]
    pub(super) fn ring_doorbell(&self) {
        if let Ok(sock) = self.socket() {
            crate::wire::doorbell::ring(sock);
        }
    }

    /// Receives and drops what is still queued for this closing port, so the buffers and
    /// ports in unread transfers are freed now (a pooled slot in transit would otherwise
    /// stay taken for the life of its heap). The peer has been told we are gone, so it
    /// stops posting; at most a ring's worth of records is taken.
    /// Ports found in the queue are dropped too and discard theirs, to a bounded depth: a
    /// peer can nest ports in ports, and the stack must not follow it down.
    pub(super) fn discard_incoming(&self) {
        thread_local!(static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        const MAX_DEPTH: u32 = 4;
        if DEPTH.get() >= MAX_DEPTH {
            return;
        }
        DEPTH.set(DEPTH.get() + 1);
        let most = self.seg.capacity() / 24 + 1;
        let mut ignore = |_: &[u8], _: u64| Ok(());
        for _ in 0..most {
            match self.try_recv_with(false, &mut ignore) {
                Ok(_) | Err(TryRecvError::MessageError(_)) => {}
                Err(_) => break,
            }
        }
        DEPTH.set(DEPTH.get() - 1);
    }
}
