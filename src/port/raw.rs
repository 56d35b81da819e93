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
    /// private, 16-byte aligned memory: the peer cannot change it any more. Empty when
    /// the archive came in [`body`](Self::body) instead.
    pub archive: AlignedVec<16>,
    /// The fingerprint of the posted type (see [`RawMessage::fingerprint_of`]).
    pub fingerprint: u64,
    /// The ports of the transfer list, in transfer-list order.
    pub ports: Vec<MessagePort>,
    /// The buffers of the transfer list, in transfer-list order.
    pub buffers: Vec<ArrayBuffer>,
    /// Only from [`MessagePort::try_recv_raw_in_place`] and
    /// [`recv_raw_in_place`](MessagePort::recv_raw_in_place): an archive that travelled
    /// outside the ring, still in the shared buffer it came in, `archive` being empty
    /// then. See [`RawMessage::bytes`].
    pub body: Option<ArrayBuffer>,
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
            body: None,
        })
    }

    /// The archive's bytes: [`body`](Self::body)'s when the message came with one, else
    /// [`archive`](Self::archive)'s.
    pub fn bytes(&self) -> &[u8] {
        self.body.as_deref().unwrap_or(&self.archive)
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
        let copied;
        let archive = match &self.body {
            // Copy, then check: the sender still maps the body.
            Some(body) => {
                copied = private_copy(body);
                &copied
            }
            None => &self.archive,
        };
        codec::decode::<T>(
            archive,
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
    /// The archive is the one copy the port makes of every message (the peer cannot
    /// change it any more), handed over rather than copied again: a forwarder can pass
    /// it on as it is (a network library's owned buffer) without a copy of its own. (An
    /// archive under 16 KiB is copied into a vector of its own size instead, so that the
    /// port keeps its receive buffer for the next message.)
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), except that no type is checked: `MessageError` only when
    /// the record itself or its transferred objects are bad.
    pub fn recv_raw(&self) -> Result<RawMessage, RecvError> {
        let ev = Self::untimed(self.recv_until(None, &mut locate_archive))?;
        Ok(self.raw_message(ev))
    }

    /// [`recv_raw`](Self::recv_raw), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout), without the type check.
    pub fn recv_raw_timeout(&self, timeout: Duration) -> Result<RawMessage, RecvTimeoutError> {
        let ev = self.recv_until(Instant::now().checked_add(timeout), &mut locate_archive)?;
        Ok(self.raw_message(ev))
    }

    /// [`recv_raw`](Self::recv_raw) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), without the type check.
    pub fn try_recv_raw(&self) -> Result<RawMessage, TryRecvError> {
        let ev = self.try_recv_now(&mut locate_archive)?;
        Ok(self.raw_message(ev))
    }

    /// [`try_recv_raw`](Self::try_recv_raw), except that an archive that travelled outside
    /// the ring, in a pooled buffer of the sender's (every archive too large for a ring
    /// record, and one posted right after such, which the sender sizes alike), is not
    /// copied out of it: it comes in [`RawMessage::body`] (and `archive` is empty). For a
    /// forwarder that copies every archive elsewhere anyway (a network library's send
    /// buffer, which can own the body): a large message then crosses memory once in the
    /// forwarder instead of twice. Archives that came in the ring come in `archive`, as
    /// from `try_recv_raw`.
    ///
    /// The body is an [`ArrayBuffer`] this port now holds, freed when dropped. Its
    /// sender's process still maps it, like every buffer that ever passed through it, so
    /// a sender that breaks the protocol could change the bytes while they are read:
    /// forward them, and let the final receiver validate them, as it does every archive.
    /// [`RawMessage::decode`] copies a body before it validates it.
    ///
    /// ```
    /// let ch = shmport::MessageChannel::new()?;
    /// ch.port1.post_message(&vec![5u8; 1 << 20], [])?; // larger than a record
    /// let raw = ch.port2.try_recv_raw_in_place()?;
    /// assert!(raw.archive.is_empty() && raw.body.is_some());
    /// assert_eq!(raw.decode::<Vec<u8>>()?, vec![5u8; 1 << 20]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_recv_raw`](Self::try_recv_raw).
    pub fn try_recv_raw_in_place(&self) -> Result<RawMessage, TryRecvError> {
        self.keeping_body(|| self.try_recv_now(&mut locate_archive))
    }

    /// [`try_recv_raw_in_place`](Self::try_recv_raw_in_place), waiting as
    /// [`recv_raw`](Self::recv_raw) does.
    ///
    /// # Errors
    ///
    /// As [`recv_raw`](Self::recv_raw).
    pub fn recv_raw_in_place(&self) -> Result<RawMessage, RecvError> {
        self.keeping_body(|| Self::untimed(self.recv_until(None, &mut locate_archive)))
    }

    /// Runs `receive` (one raw receive) with the body of the record it takes handed over
    /// instead of copied, and puts that body into the message.
    fn keeping_body<E>(
        &self,
        receive: impl FnOnce() -> Result<MessageEvent<(Lent, u64)>, E>,
    ) -> Result<RawMessage, E> {
        /// Puts the port back to copying bodies however the receive ends, a panic
        /// included: a `Keep` left behind would make the next typed receive of a large
        /// message decode nothing.
        struct CopyAgain<'a>(&'a Cell<transfer_in::BodyHandOff>);
        impl Drop for CopyAgain<'_> {
            fn drop(&mut self) {
                self.0.set(transfer_in::BodyHandOff::Copy);
            }
        }
        let _copy_again = CopyAgain(&self.body_hand_off);
        self.body_hand_off.set(transfer_in::BodyHandOff::Keep);
        let ev = receive();
        let body = match self.body_hand_off.take() {
            transfer_in::BodyHandOff::Kept(body) => Some(body),
            _ => None,
        };
        let mut raw = self.raw_message(ev?);
        raw.body = body;
        Ok(raw)
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

    /// [`post_raw`](Self::post_raw) of an archive that is in pieces: `parts`, in order,
    /// are its bytes (as a network library may hand over a large message). The pieces
    /// are written straight where the message goes (the peer's ring, or the shared
    /// memory beside it for a message too large for the ring): no contiguous copy first.
    ///
    /// ```
    /// use shmport::{MessageChannel, RawMessage};
    ///
    /// let ch = MessageChannel::new()?;
    /// let raw = RawMessage::encode(&vec![7u8; 1000])?;
    /// // The archive as it might arrive from a network, in three pieces.
    /// let (a, rest) = raw.archive.split_at(10);
    /// let (b, c) = rest.split_at(500);
    /// ch.port1.post_raw_parts(&[a, b, c], raw.fingerprint, [])?;
    /// assert_eq!(ch.port2.recv::<Vec<u8>>()?.data, vec![7u8; 1000]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`post_raw`](Self::post_raw), with the transfer list handed back (`TooLarge`
    /// when the pieces add up to more than [`MAX_MESSAGE_LEN`](Self::MAX_MESSAGE_LEN)).
    pub fn post_raw_parts(
        &self,
        parts: &[&[u8]],
        fingerprint: u64,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> Result<(), PostError> {
        self.post_parts(
            parts,
            fingerprint,
            transfer.into_iter().collect(),
            RoomWait::Forever,
        )
    }

    /// [`post_raw_parts`](Self::post_raw_parts) without ever waiting.
    ///
    /// # Errors
    ///
    /// As [`try_post_raw`](Self::try_post_raw): `Full` when the peer's ring has no room
    /// now.
    pub fn try_post_raw_parts(
        &self,
        parts: &[&[u8]],
        fingerprint: u64,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> Result<(), PostError> {
        self.post_parts(
            parts,
            fingerprint,
            transfer.into_iter().collect(),
            RoomWait::Never,
        )
    }

    /// [`post_parts`](Self::post_parts) of one contiguous archive.
    fn post_archive(
        &self,
        archive: &[u8],
        fp: u64,
        list: Vec<Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        self.post_parts(&[archive], fp, list, wait)
    }

    /// The checks of `post` and `post_with_transfers`, then the sending of an archive
    /// that is already encoded, in `parts` (one, or the pieces of a raw post).
    fn post_parts(
        &self,
        parts: &[&[u8]],
        fp: u64,
        list: Vec<Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        if !self.in_owner_process() {
            return Err(PostError::new(PostErrorKind::WrongProcess, list));
        }
        let len = parts
            .iter()
            .try_fold(0usize, |n, p| n.checked_add(p.len()))
            .unwrap_or(usize::MAX);
        if len > Self::MAX_MESSAGE_LEN {
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
        self.send_parts(&mut tx, parts, len, fp, list, wait)
    }

    /// Sends an archive in `parts` of `len` bytes in all: into one ring record, or as a
    /// transfer record (its archive inline or in a body).
    fn send_parts(
        &self,
        tx: &mut Producer,
        parts: &[&[u8]],
        len: usize,
        fp: u64,
        list: Vec<Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        if !list.is_empty() {
            // A transfer record carries its archive after its item table: pieces are made
            // whole here (transfer lists are rare where archives come in pieces).
            let whole;
            let archive = match parts {
                [one] => *one,
                _ => {
                    whole = parts.concat();
                    &whole
                }
            };
            return self.send_encoded(tx, archive, fp, list, wait);
        }
        if len > tx.mem().max_payload() {
            return match ArrayBuffer::body_copy(parts) {
                Ok(body) => self.send_body(tx, body, fp, wait),
                Err(e) => Err(PostError::new(PostErrorKind::Os(e.into_io()), list)),
            };
        }
        self.write_record(tx, wait, |tx| tx.try_write_parts(parts, KIND_MESSAGE, fp))
    }

    /// The archive of a raw receive: the port's receive buffer itself when the archive is
    /// all of it (handed over, the port starts a new one), else a copy.
    fn raw_message(&self, ev: MessageEvent<(Lent, u64)>) -> RawMessage {
        let MessageEvent {
            data: (lent, fingerprint),
            ports,
            buffers,
        } = ev;
        let archive = match lent {
            Lent::Copied(v) => v,
            Lent::At { addr, len } => {
                let mut scratch = self.rx_scratch.borrow_mut();
                let start = scratch.as_ptr() as usize;
                let whole = addr == start && len == scratch.len();
                if whole && scratch.capacity() / 2 <= len {
                    std::mem::take(&mut *scratch)
                } else {
                    // A part of the buffer (an archive inside a transfer record), or far
                    // less than the buffer holds: copied.
                    let at = addr.wrapping_sub(start);
                    let bytes = at
                        .checked_add(len)
                        .and_then(|end| scratch.get(at..end))
                        .unwrap_or_default();
                    private_copy(bytes)
                }
            }
        };
        RawMessage {
            archive,
            body: None,
            fingerprint,
            ports,
            buffers,
        }
    }
}

/// The smallest archive a raw receive hands over instead of copying.
const HAND_OVER_MIN: usize = 16 << 10;

/// Where a raw receive's archive is: a small one copied at once, a larger one found in the
/// port's receive buffer (by address, compared after the receive has put the buffer back).
enum Lent {
    Copied(AlignedVec<16>),
    At { addr: usize, len: usize },
}

/// The decoder of the raw receives.
fn locate_archive(bytes: &[u8], tag: u64) -> Result<(Lent, u64), MessageError> {
    if bytes.len() < HAND_OVER_MIN {
        return Ok((Lent::Copied(private_copy(bytes)), tag));
    }
    let at = Lent::At {
        addr: bytes.as_ptr() as usize,
        len: bytes.len(),
    };
    Ok((at, tag))
}

/// `bytes` in a 16-aligned vector of their own size.
fn private_copy(bytes: &[u8]) -> AlignedVec<16> {
    let mut v = AlignedVec::<16>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}
