//! Readiness for waiters outside the port (`PortSet`, async receives): doorbell requests,
//! draining doorbells, and "would a receive find something now".

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::error::{MessageError, TryRecvError};

use crate::shm::wake::WANTS_DOORBELL;
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

    /// True when a watcher was made (of whichever kind).
    #[cfg(feature = "tokio")]
    pub(crate) fn has_watcher(&self) -> bool {
        self.watcher.get().is_some()
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
                self.wake_peer(&rx.mem().ctrl().writer_sleeping);
            }
        }
        self.arm_for_data();
        if self.readable_now(false) {
            // Not waiting after all: withdraw the request, or the writer would ring for
            // nothing at its next post, and doorbells would pile up on a busy port.
            self.disarm();
            return true;
        }
        false
    }

    /// Asks the writer to ring this port's socket at its next post or close (a waiter
    /// outside the port: a future, an event loop). The caller then looks once more.
    pub(crate) fn arm_for_data(&self) {
        let ctrl = self.seg.ring_ctrl(self.side.peer());
        // A doorbell needs the writer's full fence back (`shm/polling.rs`).
        self.recv_polls.may_sleep(ctrl);
        let word = &ctrl.reader_sleeping;
        word.fetch_or(WANTS_DOORBELL, Ordering::Relaxed);
        // SeqCst fence: pairs with the writer's fence in `wake`: either it sees our bit and
        // rings, or our next look sees its record.
        crate::sys::sync::fence(Ordering::SeqCst);
    }

    /// Asks the reader of the ring this port writes to ring our socket when it frees room
    /// (or closes): an async post waiting for room. The caller then tries once more.
    pub(crate) fn arm_for_room(&self) {
        let word = &self.seg.ring_ctrl(self.side).writer_sleeping;
        word.fetch_or(WANTS_DOORBELL, Ordering::Relaxed);
        // SeqCst fence: pairs with the reader's fence in `wake` after it publishes its
        // index: either it sees our bit and rings, or our next try sees the room.
        crate::sys::sync::fence(Ordering::SeqCst);
    }

    /// Withdraws [`arm_for_room`](Self::arm_for_room)'s request: the post went through.
    pub(crate) fn disarm_room(&self) {
        self.seg
            .ring_ctrl(self.side)
            .writer_sleeping
            .fetch_and(!WANTS_DOORBELL, Ordering::Relaxed);
    }

    /// The socket reported a hang-up: ask the kernel whether the peer's process is gone,
    /// so the next receive or post sees it.
    pub(crate) fn note_hang_up(&self) {
        self.check_liveness_now();
    }
}

impl MessagePort {
    /// The descriptor that becomes readable when this port has news, for an event loop of
    /// your own (epoll, mio, calloop, tokio's `AsyncFd`): the fallible form of
    /// [`as_fd`](AsFd::as_fd).
    ///
    /// Readable means "call [`try_recv`](Self::try_recv) now": a message is queued, or the
    /// peer is gone. Once this descriptor was asked for, every non-blocking receive that
    /// finds the queue empty (`try_recv`, `try_recv_archived`, `try_recv_raw`,
    /// [`try_iter`](Self::try_iter) at its end) asks the peer to make it readable at its
    /// next post, so the rule is the usual one for edge-triggered readiness: when it is
    /// readable, receive until `Empty`, then wait again. It works level-triggered too; a
    /// wake-up can be spurious (the doorbell of a message already received), and the
    /// following `Empty` consumes it. Ask for it, then receive until `Empty` once before
    /// the first wait: messages queued before it was asked for rang nothing.
    ///
    /// The descriptor is the channel's socket, created on first need; it stays valid while
    /// the port lives here (a port that moves to another process takes it along).
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use rustix::event::{PollFd, PollFlags, poll};
    ///
    /// let ch = shmport::MessageChannel::new()?;
    /// let fd = ch.port2.readiness_fd()?;
    /// assert!(ch.port2.try_recv::<u32>().unwrap_err().is_empty()); // arms it
    /// ch.port1.post_message(&7u32, [])?;
    /// let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    /// poll(&mut fds, None)?;
    /// assert_eq!(ch.port2.try_recv::<u32>()?.data, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The operating system refused the socket (the descriptor limit).
    pub fn readiness_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        let fd = self.socket()?;
        if !self.watched.replace(true) {
            // From now on every post rings; what is queued already, a receive finds.
            self.arm_for_data();
        }
        Ok(fd)
    }

    /// A non-blocking receive for the public `try_*` calls: as `try_recv_with`, and when
    /// the port's descriptor is watched by an event loop and the queue is empty, arms the
    /// doorbell (consuming the doorbells already there) so the descriptor becomes
    /// readable at the next post.
    pub(super) fn try_recv_now<R, D>(&self, decode: &mut D) -> Result<MessageEvent<R>, TryRecvError>
    where
        D: FnMut(&[u8], u64) -> Result<R, MessageError> + ?Sized,
    {
        let r = self.try_recv_with(true, decode);
        if !self.watched.get() || !matches!(r, Err(TryRecvError::Empty)) {
            return r;
        }
        // Consume the doorbells first: one rung after this is news and stays.
        self.drain_doorbells();
        if self.ready_or_arm(false) {
            // Something arrived meanwhile (or the peer went): take it.
            return self.try_recv_with(false, decode);
        }
        Err(TryRecvError::Empty)
    }
}

/// The port's readiness descriptor ([`MessagePort::readiness_fd`]).
///
/// # Panics
///
/// When the operating system refuses the socket the descriptor is (the process's
/// descriptor limit is reached). Use [`MessagePort::readiness_fd`] to handle that error.
impl AsFd for MessagePort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self.readiness_fd() {
            Ok(fd) => fd,
            Err(e) => panic!("shmport: no descriptor for the port's readiness: {e}"),
        }
    }
}

/// As [`AsFd`]: the port's readiness descriptor.
impl AsRawFd for MessagePort {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}
