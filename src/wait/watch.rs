//! How a future waits for news on its port's socket: through the process's reactor
//! thread, or (with the `tokio` feature, inside a tokio runtime) through tokio's own
//! reactor. Both follow one protocol: consume the doorbells, arm, look once more, and only
//! then sleep; so a doorbell rung after the arm is never missed.

use std::io;
use std::task::{Context, Poll};

use crate::port::MessagePort;
use crate::wait::reactor::Registration;

/// What a future does around the wait: `attempt(hung_up)` is a fresh look (a receive, a
/// post), `Some` when it settled; `arm` asks the peer for a doorbell; `disarm` withdraws
/// the request when the look after arming settled after all.
pub(crate) struct Wait<'a, A, M, D> {
    pub(crate) port: &'a MessagePort,
    pub(crate) attempt: A,
    pub(crate) arm: M,
    pub(crate) disarm: D,
}

impl<R, A, M, D> Wait<'_, A, M, D>
where
    A: FnMut(bool) -> Option<R>,
    M: FnMut(),
    D: FnMut(),
{
    /// One poll: `Ready` with the attempt's result, or `Pending` with the task's waker
    /// left where the port's next news wakes it.
    pub(crate) fn poll(mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if let Some(r) = (self.attempt)(false) {
            return Poll::Ready(Ok(r));
        }
        #[cfg(feature = "tokio")]
        if let Some(watch) = super::tokio::watch(self.port) {
            return match watch {
                Ok(w) => self.poll_tokio(w, cx),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        let reg = self.port.watcher(Registration::new)?;
        let hung_up = reg.set_waker(cx.waker());
        self.arm_and_look(hung_up, true, cx)
            .unwrap_or(Poll::Pending)
    }

    /// Consumes the doorbells (when `drain`), arms, looks once more. `None` when armed and
    /// nothing settled; `Some(Pending)` when more doorbells wait (the task is woken again
    /// at once, so a flood is drained in bounded steps, yielding in between).
    fn arm_and_look(
        &mut self,
        hung_up: bool,
        drain: bool,
        cx: &mut Context<'_>,
    ) -> Option<Poll<io::Result<R>>> {
        let more_doorbells = drain && self.port.drain_doorbells();
        (self.arm)();
        if let Some(r) = (self.attempt)(hung_up) {
            (self.disarm)();
            return Some(Poll::Ready(Ok(r)));
        }
        if more_doorbells {
            cx.waker().wake_by_ref();
            return Some(Poll::Pending);
        }
        None
    }

    #[cfg(feature = "tokio")]
    fn poll_tokio(
        mut self,
        watch: &super::tokio::TokioWatch,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        let mut hung_up = false;
        loop {
            // Tokio's readiness is edge-triggered: each doorbell that arrives is news even
            // while older ones sit unread, so they are drained only every few arms (a
            // system call saved per wait), before enough pile up to fill the socket.
            if let Some(settled) = self.arm_and_look(hung_up, watch.due_for_drain(), cx) {
                return settled;
            }
            // Armed and still nothing: leave the waker with tokio. A doorbell rung since
            // the arm makes the socket readable, and this returns `Ready` at once.
            match watch.poll_news(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(hup)) => hung_up = hup,
            }
        }
    }
}
