//! `onmessage`: a handler that receives a port's messages on a thread of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, MessageError, RecvTimeoutError};
use crate::port::{MessageEvent, MessagePort};
use crate::wire::codec::Message;

/// How often a dispatch thread waiting for a message looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// The dispatch thread's stack: a main thread's 8 MiB for the handler, plus room for
/// validating and deserializing a message as deep as the port accepts (measured at up to
/// 1.3 KiB per level in debug builds and 112 bytes in release, docs/design.md), at most
/// 1 GiB.
fn dispatch_stack(max_depth: usize) -> usize {
    const BASE: usize = 8 << 20;
    const PER_LEVEL: usize = 2 << 10;
    BASE.saturating_add(max_depth.saturating_mul(PER_LEVEL))
        .min(1 << 30)
}

/// A running `onmessage` dispatch; from [`MessagePort::on_message`].
///
/// Dropping it stops the dispatch and closes the port; [`stop`](Self::stop) stops it and
/// hands the port back, with every message not yet dispatched still queued.
#[derive(Debug)]
pub struct MessageHandler {
    stop: Arc<AtomicBool>,
    /// Set by the dispatch thread when it ends, before it closes the port.
    finished: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<MessagePort, HandlerPanicked>>>,
}

/// A handler panicked: dispatch stopped at that message (which was consumed); the port
/// was closed.
#[derive(Debug)]
pub struct HandlerPanicked;

impl std::fmt::Display for HandlerPanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an onmessage handler panicked; dispatch stopped and the port was closed")
    }
}

impl std::error::Error for HandlerPanicked {}

impl MessagePort {
    /// Starts dispatching this port's messages to `on_message` (and undecodable ones to
    /// `on_error`, the web's `messageerror`) on a thread of its own, named
    /// `shmport-onmessage`, in order. Messages queued before the call are dispatched first
    /// (S3: setting the handler is the web's implicit `start()`); dispatch ends when the
    /// peer is gone and the queue drained, or at [`MessageHandler::stop`].
    ///
    /// The port moves into the dispatch, so a second handler cannot be set on it: stop the
    /// first to get the port back.
    ///
    /// The thread's stack is 8 MiB (a main thread's) plus 2 KiB per level of the port's
    /// [`max_depth`](Self::max_depth), at most 1 GiB, so a message as deep as the port
    /// accepts cannot overflow it.
    ///
    /// ```
    /// use shmport::MessageChannel;
    /// use std::sync::mpsc;
    ///
    /// let ch = MessageChannel::new()?;
    /// ch.port1.post_message(&1u32, [])?; // queued before the handler exists
    /// let (tx, rx) = mpsc::channel();
    /// let handler = ch.port2.on_message(move |ev: shmport::MessageEvent<u32>| tx.send(ev.data).unwrap(), |_| {})?;
    /// ch.port1.post_message(&2u32, [])?;
    /// assert_eq!((rx.recv()?, rx.recv()?), (1, 2));
    /// let port2 = handler.stop()?; // the port comes back
    /// # drop(port2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the thread cannot be started (the port is then closed).
    pub fn on_message<T, F, E>(
        self,
        mut on_message: F,
        mut on_error: E,
    ) -> Result<MessageHandler, Error>
    where
        T: Message,
        F: FnMut(MessageEvent<T>) + Send + 'static,
        E: FnMut(MessageError) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let finished = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&finished);
        let thread = std::thread::Builder::new()
            .name("shmport-onmessage".into())
            .stack_size(dispatch_stack(self.max_depth()))
            .spawn(move || {
                let port = self;
                let run = std::panic::AssertUnwindSafe(|| {
                    while !flag.load(Ordering::Acquire) {
                        match port.recv_timeout::<T>(STOP_CHECK) {
                            Ok(ev) => on_message(ev),
                            Err(RecvTimeoutError::MessageError(e)) => on_error(e),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(_) => break,
                        }
                    }
                });
                let outcome = std::panic::catch_unwind(run);
                // Release, before the port closes: pairs with the Acquire in `is_finished`,
                // so a peer that saw the close also sees the dispatch finished.
                done.store(true, Ordering::Release);
                match outcome {
                    Ok(()) => Ok(port),
                    Err(_) => {
                        drop(port);
                        Err(HandlerPanicked)
                    }
                }
            })
            .map_err(|e| Error::os("spawning the onmessage thread", e))?;
        Ok(MessageHandler {
            stop,
            finished,
            thread: Some(thread),
        })
    }
}

impl MessageHandler {
    /// Stops dispatching (after the handler call in progress, if any) and returns the
    /// port. Messages not yet dispatched stay queued on it.
    ///
    /// # Errors
    ///
    /// [`HandlerPanicked`] when a handler panicked; the port is then closed.
    pub fn stop(mut self) -> Result<MessagePort, HandlerPanicked> {
        self.request_stop();
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(HandlerPanicked)),
            None => Err(HandlerPanicked),
        }
    }

    /// Asks the dispatch to stop before its next message, without waiting for it; then
    /// [`stop`](Self::stop) collects the port.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// True once dispatch has ended on its own (the peer is gone, or a handler panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.is_none() || self.finished.load(Ordering::Acquire)
    }
}

impl Drop for MessageHandler {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            let _ = thread.join();
        }
    }
}
