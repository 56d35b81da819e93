//! Waiting in a future for a descriptor of shmport's own (a `PortSet`'s epoll instance, an
//! endpoint's listener, a connection) to become readable: through the reactor thread, or
//! with the `tokio` feature inside a tokio runtime through tokio's reactor.

use std::io;
use std::os::fd::BorrowedFd;
use std::task::{Context, Poll};

use crate::port::SocketWatcher;
use crate::sys;
use crate::wait::reactor::Registration;

/// A descriptor watched for a future. Released explicitly (the owner of the descriptor
/// calls [`release`](Self::release) before closing it).
#[derive(Debug)]
pub(crate) enum FdWatch {
    Reactor(Registration),
    #[cfg(feature = "tokio")]
    Tokio(super::tokio::TokioWatch),
}

impl FdWatch {
    /// Watches `fd`: in tokio's reactor when called inside a tokio runtime (feature
    /// `tokio`), else in shmport's reactor thread.
    pub(crate) fn new(fd: BorrowedFd<'_>) -> io::Result<FdWatch> {
        #[cfg(feature = "tokio")]
        if ::tokio::runtime::Handle::try_current().is_ok() {
            return super::tokio::TokioWatch::new(fd).map(FdWatch::Tokio);
        }
        Registration::new(fd).map(FdWatch::Reactor)
    }

    /// `Ready` when `fd` may be readable (the caller looks, and polls again if it was
    /// not); `Pending` with the task's waker left to be woken when it becomes readable.
    pub(crate) fn poll_readable(
        &self,
        fd: BorrowedFd<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match self {
            FdWatch::Reactor(reg) => {
                // Waker first, then the look: readiness after the look wakes the task.
                reg.set_waker(cx.waker());
                if sys::readable_now(fd) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }
            #[cfg(feature = "tokio")]
            FdWatch::Tokio(w) => w.poll_news(cx).map_ok(|_hung_up| ()),
        }
    }

    /// A future that was waiting was dropped: forget its waker.
    pub(crate) fn forget_waker(&self) {
        match self {
            FdWatch::Reactor(reg) => reg.clear_waker(),
            #[cfg(feature = "tokio")]
            FdWatch::Tokio(_) => {} // tokio forgets a stale waker by itself
        }
    }

    /// Stops watching `fd` (the descriptor given to [`new`](Self::new)).
    pub(crate) fn release(self, fd: BorrowedFd<'_>) {
        match self {
            FdWatch::Reactor(reg) => Box::new(reg).release(fd),
            #[cfg(feature = "tokio")]
            FdWatch::Tokio(w) => drop(w),
        }
    }
}

/// Why [`poll_until`] ended without a result: waiting failed, or the attempt did.
#[derive(Debug)]
pub(crate) enum Waited<E> {
    Io(io::Error),
    Attempt(E),
}

/// Looks with `attempt` until it settles, waiting for `fd` to be readable in between:
/// at most a few looks per poll, so a descriptor that stays readable while `attempt`
/// finds nothing yields to the executor instead of spinning in one poll.
pub(crate) fn poll_until<R, E>(
    watch: &FdWatch,
    fd: BorrowedFd<'_>,
    cx: &mut Context<'_>,
    mut attempt: impl FnMut() -> Result<Option<R>, E>,
) -> Poll<Result<R, Waited<E>>> {
    for _ in 0..4 {
        match attempt() {
            Ok(Some(r)) => return Poll::Ready(Ok(r)),
            Ok(None) => {}
            Err(e) => return Poll::Ready(Err(Waited::Attempt(e))),
        }
        match watch.poll_readable(fd, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Waited::Io(e))),
            Poll::Ready(Ok(())) => {}
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
