//! Posting with a transfer list (or a message too large for the ring): one transfer record
//! in the ring plus one note on the socket carrying the moved objects' descriptors.

use std::os::fd::BorrowedFd;

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::shm::buffer::ArrayBuffer;
use crate::shm::buffer::Wire;
use crate::shm::heap::Heap;
use crate::shm::ring::{Corrupt, Producer};
use crate::sys;
use crate::sys::sync::Ordering;
use crate::wire::codec::{self, Message};
use crate::wire::transfer::{
    self, ITEM_BODY, ITEM_BODY_SLOT, ITEM_BODY_SLOT_KNOWN, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT,
    ITEM_SLOT_KNOWN, Item, KIND_TRANSFER, MAX_HEAPS_PER_CHANNEL, MAX_TRANSFER_LIST, NO_INDEX,
    SOCKET_MESSAGE, SlotRef, TransferHeader,
};

use super::*;

impl MessagePort {
    /// Posts a message with a transfer list: validates the list, encodes, then sends.
    pub(super) fn post_with_transfers<T: Message>(
        &self,
        msg: &T,
        list: Vec<Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        if let Err(kind) = self.check_transfer_list(&list) {
            return Err(PostError::new(kind, list));
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
            return Err(PostError::new(e.into(), list));
        }
        let fp = self.send_fp.get::<T>();
        self.send_encoded(&mut tx, &scratch, fp, list, wait)
    }

    /// Why `list` cannot go with a post from this port, if it cannot: too long, a port
    /// posted to its own entangled peer (S8: the web silently dooms such a channel; we
    /// refuse and hand everything back), or a port this process inherited through `fork`
    /// (its end is the parent's).
    pub(super) fn check_transfer_list(&self, list: &[Transferable]) -> Result<(), PostErrorKind> {
        if list.len() > MAX_TRANSFER_LIST {
            return Err(PostErrorKind::DataClone(
                "transfer list longer than MAX_TRANSFER_LIST",
            ));
        }
        let own = self.seg.identity();
        let mut ports = list.iter().filter_map(|t| match t {
            Transferable::Port(p) => Some(p),
            Transferable::Buffer(_) => None,
        });
        if ports.clone().any(|p| p.seg.identity() == own) {
            return Err(PostErrorKind::DataClone(
                "a port cannot be posted to its own entangled peer",
            ));
        }
        if ports.any(|p| !p.in_owner_process()) {
            return Err(PostErrorKind::WrongProcess);
        }
        Ok(())
    }

    /// Sends an encoded archive with a transfer list (possibly empty) as one transfer
    /// record plus one socket message carrying the descriptors; the archive goes outside
    /// the ring when it does not fit in a record. Nothing is sent unless all of it is.
    pub(super) fn send_encoded(
        &self,
        tx: &mut Producer,
        archive: &[u8],
        fp: u64,
        list: Vec<Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        let inline = transfer::archive_offset(list.len()) + archive.len() <= tx.mem().max_payload();
        if inline {
            return self.send_record(tx, Archive::Inline(archive), fp, list, wait);
        }
        match ArrayBuffer::body_copy(&[archive]) {
            Ok(body) => self.send_record(tx, Archive::Body(body), fp, list, wait),
            Err(e) => Err(PostError::new(PostErrorKind::Os(e.into_io()), list)),
        }
    }

    /// Sends a message whose archive was serialized straight into `body` (a buffer of
    /// this process's pool) as a transfer record without transfer list.
    pub(super) fn send_body(
        &self,
        tx: &mut Producer,
        body: ArrayBuffer,
        fp: u64,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        self.send_record(tx, Archive::Body(body), fp, Vec::new(), wait)
    }

    /// Sends one transfer record, its archive inline or in a body, with its note.
    fn send_record(
        &self,
        tx: &mut Producer,
        archive: Archive<'_>,
        fp: u64,
        list: Vec<Transferable>,
        wait: RoomWait,
    ) -> Result<(), PostError> {
        if self.peer_gone_cheap() {
            return Err(PostError::new(PostErrorKind::Disconnected, list));
        }
        let (inline, body) = match archive {
            Archive::Inline(bytes) => (Some(bytes), None),
            Archive::Body(body) => (None, Some(body)),
        };
        let Ok(mut payload) = self.tx_record.try_borrow_mut() else {
            return Err(PostError::new(PostErrorKind::Reentrant, list));
        };
        let tables = carried_tables(&list);
        let Described { fds, new_heaps, .. } =
            match self.describe_for_note(&list, body.as_ref(), &tables, &mut payload) {
                Ok(d) => d,
                Err(kind) => return Err(PostError::new(kind, list)),
            };
        let seq = next_transfer_seq();
        let items = finish_payload(&mut payload, seq, fds.len(), inline);
        // Room first: once the descriptors are on the socket, the record must follow.
        let bytes = buffers_of(&list)
            .chain(body.as_ref())
            .map(ArrayBuffer::len)
            .sum();
        let Ok(mut queued) = self.queued.try_borrow_mut() else {
            return Err(PostError::new(PostErrorKind::Reentrant, list));
        };
        if let Err(kind) = self.when_room_queued(tx, wait, payload.len(), bytes, &mut queued) {
            return Err(PostError::new(kind, list));
        }
        let Some(moves) = Moves::begin(&list, body.as_ref()) else {
            let kind = PostErrorKind::DataClone("a buffer's slot was rewritten by another process");
            return Err(PostError::new(kind, list));
        };
        // No descriptor, no note: the record says so (`fds == 0`).
        if !fds.is_empty() {
            let block = !matches!(wait, RoomWait::Never);
            if let Err(kind) = self.send_note(seq, items, &fds, block) {
                drop(moves);
                return Err(PostError::new(kind, list));
            }
        }
        moves.complete();
        drop(fds);
        self.heaps_sent.borrow_mut().extend(new_heaps);
        self.ask_for_head_near_bound(&mut queued, bytes);
        if !tx.try_write(&payload, KIND_TRANSFER, fp) {
            // Room was reserved above and only we write this ring: unreachable unless the
            // shared indices were tampered with.
            self.poison(Corrupt("ring lost reserved room"));
            return Err(PostError::new(PostErrorKind::Disconnected, Vec::new()));
        }
        queued.push(tx.written(), bytes);
        drop(queued);
        self.published(tx.mem());
        self.remember_in_flight(buffers_of(&list).chain(body.as_ref()));
        hand_over(list, body);
        Ok(())
    }

    /// The record's items and the note's descriptors for `list` and `body`, against the
    /// heaps the reader's table already holds; `DataClone` when one note cannot carry
    /// them all.
    fn describe_for_note<'a, 'p>(
        &self,
        list: &'a [Transferable],
        body: Option<&'a ArrayBuffer>,
        tables: &'a [Vec<Arc<Heap>>],
        payload: &'p mut AlignedVec<16>,
    ) -> Result<Described<'a, 'p>, PostErrorKind> {
        let sent = self.heaps_already_sent();
        let described = describe(list, body, tables, &sent, payload).map_err(PostErrorKind::Os)?;
        if described.fds.len() > sys::MAX_FDS_PER_MESSAGE {
            return Err(PostErrorKind::DataClone(
                "the transfer list needs more descriptors than one message carries",
            ));
        }
        Ok(described)
    }

    /// The heaps the reader's table holds, as this handle sent them; none after the reader
    /// lost registrations (it asks for the table to start over).
    fn heaps_already_sent(&self) -> std::cell::Ref<'_, Vec<(u64, u64)>> {
        let lost = &self.seg.ring_ctrl(self.side).heaps_lost;
        // Acquire: pairs with the reader's Release in `ask_writer_to_resend_heaps`.
        if lost.load(Ordering::Relaxed) != 0 && lost.swap(0, Ordering::Acquire) != 0 {
            self.heaps_sent.borrow_mut().clear();
        }
        self.heaps_sent.borrow()
    }

    /// Sends the note that pairs with transfer record `seq`: its sequence number, its item
    /// count, and the descriptors.
    fn send_note(
        &self,
        seq: u64,
        items: usize,
        fds: &[BorrowedFd<'_>],
        block: bool,
    ) -> Result<(), PostErrorKind> {
        let mut note = [0u8; SOCKET_MESSAGE];
        note[..8].copy_from_slice(&seq.to_le_bytes());
        note[8..].copy_from_slice(&(items as u32).to_le_bytes());
        let sent = self
            .socket()
            .and_then(|sock| sys::send_with_fds(sock, &note, fds, block));
        sent.map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => PostErrorKind::Full,
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                PostErrorKind::Disconnected
            }
            _ => PostErrorKind::Os(e),
        })
    }
}

/// Where a transfer record's archive travels.
enum Archive<'a> {
    /// In the record, after the items.
    Inline(&'a [u8]),
    /// In a buffer of its own, the record's last item.
    Body(ArrayBuffer),
}

/// What a transfer record says and its note carries.
struct Described<'a, 'p> {
    /// The record's payload: room for its header, then the items, written in place (no
    /// list of items is allocated per transfer).
    payload: &'p mut AlignedVec<16>,
    /// The note's descriptors, in item order; none means no note.
    fds: Vec<BorrowedFd<'a>>,
    /// Heaps this record registers in the receiver's heap table, after `sent`'s.
    new_heaps: Vec<(u64, u64)>,
}

impl<'a> Described<'a, '_> {
    fn item(&mut self, kind: u32, side: u32, len: usize, reserved: u64) {
        let item = Item {
            kind,
            side,
            len: len as u64,
            reserved,
        };
        self.payload.extend_from_slice(bytemuck::bytes_of(&item));
    }

    /// A pooled slot of `heap`: named by its index when the channel already carries the
    /// heap, else with its descriptor (registering it while the table has room).
    #[allow(clippy::too_many_arguments)]
    fn slot(
        &mut self,
        sent: &[(u64, u64)],
        heap: &'a Arc<Heap>,
        slot: u32,
        generation: u32,
        len: usize,
        (with_fd, known): (u32, u32),
    ) {
        let id = heap.identity();
        let known_at = sent.iter().chain(&self.new_heaps).position(|&h| h == id);
        let index = match known_at {
            Some(i) => {
                let r = SlotRef {
                    generation,
                    index: i as u32,
                };
                return self.item(known, slot, len, r.pack());
            }
            None if sent.len() + self.new_heaps.len() < MAX_HEAPS_PER_CHANNEL => {
                self.new_heaps.push(id);
                (sent.len() + self.new_heaps.len() - 1) as u32
            }
            None => NO_INDEX,
        };
        self.item(with_fd, slot, len, SlotRef { generation, index }.pack());
        self.fds.push(heap.fd());
    }
}

/// The heap tables of the moving ports, in list order: they travel with them, because
/// the records queued for a port name heaps by index.
fn carried_tables(list: &[Transferable]) -> Vec<Vec<Arc<Heap>>> {
    list.iter()
        .filter_map(|t| match t {
            Transferable::Port(p) => Some(p.heap_table_to_carry()),
            Transferable::Buffer(_) => None,
        })
        .collect()
}

/// The buffers of a transfer list.
fn buffers_of(list: &[Transferable]) -> impl Iterator<Item = &ArrayBuffer> {
    list.iter().filter_map(|t| match t {
        Transferable::Buffer(b) => Some(b),
        Transferable::Port(_) => None,
    })
}

/// The moved ports and buffers now live on the other side: drops our handles (the ports
/// are marked moved, so this closes nothing; the buffers, and a pooled body, which the
/// receiver frees after copying it, free nothing).
fn hand_over(list: Vec<Transferable>, body: Option<ArrayBuffer>) {
    for t in list {
        if let Transferable::Buffer(b) = t {
            b.into_sent();
        }
    }
    if let Some(b) = body {
        b.into_sent();
    }
}

/// The items of a transfer record and the descriptors of its note, in item order (a port
/// takes two plus its heap table, a buffer one or none, the body one or none). `sent`: the
/// heaps the receiver's table already holds. Moving ports get their sockets now, if they
/// never had one; `tables` holds each moving port's heap table, in list order.
fn describe<'a, 'p>(
    list: &'a [Transferable],
    body: Option<&'a ArrayBuffer>,
    tables: &'a [Vec<Arc<Heap>>],
    sent: &[(u64, u64)],
    payload: &'p mut AlignedVec<16>,
) -> std::io::Result<Described<'a, 'p>> {
    payload.clear();
    payload.extend_from_slice(&[0; HEADER_ROOM]);
    let mut d = Described {
        payload,
        // Empty until needed: a stream of pooled buffers carries no descriptor.
        fds: Vec::new(),
        new_heaps: Vec::new(),
    };
    let mut tables = tables.iter();
    for t in list {
        match t {
            Transferable::Port(p) => {
                let wire = p.wire()?;
                let table = tables.next().map_or(&[][..], Vec::as_slice);
                d.item(ITEM_PORT, wire.side.index() as u32, table.len(), 0);
                d.fds.extend([wire.segment, wire.socket]);
                d.fds.extend(table.iter().map(|h| h.fd()));
            }
            Transferable::Buffer(b) => match b.wire() {
                Wire::Empty => d.item(ITEM_BUFFER, 0, 0, 0),
                Wire::Own(fd) => {
                    d.item(ITEM_BUFFER, 0, b.len(), 0);
                    d.fds.push(fd);
                }
                Wire::Slot {
                    heap,
                    slot,
                    generation,
                } => d.slot(
                    sent,
                    heap,
                    slot,
                    generation,
                    b.len(),
                    (ITEM_SLOT, ITEM_SLOT_KNOWN),
                ),
            },
        }
    }
    if let Some(b) = body {
        match b.wire() {
            Wire::Slot {
                heap,
                slot,
                generation,
            } => {
                let kinds = (ITEM_BODY_SLOT, ITEM_BODY_SLOT_KNOWN);
                d.slot(sent, heap, slot, generation, b.len(), kinds);
            }
            Wire::Own(fd) => {
                d.item(ITEM_BODY, 0, b.len(), 0);
                d.fds.push(fd);
            }
            Wire::Empty => d.item(ITEM_BODY, 0, 0, 0),
        }
    }
    Ok(d)
}

/// Room for the header at the start of a transfer record's payload, before its items.
const HEADER_ROOM: usize = std::mem::size_of::<TransferHeader>();

/// Completes a transfer record's payload that [`describe`] left holding room for the
/// header, then the items: the header, and the archive when it is inline. Returns the
/// number of items.
fn finish_payload(
    payload: &mut AlignedVec<16>,
    seq: u64,
    fds: usize,
    inline: Option<&[u8]>,
) -> usize {
    let items = (payload.len() - HEADER_ROOM) / std::mem::size_of::<Item>();
    let header = TransferHeader {
        seq,
        items: items as u32,
        fds: fds as u32,
        inline_len: inline.map_or(0, |a| a.len() as u32),
        reserved: 0,
    };
    payload[..HEADER_ROOM].copy_from_slice(bytemuck::bytes_of(&header));
    payload.resize(transfer::archive_offset(items), 0);
    if let Some(archive) = inline {
        payload.extend_from_slice(archive);
    }
    items
}

/// The moves of a transfer list (and of a pooled body) in progress: moving ports have
/// published their state and are marked moved, moving buffers' slots are in transit.
/// Dropped without [`complete`](Moves::complete), every move is undone.
#[must_use = "dropping Moves undoes them"]
struct Moves<'a> {
    list: &'a [Transferable],
    begun: usize,
    body: Option<&'a ArrayBuffer>,
}

impl<'a> Moves<'a> {
    /// Begins every move, or none: `None` when a buffer's slot cannot go in transit.
    fn begin(list: &'a [Transferable], body: Option<&'a ArrayBuffer>) -> Option<Self> {
        let mut moves = Moves {
            list,
            begun: 0,
            body: None,
        };
        for t in list {
            if !t.begin_move() {
                return None; // `moves` undoes the ones begun
            }
            moves.begun += 1;
        }
        if let Some(b) = body {
            if !b.begin_send() {
                return None;
            }
            moves.body = Some(b);
        }
        Some(moves)
    }

    fn complete(self) {
        std::mem::forget(self);
    }
}

impl Drop for Moves<'_> {
    fn drop(&mut self) {
        for t in &self.list[..self.begun] {
            t.undo_move();
        }
        if let Some(b) = self.body {
            b.unsend();
        }
    }
}

/// A sequence number for a transfer record: unique per process and message, so that a
/// record and its socket message can be matched.
pub(super) fn next_transfer_seq() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (u64::from(sys::current_pid()) << 40) ^ n
}
