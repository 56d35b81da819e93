//! Async receive on a `BroadcastChannel`: `recv_async().await` and a `Stream` of messages,
//! for any runtime.
//!
//! A receive that finds nothing announces a sleeper on the name's bell, looks once more,
//! and leaves its waker with the channel's bell waiter thread (`wait/bell_waiter.rs`),
//! which sleeps on the bell for it. A post to a name with a sleeper rings the bell (one
//! system call per burst, as for blocking receivers); with nobody asleep a post makes no
//! system call. See `docs/design.md`, "Async receive on a `BroadcastChannel`".

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::BroadcastChannel;
use crate::error::RecvError;
use crate::port::MessageEvent;
use crate::wait::bell_waiter::BellWaiter;
use crate::wait::future::stream_item;
use crate::wire::codec::Message;

impl BroadcastChannel {
    /// One poll of an async receive: a queued message is returned at once; otherwise the
    /// task's waker is left with the bell waiter. Only a `Ready` result takes anything from
    /// a ring, so dropping the future between polls loses nothing.
    fn poll_recv<T: Message>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<MessageEvent<T>, RecvError>> {
        let Some(open) = &mut self.open else {
            return Poll::Ready(Err(RecvError::Disconnected));
        };
        if open.waiter.as_ref().is_some_and(BellWaiter::take_napped) {
            // A nap ended with no ring: as a blocking receive does after each nap, find
            // out whether one of the others died (it may have died before ringing).
            open.member.probe_one();
        }
        let found = match open.member.next_or_announce() {
            Ok(found) => found,
            Err(seen) => {
                let waiter = match &mut open.waiter {
                    Some(w) => w,
                    None => match BellWaiter::start(open.member.registry()) {
                        Ok(w) => open.waiter.insert(w),
                        Err(e) => return Poll::Ready(Err(RecvError::Os(e))),
                    },
                };
                waiter.wake_after(seen, cx.waker());
                return Poll::Pending;
            }
        };
        if let Some(w) = &mut open.waiter {
            w.forget();
        }
        Poll::Ready(open.decode(found).map_err(RecvError::MessageError))
    }

    /// A receive future or stream was dropped: the bell waiter forgets its task's waker.
    fn forget_waker(&mut self) {
        if let Some(w) = self.open.as_mut().and_then(|o| o.waiter.as_mut()) {
            w.forget();
        }
    }

    /// Receives the next message from any other channel of the name without blocking the
    /// thread: the async form of [`recv`](Self::recv), for any executor (tokio, async-std,
    /// smol, a hand-written `block_on`).
    ///
    /// It borrows the channel mutably, so the future is `Send` and no other receive (or
    /// post) runs on the channel meanwhile. The first receive that has to wait starts a
    /// thread, `shmport-bell`, that sleeps on the name's futex for this channel's receives
    /// and wakes the task when a post rings it; the thread sleeps while no receive waits
    /// and ends when the channel closes. A waiting receive is woken at least every 50 ms
    /// to look again (a member that died between posting and ringing rings nobody), as a
    /// blocking one is.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a message is taken from a ring only in the poll that returns it, so
    /// dropping the future (a losing `select!` branch, a timeout) loses no message and
    /// changes no order; the next receive gets it. Dropping it leaves nothing behind but the
    /// thread, asleep.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`RecvError::Os`] if the kernel refuses the thread.
    ///
    /// ```
    /// use shmport::BroadcastChannel;
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
    /// let mut news = BroadcastChannel::new("doc-example-async-news")?;
    /// let mut other = BroadcastChannel::new("doc-example-async-news")?;
    /// let poster = std::thread::spawn(move || other.post_message(&41u32));
    /// let got = block_on(async { news.recv_async::<u32>().await })?;
    /// assert_eq!(got.data + 1, 42);
    /// # poster.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_async<T: Message>(&mut self) -> BroadcastRecvFuture<'_, T> {
        BroadcastRecvFuture {
            channel: self,
            _message: PhantomData,
        }
    }

    /// The channel's messages as a [`Stream`]: each item is a message, or an error that
    /// leaves the channel working ([`RecvError::MessageError`], the web's `messageerror`).
    /// The others may come and go, so the stream ends only when this channel is closed
    /// (at once if it already was); after [`RecvError::Os`], if the kernel refuses to let
    /// it wait, it ends too.
    ///
    /// # Cancel safety
    ///
    /// As [`recv_async`](Self::recv_async): dropping the stream, or a `next()` future of
    /// it, loses no message.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// use shmport::BroadcastChannel;
    ///
    /// // Another process posts to "prices"; this one prints what it hears.
    /// let mut prices = BroadcastChannel::new("prices")?;
    /// let mut heard = prices.messages::<(u32, f64)>();
    /// while let Some(ev) = heard.next().await {
    ///     let (item, price) = ev?.data;
    ///     println!("{item}: {price}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn messages<T: Message>(&mut self) -> BroadcastMessages<'_, T> {
        BroadcastMessages {
            channel: self,
            done: false,
            _message: PhantomData,
        }
    }

    /// The channel's messages as a [`Stream`] that owns the channel: as
    /// [`messages`](Self::messages), for where a borrow gets in the way (a spawned task, a
    /// struct field, a stream combinator that must be `'static`). Post or close through
    /// [`IntoBroadcastMessages::get_mut`]; take the channel back with
    /// [`IntoBroadcastMessages::into_inner`].
    ///
    /// # Cancel safety
    ///
    /// As [`messages`](Self::messages).
    pub fn into_messages<T: Message>(self) -> IntoBroadcastMessages<T> {
        IntoBroadcastMessages {
            channel: self,
            done: false,
            _message: PhantomData,
        }
    }
}

/// The future of [`BroadcastChannel::recv_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct BroadcastRecvFuture<'a, T> {
    channel: &'a mut BroadcastChannel,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Future for BroadcastRecvFuture<'_, T> {
    type Output = Result<MessageEvent<T>, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().channel.poll_recv::<T>(cx)
    }
}

impl<T> Drop for BroadcastRecvFuture<'_, T> {
    fn drop(&mut self) {
        self.channel.forget_waker();
    }
}

/// The stream of [`BroadcastChannel::messages`].
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct BroadcastMessages<'a, T> {
    channel: &'a mut BroadcastChannel,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Stream for BroadcastMessages<'_, T> {
    type Item = Result<MessageEvent<T>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        stream_step(this.channel, &mut this.done, cx)
    }
}

impl<T> Drop for BroadcastMessages<'_, T> {
    fn drop(&mut self) {
        self.channel.forget_waker();
    }
}

/// One step of a broadcast stream: an item, or the end once the channel is closed (or the
/// kernel refused to let us wait, said once).
fn stream_step<T: Message>(
    channel: &mut BroadcastChannel,
    done: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<MessageEvent<T>, RecvError>>> {
    if *done {
        return Poll::Ready(None);
    }
    stream_item(done, channel.poll_recv::<T>(cx))
}

/// The owned stream of [`BroadcastChannel::into_messages`].
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct IntoBroadcastMessages<T> {
    channel: BroadcastChannel,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

// The stream never pins its channel (nothing points into it), so it may move while
// polled whatever the channel's fields are.
impl<T> Unpin for IntoBroadcastMessages<T> {}

impl<T> IntoBroadcastMessages<T> {
    /// The channel, to post through it or close it between items (after
    /// [`close`](BroadcastChannel::close), the stream ends).
    pub fn get_mut(&mut self) -> &mut BroadcastChannel {
        &mut self.channel
    }

    /// The channel back, with whatever is still queued for it.
    pub fn into_inner(mut self) -> BroadcastChannel {
        self.channel.forget_waker();
        let closed = BroadcastChannel {
            name: String::new(),
            open: None,
        };
        std::mem::replace(&mut self.channel, closed)
    }
}

impl<T: Message> Stream for IntoBroadcastMessages<T> {
    type Item = Result<MessageEvent<T>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        stream_step(&mut this.channel, &mut this.done, cx)
    }
}

impl<T> Drop for IntoBroadcastMessages<T> {
    fn drop(&mut self) {
        self.channel.forget_waker();
    }
}
