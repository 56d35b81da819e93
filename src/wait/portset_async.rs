//! Async waits on a `PortSet`, and its descriptor for event loops of the user's own: its
//! epoll instance, watched like a port's socket by the reactor thread or (feature `tokio`)
//! by tokio's reactor.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::{Error, RecvError};
use crate::port::MessageEvent;
use crate::wire::codec::Message;

use super::fd::FdWatch;
use super::portset::{PortKey, PortSet};

impl PortSet {
    /// Waits without blocking the thread until some member has a message (or its peer is
    /// gone) and returns its key: the async form of [`wait`](Self::wait), for any
    /// executor.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: waiting takes no message, so dropping the future loses nothing; a
    /// member that was ready is reported by the next wait.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), plus [`Error::Os`] if the kernel refuses what waiting
    /// without polling needs (the reactor thread, an epoll registration).
    ///
    /// ```
    /// use shmport::{MessageChannel, PortSet};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark {
    /// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
    /// #     }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    ///
    /// let mut set = PortSet::new()?;
    /// let ch = MessageChannel::new()?;
    /// let key = set.insert(ch.port2)?;
    /// let sender = std::thread::spawn(move || ch.port1.post_message(&9u8, []).map(|_| ch.port1));
    /// let (got, ev) = block_on(set.recv_async::<u8>())?;
    /// assert_eq!((got, ev?.data), (key, 9));
    /// # drop(sender.join().unwrap()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_async(&mut self) -> WaitFuture<'_> {
        WaitFuture { set: self }
    }

    /// Waits without blocking the thread for a message on any member and receives it:
    /// the async form of [`recv`](Self::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a message is taken only in the poll that returns it.
    ///
    /// # Errors
    ///
    /// As [`wait_async`](Self::wait_async); what the member's receive returned is the
    /// inner `Result`.
    #[allow(clippy::type_complexity)]
    pub async fn recv_async<T: Message>(
        &mut self,
    ) -> Result<(PortKey, Result<MessageEvent<T>, RecvError>), Error> {
        loop {
            let key = self.wait_async().await?;
            if let Some(got) = self.receive_from(key) {
                return Ok(got);
            }
        }
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<PortKey, Error>> {
        if self.busy_polls() {
            // A busy-polling set never arms its members: look, and ask to be polled again.
            return match self.try_wait() {
                Ok(Some(key)) => Poll::Ready(Ok(key)),
                Ok(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        let watch = match self.watch.take() {
            Some(w) => w,
            None => match FdWatch::new(self.as_fd()) {
                Ok(w) => w,
                Err(e) => return Poll::Ready(Err(Error::os("watching a PortSet", e))),
            },
        };
        let outcome = self.wait_with(&watch, cx);
        self.watch = std::cell::OnceCell::from(watch);
        outcome
    }

    /// Looks, then waits for the set's descriptor, a few times per poll at most.
    fn wait_with(&mut self, watch: &FdWatch, cx: &mut Context<'_>) -> Poll<Result<PortKey, Error>> {
        for _ in 0..4 {
            match self.try_wait() {
                Ok(Some(key)) => return Poll::Ready(Ok(key)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.has_queued() {
                // Doorbells left for the next look: yield, then look again.
                break;
            }
            match watch.poll_readable(self.as_fd(), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::os("epoll", e))),
                Poll::Ready(Ok(())) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The set's descriptor, for an event loop of your own (epoll, mio, calloop, tokio's
/// `AsyncFd`): it is readable when some member may have news.
///
/// Readable means "call [`try_wait`](PortSet::try_wait) (and receive from the ports it
/// names) until it returns `None`": a `try_wait` that finds nothing leaves every member
/// armed, so the descriptor becomes readable at the next post to any of them. That holds
/// for every wait strategy but [`WaitStrategy::BusyPoll`](crate::WaitStrategy::BusyPoll), which never arms. It is an
/// epoll instance: register it edge- or level-triggered.
///
/// ```
/// use std::os::fd::AsFd;
/// use rustix::event::{PollFd, PollFlags, poll};
/// use shmport::{MessageChannel, PortSet};
///
/// let mut set = PortSet::new()?;
/// let ch = MessageChannel::new()?;
/// let key = set.insert(ch.port2)?;
/// assert_eq!(set.try_wait()?, None); // nothing yet: every member armed
/// ch.port1.post_message(&1u8, [])?;
/// let mut fds = [PollFd::new(&set, PollFlags::IN)];
/// poll(&mut fds, None)?;
/// assert_eq!(set.try_wait()?, Some(key));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl AsFd for PortSet {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.epoll_fd()
    }
}

/// The future of [`PortSet::wait_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct WaitFuture<'a> {
    set: &'a mut PortSet,
}

impl Future for WaitFuture<'_> {
    type Output = Result<PortKey, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().set.poll_wait(cx)
    }
}

impl Drop for WaitFuture<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.set.watch.get() {
            w.forget_waker();
        }
    }
}
