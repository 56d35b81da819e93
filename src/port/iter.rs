//! Blocking conveniences as std's and crossbeam's receivers have them: iterators over the
//! incoming messages, non-consuming looks at the queue (`is_empty`, `len`), and a
//! non-consuming "is the peer gone?".

use std::marker::PhantomData;

use crate::error::{MessageError, RecvError, TryRecvError};
use crate::shm::ring::{Corrupt, Record};
use crate::wire::codec::{KIND_MESSAGE, Message};

use super::*;

impl MessagePort {
    /// A blocking iterator over the incoming messages, as [`recv`](Self::recv) receives
    /// them. It ends when the peer is gone and everything it posted has been received; a
    /// message that cannot be decoded as `T` is an `Err` item and the iteration goes on
    /// (the web's `messageerror`).
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    /// for i in 0..3u32 {
    ///     port1.post_message(&i, [])?;
    /// }
    /// drop(port1);
    /// let got: Vec<u32> = port2.iter::<u32>().map(|r| r.map(|ev| ev.data)).collect::<Result<_, _>>()?;
    /// assert_eq!(got, [0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter<T: Message>(&self) -> Iter<'_, T> {
        Iter {
            port: self,
            done: false,
            _message: PhantomData,
        }
    }

    /// An iterator over the messages queued now, as [`try_recv`](Self::try_recv) receives
    /// them. It ends when the queue is empty or the peer gone, and never waits; a message
    /// that cannot be decoded as `T` is an `Err` item.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let ch = MessageChannel::new()?;
    /// ch.port1.post_message(&1u8, [])?;
    /// ch.port1.post_message(&2u8, [])?;
    /// assert_eq!(ch.port2.try_iter::<u8>().count(), 2);
    /// assert_eq!(ch.port2.try_iter::<u8>().count(), 0); // nothing left, the peer is alive
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_iter<T: Message>(&self) -> TryIter<'_, T> {
        TryIter {
            port: self,
            _message: PhantomData,
        }
    }

    /// True when no message is queued for this port now. Takes nothing; one look at the
    /// ring (no system call).
    ///
    /// ```
    /// let ch = shmport::MessageChannel::new()?;
    /// assert!(ch.port2.is_empty());
    /// ch.port1.post_message(&1u8, [])?;
    /// assert!(!ch.port2.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        !matches!(self.peek_next(), Some(Ok(Some(_)) | Err(_)))
    }

    /// The ring's next record, peeked (its header copied out and checked, nothing taken);
    /// `None` when there is no ring to look at: a poisoned channel, a copy of the port in
    /// a process made by `fork`, or a receive under way on this thread.
    fn peek_next(&self) -> Option<Result<Option<Record>, Corrupt>> {
        if self.peer.get() == PeerState::Poisoned || !self.in_owner_process() {
            return None;
        }
        let mut rx = self.rx.try_borrow_mut().ok()?;
        Some(rx.peek())
    }

    /// The archive length of the next queued message when it sits whole in the ring and
    /// transfers nothing (what [`try_recv_raw_with`](Self::try_recv_raw_with) would lend
    /// from a copy of the record), else `None`: nothing queued, or a message with a transfer
    /// list or a body outside the ring. Takes nothing; one look at the ring (no system
    /// call). A forwarder uses it to take on the spot only what it can send at once, and
    /// leave the rest to a thread that may wait. The peer may rewrite a record it
    /// published: the receive that follows reads the record again and checks it as
    /// always, so a length seen here is a hint, never something to rely on for safety.
    ///
    /// ```
    /// let ch = shmport::MessageChannel::new()?;
    /// assert_eq!(ch.port2.peek_inline_len(), None);
    /// ch.port1.post_message(&7u64, [])?;
    /// assert_eq!(ch.port2.peek_inline_len(), Some(8));
    /// let buffer = shmport::ArrayBuffer::from_slice(b"moved")?;
    /// ch.port2.recv::<u64>()?;
    /// ch.port1.post_message(&(), [buffer.into()])?;
    /// assert_eq!(ch.port2.peek_inline_len(), None); // it transfers a buffer
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peek_inline_len(&self) -> Option<usize> {
        match self.peek_next()? {
            Ok(Some(record)) if record.header.kind == KIND_MESSAGE => Some(record.len()),
            _ => None,
        }
    }

    /// The number of messages queued for this port now, as crossbeam's `Receiver::len`
    /// counts them: each is what one receive would return (a message, or a
    /// `messageerror`). Takes nothing and makes no system call; it walks the queued
    /// records' headers in shared memory, so it costs time in proportion to their number
    /// (and nothing on the post or receive path).
    ///
    /// A snapshot: the writer may post more at any moment. Headers the writer could not
    /// have written honestly end the count with what was counted before them (the next
    /// receive poisons the channel); a poisoned channel, or a copy of the port in a process
    /// made by `fork`, counts 0.
    ///
    /// ```
    /// let ch = shmport::MessageChannel::new()?;
    /// assert_eq!(ch.port2.len(), 0);
    /// for i in 0..3u8 {
    ///     ch.port1.post_message(&i, [])?;
    /// }
    /// assert_eq!(ch.port2.len(), 3);
    /// assert_eq!(ch.port2.recv::<u8>()?.data, 0);
    /// assert_eq!(ch.port2.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        if self.peer.get() == PeerState::Poisoned || !self.in_owner_process() {
            return 0;
        }
        self.rx.try_borrow().map_or(0, |rx| rx.queued())
    }

    /// True when the peer port is gone for good: closed, dropped, or its process exited or
    /// was killed (one `poll` system call when the peer is in another process). Messages it
    /// posted before may still be queued: receive them first, a receive says
    /// `Disconnected` after the last. Takes nothing.
    ///
    /// ```
    /// let ch = shmport::MessageChannel::new()?;
    /// assert!(!ch.port2.is_peer_gone());
    /// ch.port1.post_message(&1u8, [])?;
    /// drop(ch.port1);
    /// assert!(ch.port2.is_peer_gone());
    /// assert_eq!(ch.port2.recv::<u8>()?.data, 1); // still delivered (S15)
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_peer_gone(&self) -> bool {
        self.peer.get() != PeerState::Alive || !self.in_owner_process() || self.check_liveness_now()
    }
}

/// The iterator of [`MessagePort::iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct Iter<'a, T> {
    port: &'a MessagePort,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Iterator for Iter<'_, T> {
    type Item = Result<MessageEvent<T>, MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.port.recv::<T>() {
            Ok(ev) => Some(Ok(ev)),
            Err(RecvError::MessageError(e)) => Some(Err(e)),
            // `Disconnected` (a blocking receive reports nothing else).
            Err(_) => {
                self.done = true;
                None
            }
        }
    }
}

impl<T: Message> std::iter::FusedIterator for Iter<'_, T> {}

/// The iterator of [`MessagePort::try_iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct TryIter<'a, T> {
    port: &'a MessagePort,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Iterator for TryIter<'_, T> {
    type Item = Result<MessageEvent<T>, MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.port.try_recv::<T>() {
            Ok(ev) => Some(Ok(ev)),
            Err(TryRecvError::MessageError(e)) => Some(Err(e)),
            Err(_) => None,
        }
    }
}
