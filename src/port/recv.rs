//! Receiving: copy the record out of the ring, release it, then validate and decode (the
//! peer cannot change what was checked), and the blocking and timed waits around it.

use std::time::{Duration, Instant};

use crate::error::{MessageError, RecvError, RecvTimeoutError, TryRecvError};
use crate::wire::codec::{self, KIND_MESSAGE, Message};
use crate::wire::transfer::KIND_TRANSFER;

use super::*;

/// Turns a validated-size archive and its type tag into what a receive returns.
pub(crate) type Decoder<'a, R> = dyn FnMut(&[u8], u64) -> Result<R, MessageError> + 'a;

impl MessagePort {
    /// Receives the next message, waiting until one arrives or the peer is gone.
    ///
    /// How it waits is set by [`set_wait_strategy`](Self::set_wait_strategy). A peer whose
    /// process died is noticed within 100 ms.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the peer is gone and every message it posted has
    /// been received (S15), and at once in a copy of the port's process made by `fork`
    /// (which must not consume the parent's messages); [`RecvError::MessageError`] when the
    /// next message cannot be decoded as `T` (S6), nests deeper than
    /// [`max_depth`](Self::max_depth), or its transferred objects could not be received:
    /// that message is consumed and the port keeps working.
    pub fn recv<T: Message>(&self) -> Result<MessageEvent<T>, RecvError> {
        let mut decode =
            |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, &self.recv_fp, self.max_depth());
        // A queued message needs none of the waiting machinery.
        match self.try_recv_with(false, &mut decode) {
            Ok(ev) => return Ok(ev),
            Err(TryRecvError::MessageError(e)) => return Err(RecvError::MessageError(e)),
            Err(_) => {} // empty, or the peer gone: the wait looks again and says which
        }
        Self::untimed(self.recv_until(None, &mut decode))
    }

    pub(super) fn untimed<R>(
        r: Result<MessageEvent<R>, RecvTimeoutError>,
    ) -> Result<MessageEvent<R>, RecvError> {
        r.map_err(RecvError::from)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`RecvTimeoutError::Timeout`] when nothing arrived in
    /// time and the peer is alive.
    pub fn recv_timeout<T: Message>(
        &self,
        timeout: Duration,
    ) -> Result<MessageEvent<T>, RecvTimeoutError> {
        let mut decode =
            |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, &self.recv_fp, self.max_depth());
        self.recv_until(Instant::now().checked_add(timeout), &mut decode)
    }

    /// Receives the next message, waiting until `deadline` at the latest; the form of
    /// [`recv_timeout`](Self::recv_timeout) for loops with one deadline for many receives.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let ch = shmport::MessageChannel::new()?;
    /// let deadline = Instant::now() + Duration::from_millis(10);
    /// ch.port1.post_message(&1u8, [])?;
    /// assert_eq!(ch.port2.recv_deadline::<u8>(deadline)?.data, 1);
    /// assert!(ch.port2.recv_deadline::<u8>(deadline).unwrap_err().is_timeout());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline<T: Message>(
        &self,
        deadline: Instant,
    ) -> Result<MessageEvent<T>, RecvTimeoutError> {
        let mut decode =
            |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, &self.recv_fp, self.max_depth());
        self.recv_until(Some(deadline), &mut decode)
    }

    /// Receives the next message and hands its archived form (rkyv's `Archived<T>`) to `f`
    /// instead of deserializing it: rkyv's zero-copy read, validated.
    ///
    /// The archive is read from a port-private copy taken before validation, so a peer
    /// cannot change it under `f`; `f` runs before the next message is received.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let ch = MessageChannel::new()?;
    /// ch.port1.post_message(&vec![1u32, 2, 3], [])?;
    /// let ev = ch.port2.recv_archived::<Vec<u32>, _>(|v| v.iter().map(|x| x.to_native()).sum::<u32>())?;
    /// assert_eq!(ev.data, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_archived<T: Message, R>(
        &self,
        f: impl FnOnce(&T::Archived) -> R,
    ) -> Result<MessageEvent<R>, RecvError> {
        let mut f = Some(f);
        let mut decode = |bytes: &[u8], tag| {
            let archived = codec::access::<T>(bytes, tag, &self.recv_fp, self.max_depth())?;
            Ok(f.take().expect("one record per receive")(archived))
        };
        Self::untimed(self.recv_until(None, &mut decode))
    }

    /// [`recv_archived`](Self::recv_archived) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_archived<T: Message, R>(
        &self,
        f: impl FnOnce(&T::Archived) -> R,
    ) -> Result<MessageEvent<R>, TryRecvError> {
        let mut f = Some(f);
        let mut decode = |bytes: &[u8], tag| {
            let archived = codec::access::<T>(bytes, tag, &self.recv_fp, self.max_depth())?;
            Ok(f.take().expect("one record per receive")(archived))
        };
        self.try_recv_now(&mut decode)
    }

    pub(super) fn recv_until<R>(
        &self,
        deadline: Option<Instant>,
        decode: &mut Decoder<'_, R>,
    ) -> Result<MessageEvent<R>, RecvTimeoutError> {
        let decode = std::cell::RefCell::new(decode);
        let attempt = || match self.try_recv_with(false, *decode.borrow_mut()) {
            Ok(ev) => Some(Ok(ev)),
            Err(e) => e.settled().map(|e| Err(e.into())),
        };
        let ctrl = self.seg.ring_ctrl(self.side.peer());
        if self.recv_wait.never_sleeps() {
            self.recv_polls.polling(ctrl);
        } else {
            self.recv_polls.may_sleep(ctrl);
        }
        let word = &ctrl.reader_sleeping;
        let peer_dead = || {
            if self.check_liveness_now() {
                // Drain whatever the peer published before it went.
                Some(match self.try_recv_with(false, *decode.borrow_mut()) {
                    Ok(ev) => Ok(ev),
                    Err(e) => Err(e.settled().unwrap_or(RecvError::Disconnected).into()),
                })
            } else {
                None
            }
        };
        self.recv_wait
            .wait(word, deadline, attempt, peer_dead)
            .unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    /// Receives the next message if one is queued; never waits.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is queued and the peer is alive;
    /// [`TryRecvError::Disconnected`] once the peer is gone and the queue drained (a closed
    /// peer is seen at the next call, a dead process within 64 calls);
    /// [`TryRecvError::MessageError`] as for [`recv`](Self::recv).
    pub fn try_recv<T: Message>(&self) -> Result<MessageEvent<T>, TryRecvError> {
        let mut decode =
            |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, &self.recv_fp, self.max_depth());
        self.try_recv_now(&mut decode)
    }

    /// Generic over the decoder, as is `try_recv_now`, so that the first look of `recv` and
    /// `try_recv` has the decoding inlined (through a `&mut Decoder` it is an indirect call
    /// and one more move of the result: 36 instructions per `recv` of a `[u8; 64]`,
    /// callgrind over `examples/hot_path_count.rs`). The waits pass their `&mut Decoder`
    /// as it is: one instance per message type, not one per call site.
    pub(crate) fn try_recv_with<R, D>(
        &self,
        periodic_liveness: bool,
        decode: &mut D,
    ) -> Result<MessageEvent<R>, TryRecvError>
    where
        D: FnMut(&[u8], u64) -> Result<R, MessageError> + ?Sized,
    {
        if self.peer.get() == PeerState::Poisoned || !self.in_owner_process() {
            // Poisoned, or a copy of the port in a forked process, which must not touch
            // the parent's ring.
            return Err(TryRecvError::Disconnected);
        }
        let Ok(mut rx) = self.rx.try_borrow_mut() else {
            // Unreachable through the public API: the ring is released before anything
            // is decoded, so a receive from inside a `Deserialize` impl of a message on
            // this same port takes the next message. Kept so that a future caller holding
            // the consumer gets `Empty` rather than a panic.
            return Err(TryRecvError::Empty);
        };
        let record = match rx.peek() {
            Ok(Some(r)) => r,
            Ok(None) => {
                if rx.flush() {
                    self.wake_peer(&rx.mem().ctrl().writer_sleeping);
                }
                let gone = self.peer_gone_cheap()
                    || (periodic_liveness && self.liveness_due() && self.check_liveness_now());
                if !gone {
                    return Err(TryRecvError::Empty);
                }
                // The peer's last records were published before it closed: look once more.
                match rx.peek() {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err(TryRecvError::Disconnected),
                    Err(c) => return Err(self.poison_rx(rx, c)),
                }
            }
            Err(c) => return Err(self.poison_rx(rx, c)),
        };
        let mut scratch = std::mem::take(&mut *self.rx_scratch.borrow_mut());
        rx.copy_payload(&record, &mut scratch);
        let header = record.header;
        // A transfer record's release is published at once while the writer asks for it
        // (`wants_head`: its queued out-of-ring bytes near their bound or cache window, see
        // `MessagePort::set_max_queued_bytes`), so that it sees them taken; otherwise in
        // batches, as for small messages (a published head is a cache-line transfer).
        let published = rx.release(record);
        let wanted = header.kind == KIND_TRANSFER
            && (rx.mem().ctrl().wants_head).load(std::sync::atomic::Ordering::Relaxed) != 0;
        if published || (wanted && rx.flush()) {
            self.wake_peer(&rx.mem().ctrl().writer_sleeping);
        }
        drop(rx);
        let result = match header.kind {
            KIND_MESSAGE => decode(&scratch, header.tag)
                .map(|data| MessageEvent {
                    data,
                    ports: Vec::new(),
                    buffers: Vec::new(),
                })
                .map_err(TryRecvError::MessageError),
            KIND_TRANSFER => self.receive_transfer(&mut scratch, header.tag, decode),
            kind => Err(TryRecvError::MessageError(MessageError::UnknownKind(kind))),
        };
        *self.rx_scratch.borrow_mut() = scratch;
        result
    }
}
