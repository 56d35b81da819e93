//! Messages as archives: received and posted without decoding, for forwarding (a
//! `BroadcastChannel`'s fan-out, a bridge to another host).

use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::error::{MessageError, RecvError, RecvTimeoutError, TryRecvError};
use crate::wire::codec::{self, KIND_MESSAGE, Message};

use super::*;

/// A message as it travels: its archive and type fingerprint, undecoded, with the objects
/// of its transfer list.
///
/// What [`MessagePort::recv_raw`] returns and [`MessagePort::post_raw`] takes, so that a
/// program that forwards messages (a relay, a bridge to another host) needs neither their
/// types nor a decode and re-encode. Nothing is checked on the way: the final receiver
/// validates the archive and compares the fingerprint with the type it asks for, as it
/// does for any message, so a forwarder cannot make a wrong-type or malformed message
/// decode.
///
/// ```
/// use shmport::{MessageChannel, RawMessage};
///
/// let (a, b) = (MessageChannel::new()?, MessageChannel::new()?);
/// a.port1.post_message(&String::from("relayed"), [])?;
/// // A relay that never learns the type: a.port2 -> b.port1 -> b.port2.
/// let raw = a.port2.recv_raw()?;
/// assert_eq!(raw.fingerprint, RawMessage::fingerprint_of::<String>());
/// let RawMessage { archive, fingerprint, ports, buffers, .. } = raw;
/// let transfer = ports.into_iter().map(Into::into).chain(buffers.into_iter().map(Into::into));
/// b.port1.post_raw(&archive, fingerprint, transfer)?;
/// assert_eq!(b.port2.recv::<String>()?.data, "relayed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct RawMessage {
    /// The rkyv archive, as the sender's serializer wrote it (root at the end), in
    /// private, 16-byte aligned memory: the peer cannot change it any more.
    pub archive: AlignedVec<16>,
    /// The fingerprint of the posted type (see [`RawMessage::fingerprint_of`]).
    pub fingerprint: u64,
    /// The ports of the transfer list, in transfer-list order.
    pub ports: Vec<MessagePort>,
    /// The buffers of the transfer list, in transfer-list order.
    pub buffers: Vec<ArrayBuffer>,
}

impl RawMessage {
    /// The fingerprint a port puts on messages of type `T` in this program: what a
    /// receive as `T` expects.
    ///
    /// It hashes `T`'s type name and archived layout, so it is the same in every process
    /// built from the same source with the same compiler; two separately built programs
    /// may disagree (a bridge between them translates, see its handshake).
    pub fn fingerprint_of<T: Message>() -> u64 {
        codec::fingerprint_of::<T>()
    }

    /// Encodes `value` as `post_message` would, without a transfer list.
    ///
    /// # Errors
    ///
    /// [`PostErrorKind::Encode`] (or `TooLarge`) as for
    /// [`post_message`](MessagePort::post_message).
    pub fn encode<T: Message>(value: &T) -> Result<RawMessage, PostError> {
        let mut archive = AlignedVec::new();
        codec::encode_to_vec(value, &mut archive, &mut Arena::new())
            .map_err(|e| PostError::new(e.into(), Vec::new()))?;
        Ok(RawMessage {
            archive,
            fingerprint: codec::fingerprint_of::<T>(),
            ports: Vec::new(),
            buffers: Vec::new(),
        })
    }

    /// Validates and decodes the archive as `T`, as a receive as `T` would (with the
    /// default nesting limit). The transferred objects stay in `self`.
    ///
    /// # Errors
    ///
    /// [`MessageError`] as for [`recv`](MessagePort::recv): a fingerprint that is not
    /// `T`'s, or an archive that does not validate.
    pub fn decode<T: Message>(&self) -> Result<T, MessageError> {
        let fingerprints = codec::FingerprintCache::new();
        codec::decode::<T>(
            &self.archive,
            self.fingerprint,
            &fingerprints,
            codec::DEFAULT_MAX_DEPTH,
        )
    }

    /// The transfer list to post this message's objects with: ports first, then buffers
    /// (the receiver gets them in the same two lists, each in order).
    pub fn take_transfer(&mut self) -> Vec<Transferable> {
        let ports = std::mem::take(&mut self.ports).into_iter().map(Into::into);
        let buffers = std::mem::take(&mut self.buffers)
            .into_iter()
            .map(Into::into);
        ports.chain(buffers).collect()
    }
}

impl MessagePort {
    /// Receives the next message without decoding it, waiting as [`recv`](Self::recv)
    /// does: its archive (copied into private memory), its fingerprint, and its
    /// transferred ports and buffers.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), except that no type is checked: `MessageError` only when
    /// the record itself or its transferred objects are bad.
    pub fn recv_raw(&self) -> Result<RawMessage, RecvError> {
        Self::untimed(self.recv_until(None, &mut copy_archive)).map(into_raw)
    }

    /// [`recv_raw`](Self::recv_raw), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout), without the type check.
    pub fn recv_raw_timeout(&self, timeout: Duration) -> Result<RawMessage, RecvTimeoutError> {
        self.recv_until(Instant::now().checked_add(timeout), &mut copy_archive)
            .map(into_raw)
    }

    /// [`recv_raw`](Self::recv_raw) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), without the type check.
    pub fn try_recv_raw(&self) -> Result<RawMessage, TryRecvError> {
        self.try_recv_now(&mut copy_archive).map(into_raw)
    }

    /// [`try_recv_raw`](Self::try_recv_raw), lending the archive to `f` instead of
    /// copying it out: for a forwarder that writes it somewhere anyway (a network frame).
    /// `f` gets the archive, in the port's private copy (the peer cannot change it), and
    /// its fingerprint; what it returns is the event's `data`, with the transferred ports
    /// and buffers beside it.
    ///
    /// ```
    /// let ch = shmport::MessageChannel::new()?;
    /// ch.port1.post_message(&String::from("abc"), [])?;
    /// let mut frame = Vec::new();
    /// let ev = ch.port2.try_recv_raw_with(|archive, fingerprint| {
    ///     frame.extend_from_slice(&fingerprint.to_le_bytes());
    ///     frame.extend_from_slice(archive);
    /// })?;
    /// assert!(ev.ports.is_empty() && frame.len() > 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_recv_raw`](Self::try_recv_raw); `f` is not called then.
    pub fn try_recv_raw_with<R>(
        &self,
        f: impl FnOnce(&[u8], u64) -> R,
    ) -> Result<MessageEvent<R>, TryRecvError> {
        let mut f = Some(f);
        let mut lend = |bytes: &[u8], tag: u64| match f.take() {
            Some(f) => Ok(f(bytes, tag)),
            // One record per receive: unreachable.
            None => Err(MessageError::Corrupt("a receive decoded two records")),
        };
        self.try_recv_now(&mut lend)
    }

    /// Posts an encoded message: `archive` as [`recv_raw`](Self::recv_raw) or
    /// [`RawMessage::encode`] gave it, tagged with `fingerprint`, with `transfer` moving
    /// alongside. Waits for room, moves the transfer list and fails exactly as
    /// [`post_message`](Self::post_message) does; only the encoding step is skipped.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), with the transfer list handed back.
    pub fn post_raw(
        &self,
        archive: &[u8],
        fingerprint: u64,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> Result<(), PostError> {
        self.post_archive(
            archive,
            fingerprint,
            transfer.into_iter().collect(),
            RoomWait::Forever,
        )
    }

    /// [`post_raw`](Self::post_raw) without ever waiting.
    ///
    /// # Errors
    ///
    /// As [`try_post_message`](Self::try_post_message): `Full` when the peer's ring has no
    /// room now.
    pub fn try_post_raw(
        &self,
        archive: &[u8],
        fingerprint: u64,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> Result<(), PostError> {
        self.post_archive(
            archive,
            fingerprint,
            transfer.into_iter().collect(),
            RoomWait::Never,
        )
    }

    /// The checks of `post` and `post_with_transfers`, then the sending of an archive
    /// that is already encoded.
    fn post_archive(
        &self,
        archive: &[u8],
        fp: u64,
        list: Vec<Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        if !self.in_owner_process() {
            return Err(PostError::new(PostErrorKind::WrongProcess, list));
        }
        if archive.len() > Self::MAX_MESSAGE_LEN {
            let kind = PostErrorKind::TooLarge {
                max: Self::MAX_MESSAGE_LEN,
            };
            return Err(PostError::new(kind, list));
        }
        if let Err(kind) = self.check_transfer_list(&list) {
            return Err(PostError::new(kind, list));
        }
        if self.peer_gone_cheap() {
            return Err(PostError::new(PostErrorKind::Disconnected, list));
        }
        let Ok(mut tx) = self.tx.try_borrow_mut() else {
            return Err(PostError::new(PostErrorKind::Reentrant, list));
        };
        if !list.is_empty() || archive.len() > tx.mem().max_payload() {
            return self.send_encoded(&mut tx, archive, fp, list, wait);
        }
        match self.when_room(&mut tx, wait, |tx| tx.try_write(archive, KIND_MESSAGE, fp)) {
            Ok(()) => {
                self.published(tx.mem());
                Ok(())
            }
            Err(kind) => Err(PostError::new(kind, Vec::new())),
        }
    }
}

/// The decoder of the raw receives: a private copy of the archive and its tag.
fn copy_archive(bytes: &[u8], tag: u64) -> Result<(AlignedVec<16>, u64), MessageError> {
    let mut v = AlignedVec::<16>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    Ok((v, tag))
}

fn into_raw(ev: MessageEvent<(AlignedVec<16>, u64)>) -> RawMessage {
    let MessageEvent {
        data: (archive, fingerprint),
        ports,
        buffers,
    } = ev;
    RawMessage {
        archive,
        fingerprint,
        ports,
        buffers,
    }
}
