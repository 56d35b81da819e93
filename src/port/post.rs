//! Posting without a transfer list: the fast path that serializes straight into the ring,
//! the slow path through a scratch vector, and waiting for room (backpressure).

use std::time::Instant;

use rkyv::ser::allocator::Arena;

use crate::shm::buffer::ArrayBuffer;
use crate::shm::ring::{Corrupt, Producer};
use crate::wire::codec::{self, KIND_MESSAGE, Message};

use super::*;

/// How long a post waits for room in the peer's ring.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RoomWait {
    /// Not at all (`try_post_message`).
    Never,
    /// Until there is room or the peer is gone.
    Forever,
    /// Until then, then `Full`.
    Until(Instant),
}

impl From<codec::EncodeError> for PostErrorKind {
    fn from(e: codec::EncodeError) -> Self {
        match e {
            codec::EncodeError::Value(e) => PostErrorKind::Encode(e),
            codec::EncodeError::TooLarge => PostErrorKind::TooLarge {
                max: codec::MAX_ARCHIVE_LEN,
            },
        }
    }
}

impl MessagePort {
    /// Posts a message to the entangled port, waiting while its ring is full.
    ///
    /// `msg` is serialized straight into shared memory; the caller keeps (and may reuse)
    /// its value (S4). The message is visible to the peer as soon as this returns.
    /// `transfer` lists ports and buffers to move with the message; pass `[]` for none.
    ///
    /// # Errors
    ///
    /// [`PostErrorKind::Disconnected`] when the peer is gone (S16), [`PostErrorKind::Encode`]
    /// when the value cannot be serialized (S5), [`PostErrorKind::TooLarge`] when its
    /// archive would exceed [`MAX_MESSAGE_LEN`](Self::MAX_MESSAGE_LEN),
    /// [`PostErrorKind::DataClone`] for an invalid transfer list, [`PostErrorKind::Os`] when
    /// the operating system refuses the shared memory a large message needs or the
    /// descriptor passing a transfer needs, [`PostErrorKind::WrongProcess`] in a copy of
    /// the port's process made by `fork`. In every case nothing is sent and the transfer
    /// list is handed back ([`PostError::into_inner`]).
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let ch = MessageChannel::new()?;
    /// ch.port1.post_message(&(7u32, String::from("seven")), [])?;
    /// assert_eq!(ch.port2.recv::<(u32, String)>()?.data.0, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn post_message<T: Message>(
        &self,
        msg: &T,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> Result<(), PostError> {
        self.post(msg, transfer, RoomWait::Forever)
    }

    /// Posts a message without ever waiting.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), plus [`PostErrorKind::Full`] when the peer's
    /// ring has no room now.
    pub fn try_post_message<T: Message>(
        &self,
        msg: &T,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> Result<(), PostError> {
        self.post(msg, transfer, RoomWait::Never)
    }

    /// Posts a message, waiting at most `timeout` for room in the peer's ring.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmport::{MessageChannel, PostErrorKind};
    ///
    /// let ch = MessageChannel::builder().capacity(4096).build()?;
    /// // Nobody receives: the ring fills, then a post gives up after the timeout.
    /// let err = loop {
    ///     if let Err(e) = ch.port1.post_message_timeout(&[0u8; 512], [], Duration::from_millis(1)) {
    ///         break e;
    ///     }
    /// };
    /// assert!(matches!(err.kind(), PostErrorKind::Full));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), plus [`PostErrorKind::Full`] when the ring
    /// still has no room after `timeout`; nothing is sent and the transfer list is handed
    /// back. (A message too large for the ring waits only for the ring's room for its
    /// small record; descriptor passing, if any, may wait on the socket.)
    pub fn post_message_timeout<T: Message>(
        &self,
        msg: &T,
        transfer: impl IntoIterator<Item = Transferable>,
        timeout: std::time::Duration,
    ) -> Result<(), PostError> {
        let wait = match Instant::now().checked_add(timeout) {
            Some(deadline) => RoomWait::Until(deadline),
            None => RoomWait::Forever,
        };
        self.post(msg, transfer, wait)
    }

    pub(super) fn post<T: Message>(
        &self,
        msg: &T,
        transfer: impl IntoIterator<Item = Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        let transfer = transfer.into_iter();
        // `[]` says it is empty by its type: no list to build, look at or drop.
        if transfer.size_hint().1 != Some(0) || !self.in_owner_process() {
            let list: Vec<Transferable> = transfer.collect();
            if !self.in_owner_process() {
                return Err(PostError::new(PostErrorKind::WrongProcess, list));
            }
            if !list.is_empty() {
                return self.post_with_transfers(msg, list, wait);
            }
        }
        let fail = |kind| Err(PostError::new(kind, Vec::new()));
        if self.peer_gone_cheap() {
            return fail(PostErrorKind::Disconnected);
        }
        let Ok(mut tx) = self.tx.try_borrow_mut() else {
            return fail(PostErrorKind::Reentrant);
        };
        let Ok(mut arena) = self.arena.try_borrow_mut() else {
            return fail(PostErrorKind::Reentrant);
        };
        let arena = arena.get_or_insert_with(Arena::new);
        let fp = self.send_fp.get::<T>();
        match self.write_in_place(&mut tx, msg, fp, arena) {
            Ok(true) => {
                self.published(tx.mem());
                return Ok(());
            }
            Ok(false) => {}
            Err(corrupt) => {
                drop(tx);
                self.poison(corrupt);
                return fail(PostErrorKind::Disconnected);
            }
        }
        // Too large for the ring last time: try serializing straight into a pooled body
        // (one pass over the bytes instead of two).
        if self.size_hint.get() > tx.mem().max_payload() {
            if let Some(body) = self.encode_body(msg, arena) {
                if body.len() <= tx.mem().max_payload() {
                    // Smaller than the last one after all: a record in the ring, as the
                    // next one will be written in place (the hint followed it).
                    return self
                        .write_record(&mut tx, wait, |tx| tx.try_write(&body, KIND_MESSAGE, fp));
                }
                return self.send_body(&mut tx, body, fp, wait);
            }
        }
        // Slow path: the ring has no room now, or the message is bigger than predicted.
        let Ok(mut scratch) = self.tx_scratch.try_borrow_mut() else {
            return fail(PostErrorKind::Reentrant);
        };
        if let Err(e) = codec::encode_to_vec(msg, &mut scratch, arena) {
            return fail(e.into());
        }
        let len = scratch.len();
        if len > tx.mem().max_payload() {
            // Too large for one record: the archive travels outside the ring.
            self.size_hint.set(len);
            return self.send_encoded(&mut tx, &scratch, fp, Vec::new(), wait);
        }
        self.size_hint.set(len);
        self.write_record(&mut tx, wait, |tx| tx.try_write(&scratch, KIND_MESSAGE, fp))
    }

    /// Writes one record with `write` once the ring has room (as `wait` allows; see
    /// [`when_room`](Self::when_room)), then wakes the reader if it sleeps.
    pub(super) fn write_record(
        &self,
        tx: &mut Producer,
        wait: RoomWait,
        write: impl FnMut(&mut Producer) -> bool,
    ) -> Result<(), PostError> {
        match self.when_room(tx, wait, write) {
            Ok(()) => {
                self.published(tx.mem());
                Ok(())
            }
            Err(kind) => Err(PostError::new(kind, Vec::new())),
        }
    }

    /// Waits (or, with `block == false`, looks once) until `step` succeeds in writing to
    /// `tx`: each attempt first checks the peer and refreshes the consumer's index.
    /// `Err` when the peer is gone, or when not blocking and the ring is full.
    pub(super) fn when_room(
        &self,
        tx: &mut Producer,
        wait: RoomWait,
        mut step: impl FnMut(&mut Producer) -> bool,
    ) -> Result<(), PostErrorKind> {
        let mut attempt = || -> Option<Result<(), PostErrorKind>> {
            if self.peer_gone_cheap() {
                return Some(Err(PostErrorKind::Disconnected));
            }
            if let Err(c) = tx.refresh() {
                self.poison(c);
                return Some(Err(PostErrorKind::Disconnected));
            }
            step(tx).then_some(Ok(()))
        };
        let gone = || {
            self.check_liveness_now()
                .then_some(Err(PostErrorKind::Disconnected))
        };
        let word = &self.seg.ring_ctrl(self.side).writer_sleeping;
        let outcome = match wait {
            RoomWait::Forever => self.send_wait.wait(word, None, &mut attempt, gone),
            RoomWait::Until(d) => self.send_wait.wait(word, Some(d), &mut attempt, gone),
            // Full: a reader that died never drains it, so say so instead of `Full`.
            RoomWait::Never => attempt().or_else(gone),
        };
        outcome.unwrap_or(Err(PostErrorKind::Full))
    }

    /// Serializes `msg` into a pooled buffer sized for the last message's archive, if it
    /// fits there; the size hint follows the archive's length.
    fn encode_body<T: Message>(&self, msg: &T, arena: &mut Arena) -> Option<ArrayBuffer> {
        let mut body = ArrayBuffer::pooled_for(self.size_hint.get())?;
        let len = codec::encode_into_bytes(msg, &mut body, arena)?;
        body.truncate(len);
        self.size_hint.set(len);
        Some(body)
    }

    /// Serializes `msg` directly into the ring if it fits now. `Ok(false)`: no room.
    pub(super) fn write_in_place<T: Message>(
        &self,
        tx: &mut Producer,
        msg: &T,
        fp: u64,
        arena: &mut Arena,
    ) -> Result<bool, Corrupt> {
        for round in 0..2 {
            // The predicted size first; after a miss, only a place with more room than the
            // one that was too small (the other side of a wrap).
            let encode = |area: &mut [_]| codec::encode_into(msg, area, arena);
            if let Some(len) = tx.write_in_place(self.size_hint.get(), KIND_MESSAGE, fp, encode) {
                if len != self.size_hint.get() {
                    self.size_hint.set(len);
                }
                return Ok(true);
            }
            if round == 0 {
                tx.refresh()?;
            }
        }
        Ok(false)
    }
}
