//! Async post as a `futures_sink::Sink`: a sink that owns its port and holds at most one
//! message (with its transfer list, for a [`TransferSink`]), posted by the same poll as
//! `post_message_async` (`poll_post`).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_sink::Sink;

use crate::port::{MessagePort, PostError, Transferable};
use crate::wire::codec::Message;

impl MessagePort {
    /// The port as a [`Sink`] of messages of type `T` (without transfer lists: see
    /// [`into_transfer_sink`](Self::into_transfer_sink) for those), owning the
    /// port: for `SinkExt::send`, `send_all`, `forward` from a stream, and the combinators
    /// that want a sink. Each message is posted as
    /// [`post_message_async`](Self::post_message_async) posts it, waiting for room in the
    /// peer's ring without blocking the thread. Take the port back with
    /// [`PostSink::into_inner`].
    ///
    /// The sink holds one message at most: `start_send` keeps it, `poll_flush` posts it,
    /// `poll_ready` posts a kept message first. `poll_close` only flushes: the port stays
    /// open (and the peer connected) until the sink is dropped, which drops and so closes
    /// the port, or until `into_inner` hands it back.
    ///
    /// # Cancel safety
    ///
    /// A message is posted whole or not at all. Dropping a `SinkExt::send` future after
    /// the sink took the message leaves it in the sink, posted by the next flush;
    /// dropping the sink (or calling `into_inner`) with a message in it does not post it.
    ///
    /// # Errors
    ///
    /// A flush fails as [`post_message_async`](Self::post_message_async) does, with a
    /// [`PostError`] whose transfer list is empty; the message it was posting is dropped,
    /// and the sink goes on with the next one (after `Disconnected`, every post fails so).
    ///
    /// ```
    /// use futures_util::{SinkExt, stream};
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
    /// let MessageChannel { port1, port2, .. } = MessageChannel::builder().capacity(4096).build()?;
    /// let reader = std::thread::spawn(move || port2.iter::<u32>().map(|r| r.unwrap().data).sum::<u32>());
    /// let mut sink = port1.into_sink::<u32>();
    /// // 1,000 messages through a 4 KiB ring: the sink waits for the reader when it is full.
    /// block_on(sink.send_all(&mut stream::iter((1..=1000).map(Ok))))?;
    /// let port1 = sink.into_inner();
    /// drop(port1); // ends the reader's iteration
    /// assert_eq!(reader.join().unwrap(), 500_500);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_sink<T: Message>(self) -> PostSink<T> {
        PostSink {
            port: Some(self),
            held: None,
        }
    }

    /// The port as a [`Sink`] of messages of type `T` with their transfer lists: items are
    /// `(message, transfer list)`, posted as
    /// [`post_message_async(&message, list)`](Self::post_message_async) posts them. For a
    /// pipeline that streams [`ArrayBuffer`](crate::ArrayBuffer)s or hands out ports.
    /// Otherwise as [`into_sink`](Self::into_sink), whose sink this is with a list beside
    /// the held message.
    ///
    /// # Cancel safety
    ///
    /// As [`into_sink`](Self::into_sink): a message and its list are posted whole or not
    /// at all. A message still held when the sink is dropped (or `into_inner` is called)
    /// is dropped with its list: its ports are closed and its buffers freed, as when any
    /// value holding them is dropped. Flush first to keep them.
    ///
    /// # Errors
    ///
    /// A flush that fails returns the [`PostError`] of
    /// [`post_message_async`](Self::post_message_async), which hands back the transfer
    /// list ([`PostError::into_inner`]): nothing in it is lost (unless the post found the
    /// channel's shared indices tampered with and poisoned it: see
    /// [`PostErrorKind::Disconnected`](crate::PostErrorKind::Disconnected)). The message is dropped and
    /// the sink goes on with the next one.
    ///
    /// ```
    /// use futures_util::{SinkExt, stream};
    /// use shmport::{ArrayBuffer, MessageChannel};
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
    /// let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    /// let mut sink = port1.into_transfer_sink::<u32>();
    /// // Ten frames, each a buffer moved (not copied) with its number.
    /// let mut frames = Vec::new();
    /// for i in 0..10u8 {
    ///     let mut frame = ArrayBuffer::new(4096)?;
    ///     frame.fill(i);
    ///     frames.push(Ok((u32::from(i), vec![frame.into()])));
    /// }
    /// block_on(sink.send_all(&mut stream::iter(frames)))?;
    /// for i in 0..10u8 {
    ///     let event = port2.recv::<u32>()?;
    ///     assert_eq!(event.data, u32::from(i));
    ///     assert!(event.buffers[0].iter().all(|&b| b == i));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_transfer_sink<T: Message>(self) -> TransferSink<T> {
        TransferSink(self.into_sink())
    }
}

/// The sink of [`MessagePort::into_sink`].
#[must_use = "sinks do nothing unless polled"]
#[derive(Debug)]
pub struct PostSink<T> {
    /// Always `Some` but in `into_inner`, which takes it.
    port: Option<MessagePort>,
    /// The message taken by `start_send` and not posted yet, with its transfer list
    /// (always empty but in a [`TransferSink`]).
    held: Option<(T, Vec<Transferable>)>,
}

/// The sink of [`MessagePort::into_transfer_sink`]: items are `(message, transfer list)`.
#[must_use = "sinks do nothing unless polled"]
#[derive(Debug)]
pub struct TransferSink<T>(PostSink<T>);

impl<T> TransferSink<T> {
    /// The port back, as [`PostSink::into_inner`] gives it. A message taken by
    /// `start_send` and not flushed yet is dropped with its transfer list.
    pub fn into_inner(self) -> MessagePort {
        self.0.into_inner()
    }
}

// Nothing of a `PostSink` is pinned: the message is only ever borrowed for one poll.
impl<T> Unpin for PostSink<T> {}

impl<T> PostSink<T> {
    /// The port back, for blocking posts, receives or another sink. A message taken by
    /// `start_send` and not flushed yet is dropped, not posted: flush first to keep it.
    pub fn into_inner(mut self) -> MessagePort {
        let port = self.port.take().expect("taken only here");
        forget_wait(&port);
        port
    }
}

/// A sink that was waiting for room is done with it: forget its waker and withdraw the
/// request for a doorbell, as a dropped `PostFuture` does.
fn forget_wait(port: &MessagePort) {
    port.forget_waker();
    port.disarm_room();
}

impl<T: Message> Sink<T> for PostSink<T> {
    type Error = PostError;

    /// Ready when the sink holds no message; otherwise posts the one it holds first.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        self.poll_flush(cx)
    }

    /// Takes `item`, to be posted by the next `poll_flush` (or `poll_ready`).
    ///
    /// # Panics
    ///
    /// If the sink still holds a message: `poll_ready` must have returned `Ready(Ok)`
    /// since the last `start_send`, as the `Sink` contract says.
    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), PostError> {
        self.get_mut().hold(item, Vec::new());
        Ok(())
    }

    /// Posts the message the sink holds, if any: at once when the peer's ring has room,
    /// otherwise once the reader frees room (the task is woken then).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        self.get_mut().flush(cx)
    }

    /// Flushes; the port stays open (see [`MessagePort::into_sink`]).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        self.poll_flush(cx)
    }
}

impl<T: Message> PostSink<T> {
    fn hold(&mut self, item: T, list: Vec<Transferable>) {
        assert!(
            self.held.is_none(),
            "start_send on a shmport sink without a ready poll_ready"
        );
        self.held = Some((item, list));
    }

    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        let Some((item, list)) = &mut self.held else {
            return Poll::Ready(Ok(()));
        };
        let port = self.port.as_ref().expect("taken only by into_inner");
        // `poll_post` takes the list when it posts or fails, and leaves it while it waits.
        let got = port.poll_post(cx, item, list);
        if got.is_ready() {
            self.held = None;
        }
        got
    }
}

impl<T: Message> Sink<(T, Vec<Transferable>)> for TransferSink<T> {
    type Error = PostError;

    /// Ready when the sink holds no message; otherwise posts the one it holds first.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        self.get_mut().0.flush(cx)
    }

    /// Takes a message and its transfer list, to be posted by the next `poll_flush` (or
    /// `poll_ready`).
    ///
    /// # Panics
    ///
    /// If the sink still holds a message, as [`PostSink`]'s `start_send`.
    fn start_send(
        self: Pin<&mut Self>,
        (item, list): (T, Vec<Transferable>),
    ) -> Result<(), PostError> {
        self.get_mut().0.hold(item, list);
        Ok(())
    }

    /// Posts the message the sink holds, with its list, as [`PostSink`]'s `poll_flush`.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        self.get_mut().0.flush(cx)
    }

    /// Flushes; the port stays open (see [`MessagePort::into_sink`]).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        self.get_mut().0.flush(cx)
    }
}

impl<T> Drop for PostSink<T> {
    fn drop(&mut self) {
        if let Some(port) = &self.port {
            forget_wait(port);
        }
    }
}
