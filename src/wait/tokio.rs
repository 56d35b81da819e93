//! With the `tokio` feature: async receives and posts inside a tokio runtime wait through
//! tokio's own reactor (`AsyncFd` on the port's socket) instead of shmport's reactor
//! thread, so a wake-up is one thread's, not two.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::port::{MessagePort, SocketWatcher};

/// A port's socket registered with the tokio runtime its first async wait ran in, through
/// a duplicate of the descriptor that the registration owns.
#[derive(Debug)]
pub(crate) struct TokioWatch {
    fd: AsyncFd<OwnedFd>,
    /// Arms since the doorbells were last drained (see [`TokioWatch::due_for_drain`]).
    arms: std::sync::atomic::AtomicU32,
}

/// Arms between two drains of the doorbells. The writer rings at most once per arm, so at
/// most this many doorbells wait unread: far fewer than the socket buffer holds, so a ring
/// never fails for a full buffer (which would be news tokio never hears of).
const ARMS_PER_DRAIN: u32 = 32;

impl TokioWatch {
    pub(crate) fn new(fd: BorrowedFd<'_>) -> io::Result<TokioWatch> {
        let own = fd.try_clone_to_owned()?;
        // SAFETY: tokio requires the descriptor to stay open, and to refer to the same open
        // file, for the life of the `AsyncFd`; `own` is an `OwnedFd` the `AsyncFd` owns and
        // closes only when it is dropped, so nothing else can close or replace it.
        let registered = unsafe { AsyncFd::register_with_interest(own, Interest::READABLE) };
        registered
            .map(|fd| TokioWatch {
                fd,
                arms: std::sync::atomic::AtomicU32::new(0),
            })
            .map_err(io::Error::from)
    }

    /// Counts an arm; true (and the count restarts) when the doorbells should be drained
    /// before it. Unread doorbells do not hide news from tokio: its registration is
    /// edge-triggered, and each arriving doorbell is an edge.
    pub(crate) fn due_for_drain(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // Only the port's one receiving task arms (the port is not `Sync`): no race.
        let n = self.arms.load(Relaxed) + 1;
        let due = n >= ARMS_PER_DRAIN;
        self.arms.store(if due { 0 } else { n }, Relaxed);
        due
    }

    /// `Ready(hung_up)` once the socket reported news since the last call (the readiness
    /// is cleared: the caller drains, arms and looks); `Pending` with the waker left with
    /// tokio otherwise.
    pub(crate) fn poll_news(&self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        match self.fd.poll_read_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(mut guard)) => {
                let hung_up = guard.ready().is_read_closed();
                guard.clear_ready();
                Poll::Ready(Ok(hung_up))
            }
        }
    }
}

impl SocketWatcher for TokioWatch {
    fn release(self: Box<Self>, _sock: BorrowedFd<'_>) {
        // Dropping the AsyncFd deregisters the duplicate from tokio's epoll and closes it,
        // before the port closes its socket (the peer's liveness check then sees every
        // descriptor of our end closed).
        drop(self);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The port's tokio watcher, made on first need, when the caller runs inside a tokio
/// runtime with I/O enabled and the port has not been waited on through shmport's reactor
/// already. `None`: use the reactor.
pub(crate) fn watch(port: &MessagePort) -> Option<io::Result<&TokioWatch>> {
    if let Some(w) = port.existing_watcher::<TokioWatch>() {
        return Some(Ok(w));
    }
    if port.has_watcher() || tokio::runtime::Handle::try_current().is_err() {
        return None;
    }
    match port.watcher(TokioWatch::new) {
        Ok(w) => Some(Ok(w)),
        // A runtime without I/O (`enable_io` not called): the reactor thread serves.
        Err(_) => None,
    }
}
