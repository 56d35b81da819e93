//! Readiness for waiters outside the port (`PortSet`, async receives): doorbell requests,
//! draining doorbells, and "would a receive find something now".

use std::os::fd::{AsFd, BorrowedFd};

use crate::error::{RecvError, TryRecvError};
use crate::shm::wake::{WANTS_DOORBELL, wake};
use crate::sys;
use crate::sys::sync::Ordering;
use crate::wire::codec::FingerprintCache;

use super::*;

/// Doorbells consumed per look: more may be queued (a writer rings at most once per
/// request, and the socket buffer bounds how many requests can pile up), and a peer that
/// floods us with them must not hold the thread that drains.
pub(super) const DOORBELLS_PER_DRAIN: usize = 256;

impl MessagePort {
    pub(crate) fn recv_fp(&self) -> &FingerprintCache {
        &self.recv_fp
    }

    /// A receive future or stream was dropped: the reactor forgets its task's waker.
    pub(crate) fn forget_waker(&self) {
        if let Some(reg) = self.async_reg.get() {
            reg.clear_waker();
        }
    }

    /// One poll of an async receive: a queued message is returned at once; otherwise the
    /// task's waker is left with the reactor and the doorbell armed. Only a `Ready` result
    /// takes anything from the ring, so dropping the future between polls loses nothing.
    pub(crate) fn poll_recv_with<R>(
        &self,
        cx: &mut std::task::Context<'_>,
        decode: &mut Decoder<'_, R>,
    ) -> std::task::Poll<Result<MessageEvent<R>, RecvError>> {
        use std::task::Poll;
        let done = |r: Result<MessageEvent<R>, TryRecvError>| match r {
            Ok(ev) => Some(Ok(ev)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
            Err(TryRecvError::MessageError(e)) => Some(Err(RecvError::MessageError(e))),
        };
        if let Some(r) = done(self.try_recv_with(true, decode)) {
            return Poll::Ready(r);
        }
        let reg = match self.async_reg.get() {
            Some(reg) => reg,
            None => {
                let made = self
                    .socket()
                    .and_then(|sock| crate::wait::reactor::Registration::new(sock));
                match made {
                    Ok(reg) => self.async_reg.get_or_init(|| reg),
                    Err(e) => return Poll::Ready(Err(RecvError::Os(e))),
                }
            }
        };
        let hung_up = reg.set_waker(cx.waker());
        let more_doorbells = self.drain_doorbells();
        if self.ready_or_arm(hung_up) {
            if let Some(r) = done(self.try_recv_with(false, decode)) {
                return Poll::Ready(r);
            }
            // Readable a moment ago, empty now: cannot happen with one consumer, but if it
            // did, ask to be polled again rather than sleep through news.
            cx.waker().wake_by_ref();
        } else if more_doorbells {
            // A flood of doorbells: drain the rest at the next poll, yielding in between.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
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
            sys::drain_doorbells(sock.as_fd(), DOORBELLS_PER_DRAIN) == DOORBELLS_PER_DRAIN
        })
    }

    /// Clears this port's doorbell request (it leaves a `PortSet`).
    pub(crate) fn disarm(&self) {
        self.seg
            .ring_ctrl(1 - self.side)
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
        let word = &self.seg.ring_ctrl(1 - self.side).reader_sleeping;
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

    /// True when the peer is gone (asking the kernel) and nothing it posted is left.
    pub(crate) fn peer_gone_and_drained(&self) -> bool {
        if !self.check_liveness_now() {
            return false;
        }
        self.rx
            .try_borrow_mut()
            .is_ok_and(|mut rx| matches!(rx.peek(), Ok(None)))
    }
}
