//! `MessagePort`: one end of a channel. It writes one ring of the segment and reads the
//! other.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::buffer::Wire;
use crate::codec::{self, FingerprintCache, KIND_MESSAGE, Message};
use crate::error::{
    MessageError, PostError, PostErrorKind, RecvError, RecvTimeoutError, TryRecvError,
};
use crate::platform;
use crate::ring::{Consumer, Corrupt, Producer};
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::transfer::{
    self, ITEM_BODY, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT, Item, KIND_TRANSFER, MAX_TRANSFER_LIST,
    SOCKET_MESSAGE, TransferHeader, Transferable,
};
use crate::wake::{WANTS_DOORBELL, WaitStrategy, Waiter, wake};
use crate::{ArrayBuffer, Error};

/// A received message: the web's `MessageEvent`.
#[derive(Debug)]
#[non_exhaustive]
pub struct MessageEvent<T> {
    /// The message: a deep copy of what was posted (S4).
    pub data: T,
    /// The ports that were in the transfer list, in transfer-list order.
    pub ports: Vec<MessagePort>,
    /// The buffers that were in the transfer list, in transfer-list order.
    pub buffers: Vec<ArrayBuffer>,
}

impl<T> MessageEvent<T> {
    /// Consumes the event, keeping only the message.
    pub fn into_data(self) -> T {
        self.data
    }
}

/// Turns a validated-size archive and its type tag into what a receive returns.
pub(crate) type Decoder<'a, R> = dyn FnMut(&[u8], u64) -> Result<R, MessageError> + 'a;

/// How many empty `try_recv` calls pass between two kernel liveness checks.
const LIVENESS_EVERY: u32 = 64;

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

impl From<bool> for RoomWait {
    fn from(block: bool) -> Self {
        if block {
            RoomWait::Forever
        } else {
            RoomWait::Never
        }
    }
}

/// Doorbells consumed per look: more may be queued (a writer rings at most once per
/// request, and the socket buffer bounds how many requests can pile up), and a peer that
/// floods us with them must not hold the thread that drains.
const DOORBELLS_PER_DRAIN: usize = 256;

/// Doorbells skipped before a transfer note: more than a socket buffer can hold (its
/// default fits a few hundred) means a peer flooding us, and the channel is poisoned.
const MAX_DOORBELLS_BEFORE_NOTE: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerState {
    Alive,
    /// Closed, dropped, exited or killed: drain, then `Disconnected`.
    Gone,
    /// Our view of the shared memory is impossible: nothing more is read or written.
    Poisoned,
}

/// One end of a channel: the web's `MessagePort`.
///
/// A port is `Send` (a thread is a worker) and not `Sync` (each ring has one producer and
/// one consumer). Dropping a port closes it; the peer then drains what was queued and gets
/// `Disconnected` (S15).
///
/// ```
/// use shmport::MessageChannel;
///
/// let ch = MessageChannel::new()?;
/// ch.port1.post_message(&String::from("hello"), [])?;
/// let ev = ch.port2.recv::<String>()?;
/// assert_eq!(ev.data, "hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MessagePort {
    seg: Arc<Segment>,
    side: usize,
    /// This end's socket: set when the port arrives from elsewhere, or created on first
    /// need (see [`MessagePort::socket`]). Ports of a channel that never leaves its process
    /// have none: they cost one descriptor per channel, not three.
    sock: std::cell::OnceCell<OwnedFd>,
    tx: RefCell<Producer>,
    rx: RefCell<Consumer>,
    rx_scratch: RefCell<AlignedVec<16>>,
    tx_scratch: RefCell<AlignedVec<16>>,
    send_fp: FingerprintCache,
    recv_fp: FingerprintCache,
    recv_wait: Waiter,
    send_wait: Waiter,
    peer: Cell<PeerState>,
    liveness_countdown: Cell<u32>,
    size_hint: Cell<usize>,
    /// rkyv's scratch allocator for this port's posts (created on first use).
    arena: RefCell<Option<Arena>>,
    /// Set when the port's end moves elsewhere (spawn, transfer): Drop must not close it.
    moved: Cell<bool>,
    /// This port's place in the async reactor, made by its first pending `recv_async`.
    async_reg: std::cell::OnceCell<crate::reactor::Registration>,
}

impl fmt::Debug for MessagePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessagePort")
            .field("side", &self.side)
            .field("capacity", &self.seg.capacity())
            .field("peer", &self.peer.get())
            .finish_non_exhaustive()
    }
}

impl MessagePort {
    /// Builds the port on side `side` of `seg`, taking the ring roles from their published
    /// indices (a new channel, or an end that arrived from elsewhere).
    pub(crate) fn attach(
        seg: Arc<Segment>,
        side: usize,
        sock: Option<OwnedFd>,
        wait: WaitStrategy,
    ) -> Result<MessagePort, Error> {
        let bad = |Corrupt(why)| Error::InvalidSegment(why);
        let tx = Producer::attach(seg.ring(side)).map_err(bad)?;
        let rx = Consumer::attach(seg.ring(1 - side)).map_err(bad)?;
        Ok(MessagePort {
            seg,
            side,
            sock: sock.map(std::cell::OnceCell::from).unwrap_or_default(),
            tx: RefCell::new(tx),
            rx: RefCell::new(rx),
            rx_scratch: RefCell::new(AlignedVec::new()),
            tx_scratch: RefCell::new(AlignedVec::new()),
            send_fp: FingerprintCache::new(),
            recv_fp: FingerprintCache::new(),
            recv_wait: Waiter::new(wait),
            send_wait: Waiter::new(wait),
            peer: Cell::new(PeerState::Alive),
            liveness_countdown: Cell::new(LIVENESS_EVERY),
            size_hint: Cell::new(0),
            arena: RefCell::new(None),
            moved: Cell::new(false),
            async_reg: std::cell::OnceCell::new(),
        })
    }

    /// The largest encoded message this port's channel carries inside its ring, in bytes.
    /// Larger messages work too: they travel in shared memory outside the ring, at the cost
    /// of a few system calls.
    pub fn max_inline_size(&self) -> usize {
        self.tx.borrow().mem().max_payload()
    }

    /// The ring capacity of each direction of this port's channel, in bytes.
    pub fn capacity(&self) -> usize {
        self.seg.capacity()
    }

    /// How this port waits in `recv`, `recv_timeout` and a blocking `post_message`.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.recv_wait.strategy()
    }

    /// Changes how this port waits; see [`WaitStrategy`].
    pub fn set_wait_strategy(&self, strategy: WaitStrategy) {
        self.recv_wait.set_strategy(strategy);
        self.send_wait.set_strategy(strategy);
    }

    // ----- posting -------------------------------------------------------------------

    /// Posts a message to the entangled port, waiting while its ring is full.
    ///
    /// `msg` is serialized straight into shared memory; the caller keeps (and may reuse)
    /// its value (S4). The message is visible to the peer as soon as this returns.
    /// `transfer` lists ports and buffers to move with the message; pass `[]` for none.
    ///
    /// # Errors
    ///
    /// [`PostErrorKind::Disconnected`] when the peer is gone (S16), [`PostErrorKind::Encode`]
    /// when the value cannot be serialized (S5), [`PostErrorKind::DataClone`] for an
    /// invalid transfer list, [`PostErrorKind::Os`] when the operating system refuses the
    /// shared memory a large message needs or the descriptor passing a transfer needs.
    /// In every case nothing is sent and the transfer list is handed back
    /// ([`PostError::into_inner`]).
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
        self.post(msg, transfer, true)
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
        self.post(msg, transfer, false)
    }

    fn post<T: Message>(
        &self,
        msg: &T,
        transfer: impl IntoIterator<Item = Transferable>,
        block: bool,
    ) -> Result<(), PostError> {
        let mut transfer = transfer.into_iter().peekable();
        if transfer.peek().is_some() {
            return self.post_with_transfers(msg, transfer.collect(), block);
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
                self.wake_reader(&tx.mem().ctrl().reader_sleeping);
                return Ok(());
            }
            Ok(false) => {}
            Err(corrupt) => {
                drop(tx);
                self.poison(corrupt);
                return fail(PostErrorKind::Disconnected);
            }
        }
        // Slow path: the ring has no room now, or the message is bigger than predicted.
        let Ok(mut scratch) = self.tx_scratch.try_borrow_mut() else {
            return fail(PostErrorKind::Reentrant);
        };
        if let Err(e) = codec::encode_to_vec(msg, &mut scratch, arena) {
            return fail(PostErrorKind::Encode(e));
        }
        let len = scratch.len();
        if len > tx.mem().max_payload() {
            // Too large for one record: the archive travels outside the ring.
            return self.send_encoded(&mut tx, &scratch, fp, Vec::new(), block);
        }
        self.size_hint.set(len);
        match self.when_room(&mut tx, RoomWait::from(block), |tx| {
            tx.try_write(&scratch, KIND_MESSAGE, fp)
        }) {
            Ok(()) => {
                self.wake_reader(&tx.mem().ctrl().reader_sleeping);
                Ok(())
            }
            Err(kind) => fail(kind),
        }
    }

    /// Posts an archive encoded once for many ports (a `BroadcastChannel`'s fan-out):
    /// `fp` is the fingerprint of the type it encodes. Waits for room as `wait` says, then
    /// fails with `Full`. A message too large for the ring travels out of it and always
    /// waits.
    pub(crate) fn post_encoded(
        &self,
        archive: &[u8],
        fp: u64,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        let fail = |kind| Err(PostError::new(kind, Vec::new()));
        if self.peer_gone_cheap() {
            return fail(PostErrorKind::Disconnected);
        }
        let Ok(mut tx) = self.tx.try_borrow_mut() else {
            return fail(PostErrorKind::Reentrant);
        };
        if archive.len() > tx.mem().max_payload() {
            return self.send_encoded(&mut tx, archive, fp, Vec::new(), true);
        }
        match self.when_room(&mut tx, wait, |tx| tx.try_write(archive, KIND_MESSAGE, fp)) {
            Ok(()) => {
                self.wake_reader(&tx.mem().ctrl().reader_sleeping);
                Ok(())
            }
            Err(kind) => fail(kind),
        }
    }

    /// Waits (or, with `block == false`, looks once) until `step` succeeds in writing to
    /// `tx`: each attempt first checks the peer and refreshes the consumer's index.
    /// `Err` when the peer is gone, or when not blocking and the ring is full.
    fn when_room(
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

    /// Posts a message with a transfer list: validates the list, encodes, then sends.
    fn post_with_transfers<T: Message>(
        &self,
        msg: &T,
        list: Vec<Transferable>,
        block: bool,
    ) -> Result<(), PostError> {
        if list.len() > MAX_TRANSFER_LIST {
            return Err(PostError::new(
                PostErrorKind::DataClone("transfer list longer than MAX_TRANSFER_LIST"),
                list,
            ));
        }
        let own = self.seg.identity();
        if list
            .iter()
            .any(|t| matches!(t, Transferable::Port(p) if p.seg.identity() == own))
        {
            // S8: the web silently dooms such a channel; we refuse and hand everything back.
            return Err(PostError::new(
                PostErrorKind::DataClone("a port cannot be posted to its own entangled peer"),
                list,
            ));
        }
        let (Ok(mut tx), Ok(mut arena), Ok(mut scratch)) = (
            self.tx.try_borrow_mut(),
            self.arena.try_borrow_mut(),
            self.tx_scratch.try_borrow_mut(),
        ) else {
            return Err(PostError::new(PostErrorKind::Reentrant, list));
        };
        let arena = arena.get_or_insert_with(Arena::new);
        if let Err(e) = codec::encode_to_vec(msg, &mut scratch, arena) {
            return Err(PostError::new(PostErrorKind::Encode(e), list));
        }
        let fp = self.send_fp.get::<T>();
        self.send_encoded(&mut tx, &scratch, fp, list, block)
    }

    /// Sends an encoded archive with a transfer list (possibly empty) as one transfer
    /// record plus one socket message carrying the descriptors; the archive goes outside
    /// the ring when it does not fit in a record. Nothing is sent unless all of it is.
    fn send_encoded(
        &self,
        tx: &mut Producer,
        archive: &[u8],
        fp: u64,
        list: Vec<Transferable>,
        block: bool,
    ) -> Result<(), PostError> {
        if self.peer_gone_cheap() {
            return Err(PostError::new(PostErrorKind::Disconnected, list));
        }
        let inline = transfer::archive_offset(list.len()) + archive.len() <= tx.mem().max_payload();
        let body = if inline {
            None
        } else {
            match ArrayBuffer::unpooled_copy(archive) {
                Ok(b) => Some(b),
                Err(Error::Os { source, .. }) => {
                    return Err(PostError::new(PostErrorKind::Os(source), list));
                }
                Err(_) => unreachable!("ArrayBuffer::unpooled_copy only fails in the OS"),
            }
        };
        // Moving ports need their sockets (created now if they never had one).
        let no_socket = list.iter().find_map(|t| match t {
            Transferable::Port(p) => p.parts().err(),
            Transferable::Buffer(_) => None,
        });
        if let Some(e) = no_socket {
            return Err(PostError::new(PostErrorKind::Os(e), list));
        }
        let mut items = Vec::with_capacity(list.len() + 1);
        let mut fds = Vec::with_capacity(2 * list.len() + 1);
        for t in &list {
            match t {
                Transferable::Port(p) => {
                    let Ok((seg, side, sock)) = p.parts() else {
                        continue; // unreachable: checked just above, and sockets stay set
                    };
                    items.push(Item {
                        kind: ITEM_PORT,
                        side: side as u32,
                        len: 0,
                        reserved: 0,
                    });
                    fds.push(seg.fd());
                    fds.push(sock);
                }
                Transferable::Buffer(b) => match b.wire() {
                    Wire::Empty => items.push(Item {
                        kind: ITEM_BUFFER,
                        side: 0,
                        len: 0,
                        reserved: 0,
                    }),
                    Wire::Own(fd) => {
                        items.push(Item {
                            kind: ITEM_BUFFER,
                            side: 0,
                            len: b.len() as u64,
                            reserved: 0,
                        });
                        fds.push(fd);
                    }
                    Wire::Slot {
                        heap_fd,
                        slot,
                        generation,
                    } => {
                        items.push(Item {
                            kind: ITEM_SLOT,
                            side: slot,
                            len: b.len() as u64,
                            reserved: u64::from(generation),
                        });
                        fds.push(heap_fd);
                    }
                },
            }
        }
        if let Some(b) = &body {
            items.push(Item {
                kind: ITEM_BODY,
                side: 0,
                len: b.len() as u64,
                reserved: 0,
            });
            if let Wire::Own(fd) = b.wire() {
                fds.push(fd);
            }
        }
        let seq = next_transfer_seq();
        let header = TransferHeader {
            seq,
            items: items.len() as u32,
            fds: fds.len() as u32,
            inline_len: if inline { archive.len() as u32 } else { 0 },
            reserved: 0,
        };
        let mut payload = AlignedVec::<16>::new();
        payload.extend_from_slice(bytemuck::bytes_of(&header));
        payload.extend_from_slice(bytemuck::cast_slice(&items));
        payload.resize(transfer::archive_offset(items.len()), 0);
        if inline {
            payload.extend_from_slice(archive);
        }
        // Room first: once the descriptors are on the socket, the record must follow.
        if let Err(kind) = self.when_room(tx, RoomWait::from(block), |tx| {
            tx.fits(payload.len()).is_some()
        }) {
            return Err(PostError::new(kind, list));
        }
        // Moving buffers' slots go in transit; moving ports publish their state before
        // anyone else can attach to it. Undone if the send fails.
        let undo = |list: &[Transferable], upto: usize| {
            for t in &list[..upto] {
                match t {
                    Transferable::Port(p) => p.unmark_moved(),
                    Transferable::Buffer(b) => b.unsend(),
                }
            }
        };
        for (i, t) in list.iter().enumerate() {
            let ok = match t {
                Transferable::Port(p) => {
                    p.prepare_move();
                    true
                }
                Transferable::Buffer(b) => b.begin_send(),
            };
            if !ok {
                undo(&list, i);
                let kind =
                    PostErrorKind::DataClone("a buffer's slot was rewritten by another process");
                return Err(PostError::new(kind, list));
            }
        }
        let mut note = [0u8; SOCKET_MESSAGE];
        note[..8].copy_from_slice(&seq.to_le_bytes());
        note[8..].copy_from_slice(&header.items.to_le_bytes());
        let sent = self
            .socket()
            .and_then(|sock| platform::send_with_fds(sock, &note, &fds, block));
        if let Err(e) = sent {
            undo(&list, list.len());
            let kind = match e.kind() {
                std::io::ErrorKind::WouldBlock => PostErrorKind::Full,
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    PostErrorKind::Disconnected
                }
                _ => PostErrorKind::Os(e),
            };
            return Err(PostError::new(kind, list));
        }
        drop(fds);
        if !tx.try_write(&payload, KIND_TRANSFER, fp) {
            // Room was reserved above and only we write this ring: unreachable unless the
            // shared indices were tampered with.
            self.poison(Corrupt("ring lost reserved room"));
            return Err(PostError::new(PostErrorKind::Disconnected, Vec::new()));
        }
        self.wake_reader(&tx.mem().ctrl().reader_sleeping);
        // The moved ports and buffers now live on the other side: drop our handles (the
        // ports are marked moved, so this closes nothing; the buffers free nothing).
        for t in list {
            if let Transferable::Buffer(b) = t {
                b.into_sent();
            }
        }
        drop(body);
        Ok(())
    }

    /// Rebuilds the objects of a transfer record whose payload is in `scratch`, then
    /// decodes the message. A framing problem (no matching socket message) poisons the
    /// channel; a bad object or archive is an error for this message only.
    fn receive_transfer<R>(
        &self,
        scratch: &mut AlignedVec<16>,
        tag: u64,
        decode: &mut Decoder<'_, R>,
    ) -> Result<MessageEvent<R>, TryRecvError> {
        let corrupt = |why| {
            self.poison(Corrupt(why));
            TryRecvError::MessageError(MessageError::Corrupt(why))
        };
        let (header, items) = transfer::parse(scratch).map_err(corrupt)?;
        let n = items.len();
        let mut note = [0u8; SOCKET_MESSAGE];
        let mut skipped = 0;
        let received = self.socket().and_then(|sock| {
            loop {
                // Doorbells (one byte, no descriptors) queued before the note are stale
                // news; a protocol-following writer leaves a few at most.
                match platform::recv_with_fds(sock, &mut note) {
                    Ok((n, fds))
                        if platform::is_doorbell(&note[..n], &fds)
                            && skipped < MAX_DOORBELLS_BEFORE_NOTE =>
                    {
                        skipped += 1;
                    }
                    other => break other,
                }
            }
        });
        let fds = match received {
            Ok((SOCKET_MESSAGE, fds)) => fds,
            _ => return Err(corrupt("transfer record without its descriptors")),
        };
        if note[..8] != header.seq.to_le_bytes() || fds.len() != header.fds as usize {
            return Err(corrupt("transfer record and descriptors out of step"));
        }
        let bad = |why| TryRecvError::MessageError(MessageError::Transfer(why));
        let mut fds = fds.into_iter();
        let mut ports = Vec::new();
        let mut buffers = Vec::new();
        let mut body = None;
        for (i, item) in items.iter().enumerate() {
            match item.kind {
                ITEM_PORT => {
                    let (Some(seg_fd), Some(sock)) = (fds.next(), fds.next()) else {
                        return Err(bad("a port without its descriptors"));
                    };
                    if item.side > 1 || !platform::is_socket(sock.as_fd()) {
                        return Err(bad("a port descriptor is malformed"));
                    }
                    let seg =
                        Segment::open(seg_fd).map_err(|_| bad("a port's segment is invalid"))?;
                    let port = MessagePort::attach(
                        Arc::new(seg),
                        item.side as usize,
                        Some(sock),
                        WaitStrategy::default(),
                    )
                    .map_err(|_| bad("a port's rings are invalid"))?;
                    ports.push(port);
                }
                ITEM_BUFFER if item.len == 0 => {
                    buffers.push(ArrayBuffer::new(0).map_err(|_| bad("empty buffer"))?)
                }
                ITEM_BUFFER => {
                    let fd = fds.next().ok_or(bad("a buffer without its descriptor"))?;
                    buffers.push(ArrayBuffer::from_received(fd, item.len).map_err(bad)?);
                }
                ITEM_SLOT => {
                    let fd = fds
                        .next()
                        .ok_or(bad("a buffer without its heap descriptor"))?;
                    let generation =
                        u32::try_from(item.reserved).map_err(|_| bad("bad generation"))?;
                    buffers.push(
                        ArrayBuffer::from_received_slot(fd, item.side, generation, item.len)
                            .map_err(bad)?,
                    );
                }
                ITEM_BODY if i + 1 == n && header.inline_len == 0 => {
                    let fd = fds
                        .next()
                        .ok_or(bad("a message body without its descriptor"))?;
                    body = Some(ArrayBuffer::from_received(fd, item.len).map_err(bad)?);
                }
                _ => return Err(bad("unknown or misplaced transfer item")),
            }
        }
        if fds.next().is_some() {
            return Err(bad("more descriptors than transfer items"));
        }
        let data = match body {
            Some(b) => {
                // Copy, then check: the sender still maps the body.
                scratch.clear();
                scratch.extend_from_slice(&b);
                decode(scratch, tag)
            }
            None => {
                let at = transfer::archive_offset(n);
                decode(&scratch[at..at + header.inline_len as usize], tag)
            }
        }?;
        Ok(MessageEvent {
            data,
            ports,
            buffers,
        })
    }

    /// Publishes this port's state for whoever attaches to its end next, and marks it moved
    /// so that dropping this handle closes nothing.
    pub(crate) fn prepare_move(&self) {
        if let Ok(mut rx) = self.rx.try_borrow_mut() {
            rx.flush();
        }
        self.moved.set(true);
    }

    /// Serializes `msg` directly into the ring if it fits now. `Ok(false)`: no room.
    fn write_in_place<T: Message>(
        &self,
        tx: &mut Producer,
        msg: &T,
        fp: u64,
        arena: &mut Arena,
    ) -> Result<bool, Corrupt> {
        let hint = self.size_hint.get();
        for round in 0..2 {
            let (here, wrapped) = tx.room();
            for wrap in [false, true] {
                let Some(room) = (if wrap { wrapped } else { here }) else {
                    continue;
                };
                if room < hint || (wrap && wrapped <= here) {
                    continue;
                }
                let Some(area) = tx.payload_area(wrap) else {
                    continue;
                };
                if let Some(len) = codec::encode_into(msg, area, arena) {
                    tx.commit(wrap, len, KIND_MESSAGE, fp);
                    if len != hint {
                        self.size_hint.set(len);
                    }
                    return Ok(true);
                }
            }
            if round == 0 {
                tx.refresh()?;
            }
        }
        Ok(false)
    }

    // ----- receiving -----------------------------------------------------------------

    /// Receives the next message, waiting until one arrives or the peer is gone.
    ///
    /// How it waits is set by [`set_wait_strategy`](Self::set_wait_strategy). A peer whose
    /// process died is noticed within 100 ms.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the peer is gone and every message it posted has
    /// been received (S15); [`RecvError::MessageError`] when the next message cannot be
    /// decoded as `T` (S6): that message is consumed and the port keeps working.
    pub fn recv<T: Message>(&self) -> Result<MessageEvent<T>, RecvError> {
        let mut decode = |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, &self.recv_fp);
        Self::untimed(self.recv_until(None, &mut decode))
    }

    fn untimed<R>(
        r: Result<MessageEvent<R>, RecvTimeoutError>,
    ) -> Result<MessageEvent<R>, RecvError> {
        match r {
            Ok(ev) => Ok(ev),
            Err(RecvTimeoutError::MessageError(e)) => Err(RecvError::MessageError(e)),
            Err(_) => Err(RecvError::Disconnected),
        }
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
        let mut decode = |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, &self.recv_fp);
        self.recv_until(Instant::now().checked_add(timeout), &mut decode)
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
            let archived = codec::access::<T>(bytes, tag, &self.recv_fp)?;
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
            let archived = codec::access::<T>(bytes, tag, &self.recv_fp)?;
            Ok(f.take().expect("one record per receive")(archived))
        };
        self.try_recv_with(true, &mut decode)
    }

    fn recv_until<R>(
        &self,
        deadline: Option<Instant>,
        decode: &mut Decoder<'_, R>,
    ) -> Result<MessageEvent<R>, RecvTimeoutError> {
        let decode = std::cell::RefCell::new(decode);
        let attempt = || match self.try_recv_with(false, *decode.borrow_mut()) {
            Err(TryRecvError::Empty) => None,
            Ok(ev) => Some(Ok(ev)),
            Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            Err(TryRecvError::MessageError(e)) => Some(Err(RecvTimeoutError::MessageError(e))),
        };
        let word = &self.seg.ring_ctrl(1 - self.side).reader_sleeping;
        let peer_dead = || {
            if self.check_liveness_now() {
                // Drain whatever the peer published before it went.
                Some(match self.try_recv_with(false, *decode.borrow_mut()) {
                    Ok(ev) => Ok(ev),
                    Err(TryRecvError::MessageError(e)) => Err(RecvTimeoutError::MessageError(e)),
                    Err(_) => Err(RecvTimeoutError::Disconnected),
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
        let mut decode = |bytes: &[u8], tag| codec::decode::<T>(bytes, tag, &self.recv_fp);
        self.try_recv_with(true, &mut decode)
    }

    fn try_recv_with<R>(
        &self,
        periodic_liveness: bool,
        decode: &mut Decoder<'_, R>,
    ) -> Result<MessageEvent<R>, TryRecvError> {
        if self.peer.get() == PeerState::Poisoned {
            return Err(TryRecvError::Disconnected);
        }
        let Ok(mut rx) = self.rx.try_borrow_mut() else {
            // Called from inside a Deserialize impl of a message on this same port.
            return Err(TryRecvError::Empty);
        };
        let record = match rx.peek() {
            Ok(Some(r)) => r,
            Ok(None) => {
                if rx.flush() {
                    wake(&rx.mem().ctrl().writer_sleeping);
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
        if rx.release(record) {
            wake(&rx.mem().ctrl().writer_sleeping);
        }
        drop(rx);
        let header = record.header;
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

    // ----- closing and liveness ------------------------------------------------------

    /// Closes the port. The peer still receives every message posted before (S14), then
    /// `Disconnected`. Dropping a port does the same.
    ///
    /// Closing consumes the port, so the web's runtime rules become compile errors: a
    /// closed port cannot be closed again (S14's idempotence has nothing to guard), used,
    /// or transferred (S17):
    ///
    /// ```compile_fail
    /// let ch = shmport::MessageChannel::new().unwrap();
    /// ch.port1.close();
    /// ch.port1.post_message(&1u8, []); // error[E0382]: use of moved value
    /// ```
    pub fn close(self) {
        drop(self);
    }

    /// True when the peer is known to be gone without asking the kernel.
    fn peer_gone_cheap(&self) -> bool {
        match self.peer.get() {
            PeerState::Alive => {
                // Acquire: pairs with the Release store in the peer's `Drop`, so every
                // record the peer published before closing is visible to our next peek.
                if self.seg.closed_flag(1 - self.side).load(Ordering::Acquire) != 0 {
                    self.peer.set(PeerState::Gone);
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }

    fn liveness_due(&self) -> bool {
        let n = self.liveness_countdown.get();
        if n <= 1 {
            self.liveness_countdown.set(LIVENESS_EVERY);
            true
        } else {
            self.liveness_countdown.set(n - 1);
            false
        }
    }

    /// Asks the kernel whether every descriptor of the peer's socket is closed (its process
    /// exited or was killed). One `poll` system call.
    fn check_liveness_now(&self) -> bool {
        if self.peer_gone_cheap() {
            return true;
        }
        // No socket yet: the peer is in this process (it would have left one for us when
        // it left), and its Drop sets the closed flag checked above.
        let sock = self.sock.get().or_else(|| {
            let deposited = self.seg.take_deposited_socket(self.side)?;
            Some(self.sock.get_or_init(|| deposited))
        });
        if sock.is_some_and(|s| platform::peer_hung_up(s.as_fd())) {
            self.peer.set(PeerState::Gone);
            true
        } else {
            false
        }
    }

    fn poison_rx(&self, rx: std::cell::RefMut<'_, Consumer>, c: Corrupt) -> TryRecvError {
        drop(rx);
        self.poison(c);
        TryRecvError::MessageError(MessageError::Corrupt(c.0))
    }

    /// Stops all use of a segment whose metadata is impossible, and tells the peer.
    fn poison(&self, _why: Corrupt) {
        self.peer.set(PeerState::Poisoned);
        self.announce_close();
    }

    fn announce_close(&self) {
        // Release: pairs with the peer's Acquire load in `peer_gone_cheap`.
        self.seg.closed_flag(self.side).store(1, Ordering::Release);
        // The peer may sleep waiting for data from us or for room in the ring it fills.
        self.wake_reader(&self.seg.ring_ctrl(self.side).reader_sleeping);
        wake(&self.seg.ring_ctrl(1 - self.side).writer_sleeping);
    }

    /// Wakes the peer waiting for data in the ring we write: a futex wake if it sleeps, a
    /// doorbell on its socket if it waits in a [`PortSet`](crate::PortSet) or a future.
    #[inline]
    fn wake_reader(&self, word: &crate::sync::AtomicU32) {
        if wake(word) & WANTS_DOORBELL != 0 {
            self.ring_doorbell();
        }
    }

    #[cold]
    fn ring_doorbell(&self) {
        if let Ok(sock) = self.socket() {
            platform::ring_doorbell(sock);
        }
    }

    // ----- waiting outside the port: PortSet and async ------------------------------------

    pub(crate) fn recv_fp(&self) -> &FingerprintCache {
        &self.recv_fp
    }

    /// A receive future or stream was dropped: the reactor forgets its task's waker.
    pub(crate) fn forget_waker(&self) {
        if let Some(reg) = self.async_reg.get() {
            reg.clear_waker();
        }
    }

    /// One poll of an async receive: a queued message is returned at once; otherwise the
    /// task's waker is left with the reactor and the doorbell armed. Only a `Ready` result
    /// takes anything from the ring, so dropping the future between polls loses nothing.
    pub(crate) fn poll_recv_with<R>(
        &self,
        cx: &mut std::task::Context<'_>,
        decode: &mut Decoder<'_, R>,
    ) -> std::task::Poll<Result<MessageEvent<R>, RecvError>> {
        use std::task::Poll;
        let done = |r: Result<MessageEvent<R>, TryRecvError>| match r {
            Ok(ev) => Some(Ok(ev)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
            Err(TryRecvError::MessageError(e)) => Some(Err(RecvError::MessageError(e))),
        };
        if let Some(r) = done(self.try_recv_with(true, decode)) {
            return Poll::Ready(r);
        }
        let reg = match self.async_reg.get() {
            Some(reg) => reg,
            None => {
                let made = self
                    .socket()
                    .and_then(|sock| crate::reactor::Registration::new(sock));
                match made {
                    Ok(reg) => self.async_reg.get_or_init(|| reg),
                    Err(e) => return Poll::Ready(Err(RecvError::Os(e))),
                }
            }
        };
        let hung_up = reg.set_waker(cx.waker());
        let more_doorbells = self.drain_doorbells();
        if self.ready_or_arm(hung_up) {
            if let Some(r) = done(self.try_recv_with(false, decode)) {
                return Poll::Ready(r);
            }
            // Readable a moment ago, empty now: cannot happen with one consumer, but if it
            // did, ask to be polled again rather than sleep through news.
            cx.waker().wake_by_ref();
        } else if more_doorbells {
            // A flood of doorbells: drain the rest at the next poll, yielding in between.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// The descriptor that becomes readable when this port has news: the socket a peer
    /// rings (created on first need, see [`socket`](Self::socket)).
    pub(crate) fn news_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        self.socket()
    }

    /// Consumes the doorbells at the head of this port's socket (descriptor-passing notes
    /// stay), at most a bounded number per call, so a peer flooding us cannot hold this
    /// thread (and a whole `PortSet`). True when more may be queued.
    pub(crate) fn drain_doorbells(&self) -> bool {
        self.sock.get().is_some_and(|sock| {
            platform::drain_doorbells(sock.as_fd(), DOORBELLS_PER_DRAIN) == DOORBELLS_PER_DRAIN
        })
    }

    /// Clears this port's doorbell request (it leaves a `PortSet`).
    pub(crate) fn disarm(&self) {
        self.seg
            .ring_ctrl(1 - self.side)
            .reader_sleeping
            .fetch_and(!WANTS_DOORBELL, Ordering::Relaxed);
    }

    /// True when a receive would not find the queue empty now: a record is queued, the
    /// peer is gone (a receive says `Disconnected`) or the channel is poisoned. `hung_up`:
    /// the socket reported a hang-up, so ask the kernel whether the peer process is gone.
    pub(crate) fn readable_now(&self, hung_up: bool) -> bool {
        if self.peer.get() != PeerState::Alive || (hung_up && self.check_liveness_now()) {
            return true;
        }
        let Ok(mut rx) = self.rx.try_borrow_mut() else {
            return false;
        };
        match rx.peek() {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => self.peer_gone_cheap(),
        }
    }

    /// Receives the next record's archive and type tag without decoding it (a
    /// `BroadcastChannel` keeps it while it waits to post), copied into private memory.
    pub(crate) fn try_recv_raw(&self) -> Result<(AlignedVec<16>, u64), TryRecvError> {
        let mut copy = |bytes: &[u8], tag: u64| {
            let mut v = AlignedVec::<16>::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            Ok((v, tag))
        };
        self.try_recv_with(true, &mut copy).map(|ev| ev.data)
    }

    /// True when the peer is gone (asking the kernel) and nothing it posted is left.
    pub(crate) fn peer_gone_and_drained(&self) -> bool {
        if !self.check_liveness_now() {
            return false;
        }
        self.rx
            .try_borrow_mut()
            .is_ok_and(|mut rx| matches!(rx.peek(), Ok(None)))
    }

    /// [`readable_now`](Self::readable_now), and when not: asks the peer to ring our
    /// socket at its next post or close, then looks once more (the doorbell request and the
    /// peer's publication are ordered by the same fences as a futex sleep, see `wake`).
    /// `false` means the socket will become readable when news arrives.
    pub(crate) fn ready_or_arm(&self, hung_up: bool) -> bool {
        if self.readable_now(hung_up) {
            return true;
        }
        if let Ok(mut rx) = self.rx.try_borrow_mut() {
            // Publish what we consumed, so a writer waiting for room is not left waiting.
            if rx.flush() {
                wake(&rx.mem().ctrl().writer_sleeping);
            }
        }
        let word = &self.seg.ring_ctrl(1 - self.side).reader_sleeping;
        word.fetch_or(WANTS_DOORBELL, Ordering::Relaxed);
        // SeqCst fence: pairs with the writer's fence in `wake`: either it sees our bit and
        // rings, or we see its record below.
        crate::sync::fence(Ordering::SeqCst);
        if self.readable_now(false) {
            // Not waiting after all: withdraw the request, or the writer would ring for
            // nothing at its next post, and doorbells would pile up on a busy port.
            self.disarm();
            return true;
        }
        false
    }

    /// What carries this end elsewhere: the segment, the side and the socket.
    pub(crate) fn parts(&self) -> std::io::Result<(&Segment, usize, BorrowedFd<'_>)> {
        Ok((&self.seg, self.side, self.socket()?))
    }

    /// This end's socket, created with its peer's on first need. A channel whose two ports
    /// live in one process needs none until one of them leaves (spawned or transferred)
    /// or posts a transfer; the first to need one creates the pair and leaves the other
    /// end with the segment, where the peer port picks it up.
    fn socket(&self) -> std::io::Result<BorrowedFd<'_>> {
        if let Some(s) = self.sock.get() {
            return Ok(s.as_fd());
        }
        let mine = self.seg.take_or_create_socket(self.side)?;
        Ok(self.sock.get_or_init(|| mine).as_fd())
    }

    /// Undoes [`prepare_move`](Self::prepare_move) when the move failed.
    pub(crate) fn unmark_moved(&self) {
        self.moved.set(false);
    }
}

/// A sequence number for a transfer record: unique per process and message, so that a
/// record and its socket message can be matched.
fn next_transfer_seq() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (u64::from(std::process::id()) << 40) ^ n
}

impl Drop for MessagePort {
    fn drop(&mut self) {
        // Before the socket closes, and also when the end moved on: the socket's open file
        // then lives on elsewhere, and our reactor must stop watching it.
        if let (Some(reg), Some(sock)) = (self.async_reg.take(), self.sock.get()) {
            reg.release(sock.as_fd());
        }
        if !self.moved.get() {
            self.announce_close();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::MessageChannel;
    use crate::codec::fingerprint_of;

    #[test]
    fn corrupt_archive_bytes_with_the_right_fingerprint_are_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let fp = fingerprint_of::<Vec<String>>();
        assert!(
            ch.port1
                .tx
                .borrow_mut()
                .try_write(&[0xff; 64], KIND_MESSAGE, fp)
        );
        ch.port1
            .post_message(&vec![String::from("ok")], [])
            .unwrap();
        assert!(matches!(
            ch.port2.recv::<Vec<String>>(),
            Err(RecvError::MessageError(MessageError::Invalid(_)))
        ));
        assert_eq!(ch.port2.recv::<Vec<String>>().unwrap().data, ["ok"]);
    }

    #[test]
    fn an_unknown_record_kind_is_a_message_error_and_the_port_keeps_working() {
        let ch = MessageChannel::new().unwrap();
        assert!(ch.port1.tx.borrow_mut().try_write(&[0; 16], 77, 0));
        ch.port1.post_message(&1u8, []).unwrap();
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::MessageError(MessageError::UnknownKind(77)))
        ));
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 1);
    }

    #[test]
    fn impossible_ring_metadata_is_reported_once_then_disconnected() {
        let ch = MessageChannel::new().unwrap();
        ch.port1.seg.ring(0).forge(0, 1, u32::MAX, KIND_MESSAGE);
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::MessageError(MessageError::Corrupt(_)))
        ));
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::Disconnected)
        ));
    }

    #[test]
    fn the_peer_of_a_poisoned_port_sees_disconnected() {
        let ch = MessageChannel::new().unwrap();
        ch.port1.seg.ring(0).forge(0, 1, 0, 0);
        assert!(ch.port2.try_recv::<u8>().is_err());
        assert!(
            ch.port1
                .post_message(&1u8, [])
                .unwrap_err()
                .is_disconnected()
        );
    }

    #[test]
    fn a_consumer_index_rewritten_by_the_peer_poisons_the_producer() {
        let ch = MessageChannel::builder().capacity(4096).build().unwrap();
        while ch.port1.try_post_message(&[0u8; 64], []).is_ok() {}
        ch.port1
            .seg
            .ring_ctrl(0)
            .head
            .store(1 << 40, Ordering::Relaxed);
        let err = ch.port1.post_message(&[0u8; 64], []).unwrap_err();
        assert!(err.is_disconnected(), "{err}");
    }
}

#[cfg(all(test, not(loom)))]
mod forged_transfer_tests {
    //! Transfer records as a buggy or hostile peer could write them.

    use super::*;
    use crate::MessageChannel;
    use crate::codec::fingerprint_of;

    /// Posts a transfer record with these items and descriptors, and an archive of `0u8`.
    fn post_raw(port: &MessagePort, items: &[Item], fds: &[BorrowedFd<'_>], with_note: bool) {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&0u8).unwrap();
        let seq = next_transfer_seq();
        let header = TransferHeader {
            seq,
            items: items.len() as u32,
            fds: fds.len() as u32,
            inline_len: archive.len() as u32,
            reserved: 0,
        };
        let mut payload = AlignedVec::<16>::new();
        payload.extend_from_slice(bytemuck::bytes_of(&header));
        payload.extend_from_slice(bytemuck::cast_slice(items));
        payload.resize(transfer::archive_offset(items.len()), 0);
        payload.extend_from_slice(&archive);
        if with_note {
            let mut note = [0u8; SOCKET_MESSAGE];
            note[..8].copy_from_slice(&seq.to_le_bytes());
            platform::send_with_fds(port.socket().unwrap(), &note, fds, true).unwrap();
        }
        assert!(
            port.tx
                .borrow_mut()
                .try_write(&payload, KIND_TRANSFER, fingerprint_of::<u8>())
        );
    }

    fn item(kind: u32, side: u32, len: u64, reserved: u64) -> Item {
        Item {
            kind,
            side,
            len,
            reserved,
        }
    }

    /// Posts a pooled buffer from port1 to port2: its slot, generation, and the event.
    fn deliver_a_pooled_buffer(ch: &MessageChannel) -> (u32, u32, MessageEvent<u8>) {
        let buf = ArrayBuffer::new(100).unwrap();
        let Wire::Slot {
            slot, generation, ..
        } = buf.wire()
        else {
            panic!("a 100-byte buffer is pooled")
        };
        ch.port1.post_message(&0u8, [buf.into()]).unwrap();
        (slot, generation, ch.port2.recv::<u8>().unwrap())
    }

    /// A 1 MiB buffer: large enough to have a region (and descriptor) of its own.
    fn own_region() -> ArrayBuffer {
        ArrayBuffer::new(1 << 20).unwrap()
    }

    fn own_fd(region: &ArrayBuffer) -> BorrowedFd<'_> {
        let Wire::Own(fd) = region.wire() else {
            panic!("a 1 MiB buffer has a region of its own")
        };
        fd
    }

    fn transfer_error(r: Result<MessageEvent<u8>, RecvError>) -> bool {
        matches!(r, Err(RecvError::MessageError(MessageError::Transfer(_))))
    }

    #[test]
    fn a_replayed_pooled_buffer_descriptor_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let (slot, generation, first) = deliver_a_pooled_buffer(&ch);
        // Replay the same descriptor: the slot is owned by the receiver now, not in transit.
        let (heap, ..) = crate::heap::allocate(0).unwrap();
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, slot, 100, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
        drop(first);
        ch.port1.post_message(&7u8, []).unwrap();
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 7);
    }

    #[test]
    fn a_slot_rewritten_to_in_transit_cannot_give_this_process_a_second_buffer_on_it() {
        let ch = MessageChannel::new().unwrap();
        let (slot, generation, _held) = deliver_a_pooled_buffer(&ch);
        // A hostile peer flips the slot back to "in transit" and replays the descriptor.
        let (heap, ..) = crate::heap::allocate(0).unwrap();
        let state = heap_state_word(&heap, slot);
        state.store((generation << 2) | 2, std::sync::atomic::Ordering::Relaxed);
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, slot, 100, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn a_slot_we_hold_that_a_peer_marks_free_is_never_allocated_again() {
        let a = ArrayBuffer::new(100).unwrap();
        let Wire::Slot { slot, .. } = a.wire() else {
            panic!("pooled")
        };
        let (heap, ..) = crate::heap::allocate(0).unwrap();
        heap_state_word(&heap, slot).store(0, std::sync::atomic::Ordering::Relaxed);
        let others: Vec<ArrayBuffer> = (0..600).map(|_| ArrayBuffer::new(100).unwrap()).collect();
        assert!(others.iter().all(|b| b.as_ptr() != a.as_ptr()));
    }

    fn heap_state_word(heap: &crate::heap::Heap, slot: u32) -> &std::sync::atomic::AtomicU32 {
        heap.state_for_tests(slot)
    }

    #[test]
    fn a_pooled_buffer_descriptor_out_of_the_heap_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let (heap, slot, generation) = crate::heap::allocate(0).unwrap();
        heap.send(slot, generation);
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, 1 << 20, 16, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, slot, 1 << 40, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn a_buffer_descriptor_longer_than_its_region_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let region = own_region();
        post_raw(
            &ch.port1,
            &[item(ITEM_BUFFER, 0, 2 << 20, 0)],
            &[own_fd(&region)],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn a_port_descriptor_that_is_not_a_segment_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let region = own_region();
        let fd = own_fd(&region);
        let (a, _b) = platform::socket_pair().unwrap();
        post_raw(
            &ch.port1,
            &[item(ITEM_PORT, 0, 0, 0)],
            &[fd, a.as_fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn fewer_descriptors_than_items_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        post_raw(&ch.port1, &[item(ITEM_BUFFER, 0, 10, 0)], &[], true);
        assert!(transfer_error(ch.port2.recv::<u8>()));
        ch.port1.post_message(&1u8, []).unwrap();
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 1);
    }

    #[test]
    fn a_transfer_record_without_its_descriptors_poisons_the_channel() {
        let ch = MessageChannel::new().unwrap();
        ch.port2.socket().unwrap(); // the pair exists, but nothing is sent on it
        post_raw(&ch.port1, &[item(ITEM_BUFFER, 0, 0, 0)], &[], false);
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::MessageError(MessageError::Corrupt(_)))
        ));
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::Disconnected)
        ));
    }

    #[test]
    fn a_flood_of_doorbells_is_drained_in_bounded_steps_and_harms_nothing() {
        let ch = MessageChannel::new().unwrap();
        ch.port2.news_fd().unwrap();
        let sock = ch.port1.socket().unwrap();
        for _ in 0..2 * DOORBELLS_PER_DRAIN {
            platform::ring_doorbell(sock); // the socket buffer may refuse some
        }
        let mut steps = 0;
        while ch.port2.drain_doorbells() {
            steps += 1;
            assert!(steps < 100, "the drain never ends");
        }
        assert!(steps >= 1, "a drain took more than its bound at once");
        ch.port1.post_message(&5u8, []).unwrap();
        assert_eq!(ch.port2.try_recv::<u8>().unwrap().data, 5);
    }

    #[test]
    fn a_few_doorbells_before_a_transfer_note_are_skipped() {
        let ch = MessageChannel::new().unwrap();
        ch.port2.news_fd().unwrap();
        for _ in 0..3 {
            platform::ring_doorbell(ch.port1.socket().unwrap());
        }
        let buf = ArrayBuffer::new(16).unwrap();
        ch.port1
            .post_message(&9u8, [Transferable::Buffer(buf)])
            .unwrap();
        let ev = ch.port2.recv::<u8>().unwrap();
        assert_eq!((ev.data, ev.buffers.len()), (9, 1));
    }
}
