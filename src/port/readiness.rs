//! Readiness for waiters outside the port (`PortSet`, async receives): doorbell requests,
//! draining doorbells, and "would a receive find something now".

use std::os::fd::{AsFd, BorrowedFd};

use crate::shm::wake::{WANTS_DOORBELL, wake};
use crate::sys::sync::Ordering;
use crate::wire::codec::FingerprintCache;

use super::*;

/// Doorbells consumed per look: more may be queued (a writer rings at most once per
/// request, and the socket buffer bounds how many requests can pile up), and a peer that
/// floods us with them must not hold the thread that drains.
pub(super) const DOORBELLS_PER_DRAIN: usize = 256;

/// Something outside the port that watches its socket (the async reactor's registration).
/// The port keeps it, and releases it when the handle goes, before the socket closes.
pub(crate) trait SocketWatcher: std::any::Any + Send {
    /// The port's handle goes: stop watching `sock`.
    fn release(self: Box<Self>, sock: BorrowedFd<'_>);
    /// For [`MessagePort::watcher`]'s downcast.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl MessagePort {
    pub(crate) fn recv_fp(&self) -> &FingerprintCache {
        &self.recv_fp
    }

    /// The watcher of this port's socket kept for waiters outside the port (the async
    /// reactor's registration), made by `make` on first need.
    pub(crate) fn watcher<W: SocketWatcher>(
        &self,
        make: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<W>,
    ) -> std::io::Result<&W> {
        let watcher = match self.watcher.get() {
            Some(w) => w,
            None => {
                let made = make(self.socket()?)?;
                self.watcher.get_or_init(|| Box::new(made))
            }
        };
        watcher
            .as_any()
            .downcast_ref()
            .ok_or_else(|| std::io::Error::other("a port has one kind of socket watcher"))
    }

    /// The watcher made by [`watcher`](Self::watcher), if any.
    pub(crate) fn existing_watcher<W: SocketWatcher>(&self) -> Option<&W> {
        self.watcher.get()?.as_any().downcast_ref()
    }

    /// The descriptor that becomes readable when this port has news: the socket a peer
    /// rings (created on first need, see [`socket`](Self::socket)).
    pub(crate) fn news_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        self.socket()
    }

    /// Consumes the doorbells at the head of this port's socket (descriptor-passing notes
    /// stay), at most a bounded number per call, so a peer flooding us cannot hold this
    /// thread (and a whole `PortSet`). True when more may be queued.
    pub(crate) fn drain_doorbells(&self) -> bool {
        self.sock.get().is_some_and(|sock| {
            crate::wire::doorbell::drain(sock.as_fd(), DOORBELLS_PER_DRAIN) == DOORBELLS_PER_DRAIN
        })
    }

    /// Clears this port's doorbell request (it leaves a `PortSet`).
    pub(crate) fn disarm(&self) {
        self.seg
            .ring_ctrl(self.side.peer())
            .reader_sleeping
            .fetch_and(!WANTS_DOORBELL, Ordering::Relaxed);
    }

    /// True when a receive would not find the queue empty now: a record is queued, the
    /// peer is gone (a receive says `Disconnected`) or the channel is poisoned. `hung_up`:
    /// the socket reported a hang-up, so ask the kernel whether the peer process is gone.
    pub(crate) fn readable_now(&self, hung_up: bool) -> bool {
        if self.peer.get() != PeerState::Alive || (hung_up && self.check_liveness_now()) {
            return true;
        }
        let Ok(mut rx) = self.rx.try_borrow_mut() else {
            return false;
        };
        match rx.peek() {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => self.peer_gone_cheap(),
        }
    }

    /// [`readable_now`](Self::readable_now), and when not: asks the peer to ring our
    /// socket at its next post or close, then looks once more (the doorbell request and the
    /// peer's publication are ordered by the same fences as a futex sleep, see `wake`).
    /// `false` means the socket will become readable when news arrives.
    pub(crate) fn ready_or_arm(&self, hung_up: bool) -> bool {
        if self.readable_now(hung_up) {
            return true;
        }
        if let Ok(mut rx) = self.rx.try_borrow_mut() {
            // Publish what we consumed, so a writer waiting for room is not left waiting.
            if rx.flush() {
                wake(&rx.mem().ctrl().writer_sleeping);
            }
        }
        let word = &self.seg.ring_ctrl(self.side.peer()).reader_sleeping;
        word.fetch_or(WANTS_DOORBELL, Ordering::Relaxed);
        // SeqCst fence: pairs with the writer's fence in `wake`: either it sees our bit and
        // rings, or we see its record below.
        crate::sys::sync::fence(Ordering::SeqCst);
        if self.readable_now(false) {
            // Not waiting after all: withdraw the request, or the writer would ring for
            // nothing at its next post, and doorbells would pile up on a busy port.
            self.disarm();
            return true;
        }
        false
    }
}
