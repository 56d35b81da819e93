//! Async receive: `recv_async().await` and a `Stream` of messages, for any runtime.
//!
//! A pending receive leaves its waker with the process's reactor thread and arms its port's
//! doorbell; the writer's next post (or close, or death) makes the port's socket readable
//! and the reactor wakes the task. No thread polls while nothing arrives. See
//! `docs/design.md`, "Async receive".

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::error::RecvError;
use crate::port::{Decoder, MessageEvent, MessagePort, PostError, PostErrorKind, Transferable};
use crate::wait::reactor::Registration;
use crate::wait::watch::Wait;
use crate::wire::codec::{self, Message};

impl MessagePort {
    /// One poll of a receive of a `T`, for the future and the stream.
    fn poll_recv<T: Message>(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<MessageEvent<T>, RecvError>> {
        let depth = self.max_depth();
        let mut decode = |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, self.recv_fp(), depth);
        self.poll_recv_with(cx, &mut decode)
    }

    /// One poll of an async receive: a queued message is returned at once; otherwise the
    /// task's waker is left where the port's next news wakes it and the doorbell armed.
    /// Only a `Ready` result takes anything from the ring, so dropping the future between
    /// polls loses nothing.
    fn poll_recv_with<R>(
        &self,
        cx: &mut Context<'_>,
        decode: &mut Decoder<'_, R>,
    ) -> Poll<Result<MessageEvent<R>, RecvError>> {
        let wait = Wait {
            port: self,
            attempt: |hung_up: bool| {
                if hung_up {
                    self.note_hang_up();
                }
                match self.try_recv_with(!hung_up, decode) {
                    Ok(ev) => Some(Ok(ev)),
                    Err(e) => e.settled().map(Err),
                }
            },
            arm: || self.arm_for_data(),
            disarm: || self.disarm(),
        };
        match wait.poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(e)) => Poll::Ready(Err(RecvError::Os(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// One poll of an async post: posts if the peer's ring has room, else leaves the
    /// task's waker to be woken when the reader frees room. `list` is taken for each try
    /// and put back when the ring is full.
    pub(super) fn poll_post<T: Message>(
        &self,
        cx: &mut Context<'_>,
        msg: &T,
        list: &mut Vec<Transferable>,
    ) -> Poll<Result<(), PostError>> {
        let wait = Wait {
            port: self,
            attempt: |hung_up: bool| {
                if hung_up {
                    self.note_hang_up();
                }
                match self.try_post_message(msg, std::mem::take(list)) {
                    Ok(()) => Some(Ok(())),
                    Err(e) if matches!(e.kind(), PostErrorKind::Full) => {
                        *list = e.into_inner();
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            },
            arm: || self.arm_for_room(),
            disarm: || self.disarm_room(),
        };
        match wait.poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(e)) => {
                let list = std::mem::take(list);
                Poll::Ready(Err(PostError::new(PostErrorKind::Os(e), list)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// A future, stream or sink was dropped: the reactor forgets its task's waker.
    pub(super) fn forget_waker(&self) {
        if let Some(reg) = self.existing_watcher::<Registration>() {
            reg.clear_waker();
        }
    }

    /// Receives the next message without blocking the thread: the async form of
    /// [`recv`](Self::recv), for any executor (tokio, async-std, smol, a hand-written
    /// `block_on`).
    ///
    /// It borrows the port mutably, so the future is `Send` and no other receive can run
    /// on the port meanwhile.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a message is taken from the ring only in the poll that returns it, so
    /// dropping the future (a losing `select!` branch, a timeout) loses no message; the
    /// next receive gets it. Dropping it also leaves nothing to clean up: the port's
    /// registration with the reactor stays for the next receive and ends with the port.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`RecvError::Os`] if the kernel refuses what waiting
    /// without polling needs (the reactor thread, an epoll registration, the channel's
    /// socket).
    ///
    /// ```
    /// use shmport::MessageChannel;
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
    /// let MessageChannel { port1, mut port2, .. } = MessageChannel::new()?;
    /// let sender = std::thread::spawn(move || port1.post_message(&41u32, []));
    /// let got = block_on(async { port2.recv_async::<u32>().await })?;
    /// assert_eq!(got.data + 1, 42);
    /// # sender.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_async<T: Message>(&mut self) -> RecvFuture<'_, T> {
        RecvFuture {
            port: self,
            _message: PhantomData,
        }
    }

    /// The port's messages as a [`Stream`]: each item is a message, or an error that
    /// leaves the port working ([`RecvError::MessageError`], the web's `messageerror`);
    /// the stream ends when the peer is gone and every message it posted was received
    /// (after [`RecvError::Os`], if the kernel refuses to let it wait, it ends too).
    ///
    /// # Cancel safety
    ///
    /// As [`recv_async`](Self::recv_async): dropping the stream, or a `next()` future of
    /// it, loses no message.
    pub fn messages<T: Message>(&mut self) -> Messages<'_, T> {
        Messages {
            port: self,
            done: false,
            _message: PhantomData,
        }
    }

    /// Posts a message, waiting for room in the peer's ring without blocking the thread:
    /// the async form of [`post_message`](Self::post_message), for any executor.
    ///
    /// While the ring has room it costs what `try_post_message` costs; when it is full the
    /// task sleeps until the reader frees room (the reader rings the channel's socket,
    /// which the reactor watches) or goes away.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes posts nothing, but drops the ports and
    /// buffers of its transfer list with it. To keep them, take them back with
    /// [`PostFuture::cancel`] (for example in a `select!` over `&mut fut`). With an
    /// empty transfer list it is cancel-safe: the message is posted whole or not at all.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), plus [`PostErrorKind::Os`] if the kernel
    /// refuses what waiting without blocking needs; the transfer list is handed back.
    ///
    /// ```
    /// use shmport::MessageChannel;
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
    /// let MessageChannel { mut port1, port2, .. } = MessageChannel::builder().capacity(4096).build()?;
    /// let reader = std::thread::spawn(move || port2.iter::<Vec<u8>>().count());
    /// block_on(async {
    ///     for _ in 0..100 {
    ///         // 100 KiB through a 4 KiB ring: most posts wait for the reader.
    ///         port1.post_message_async(&vec![0u8; 1024], []).await?;
    ///     }
    ///     Ok::<(), shmport::PostError>(())
    /// })?;
    /// drop(port1);
    /// assert_eq!(reader.join().unwrap(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn post_message_async<'a, T: Message>(
        &'a mut self,
        msg: &'a T,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> PostFuture<'a, T> {
        PostFuture {
            port: self,
            msg,
            list: transfer.into_iter().collect(),
        }
    }

    /// The port's messages as a [`Stream`] that owns the port: as
    /// [`messages`](Self::messages), for where a borrow gets in the way (a spawned task, a
    /// struct field, a stream combinator that must be `'static`). Take the port back with
    /// [`IntoMessages::into_inner`].
    ///
    /// # Cancel safety
    ///
    /// As [`messages`](Self::messages).
    pub fn into_messages<T: Message>(self) -> IntoMessages<T> {
        IntoMessages {
            port: Some(self),
            done: false,
            _message: PhantomData,
        }
    }
}

/// The future of [`MessagePort::recv_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct RecvFuture<'a, T> {
    port: &'a mut MessagePort,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Future for RecvFuture<'_, T> {
    type Output = Result<MessageEvent<T>, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().port.poll_recv::<T>(cx)
    }
}

impl<T> Drop for RecvFuture<'_, T> {
    fn drop(&mut self) {
        self.port.forget_waker();
    }
}

/// The stream of [`MessagePort::messages`].
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct Messages<'a, T> {
    port: &'a mut MessagePort,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Stream for Messages<'_, T> {
    type Item = Result<MessageEvent<T>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        stream_step(this.port, &mut this.done, cx)
    }
}

/// One step of a message stream: an item, or the end once the peer is gone (or the kernel
/// refused to let us wait, said once).
fn stream_step<T: Message>(
    port: &MessagePort,
    done: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<MessageEvent<T>, RecvError>>> {
    if *done {
        return Poll::Ready(None);
    }
    stream_item(done, port.poll_recv::<T>(cx))
}

/// What a message stream yields for one poll of a receive: the message, a `messageerror`
/// (the stream goes on), the end at `Disconnected`, or an error after which it ends (said
/// once). `done` is the stream's flag; shared by ports' and broadcast channels' streams.
pub(crate) fn stream_item<T>(
    done: &mut bool,
    got: Poll<Result<T, RecvError>>,
) -> Poll<Option<Result<T, RecvError>>> {
    match got {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(ev)) => Poll::Ready(Some(Ok(ev))),
        Poll::Ready(Err(RecvError::Disconnected)) => {
            *done = true;
            Poll::Ready(None)
        }
        Poll::Ready(Err(e @ RecvError::MessageError(_))) => Poll::Ready(Some(Err(e))),
        Poll::Ready(Err(e)) => {
            *done = true;
            Poll::Ready(Some(Err(e)))
        }
    }
}

impl<T> Drop for Messages<'_, T> {
    fn drop(&mut self) {
        self.port.forget_waker();
    }
}

/// The future of [`MessagePort::post_message_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct PostFuture<'a, T> {
    port: &'a mut MessagePort,
    msg: &'a T,
    list: Vec<Transferable>,
}

impl<T> PostFuture<'_, T> {
    /// Gives up on the post and hands back its transfer list: nothing was posted if the
    /// future had not completed.
    pub fn cancel(mut self) -> Vec<Transferable> {
        std::mem::take(&mut self.list)
    }
}

impl<T: Message> Future for PostFuture<'_, T> {
    type Output = Result<(), PostError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.port.poll_post(cx, this.msg, &mut this.list)
    }
}

impl<T> Drop for PostFuture<'_, T> {
    fn drop(&mut self) {
        self.port.forget_waker();
        self.port.disarm_room();
    }
}

/// The owned stream of [`MessagePort::into_messages`].
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct IntoMessages<T> {
    /// Always `Some` but in `into_inner`, which takes it.
    port: Option<MessagePort>,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T> IntoMessages<T> {
    /// The port back, with whatever is still queued on it.
    pub fn into_inner(mut self) -> MessagePort {
        let port = self.port.take().expect("taken only here");
        port.forget_waker();
        port
    }
}

impl<T: Message> Stream for IntoMessages<T> {
    type Item = Result<MessageEvent<T>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let port = this.port.as_ref().expect("taken only by into_inner");
        stream_step(port, &mut this.done, cx)
    }
}

impl<T> Drop for IntoMessages<T> {
    fn drop(&mut self) {
        if let Some(port) = &self.port {
            port.forget_waker();
        }
    }
}
