//! Receiving a transfer record: matching it with its note, rebuilding the moved ports and
//! buffers (every descriptor checked), then decoding the message.

use std::os::fd::OwnedFd;

use rkyv::util::AlignedVec;

use crate::error::Error;
use crate::error::{MessageError, TryRecvError};
use crate::shm::buffer::ArrayBuffer;
use crate::shm::heap::{self, Heap};
use crate::shm::ring::Corrupt;
use crate::sys;
use crate::sys::sync::Ordering;
use crate::wire::doorbell;
use crate::wire::transfer::{
    self, ITEM_BODY, ITEM_BODY_SLOT, ITEM_BODY_SLOT_KNOWN, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT,
    ITEM_SLOT_KNOWN, Item, MAX_HEAPS_PER_CHANNEL, NO_INDEX, SOCKET_MESSAGE, SlotRef,
    TransferHeader,
};

use super::*;

/// Doorbells skipped before a transfer note: more than a socket buffer can hold (its
/// default fits a few hundred) means a peer flooding us, and the channel is poisoned.
pub(super) const MAX_DOORBELLS_BEFORE_NOTE: usize = 65_536;

/// What becomes of the out-of-ring body of the next transfer record received: copied into
/// the receive buffer (what every receive does), or, for a forwarder that asked
/// ([`MessagePort::try_recv_raw_in_place`]), handed over as it is.
#[derive(Debug, Default)]
pub(super) enum BodyHandOff {
    #[default]
    Copy,
    /// Hand it over: set for the one receive that asks.
    Keep,
    /// The body of the record that receive took.
    Kept(ArrayBuffer),
}

impl MessagePort {
    /// Rebuilds the objects of a transfer record whose payload is in `scratch`, then
    /// decodes the message. A framing problem (no matching socket message) poisons the
    /// channel; a bad object or archive, or a note whose descriptors the kernel could not
    /// install, is an error for this message only.
    pub(super) fn receive_transfer<R, D>(
        &self,
        scratch: &mut AlignedVec<16>,
        tag: u64,
        decode: &mut D,
    ) -> Result<MessageEvent<R>, TryRecvError>
    where
        D: FnMut(&[u8], u64) -> Result<R, MessageError> + ?Sized,
    {
        let corrupt = |why| {
            self.poison(Corrupt(why));
            TryRecvError::MessageError(MessageError::Corrupt(why))
        };
        let (header, items) = transfer::parse(scratch).map_err(corrupt)?;
        let bad = |why| TryRecvError::MessageError(MessageError::Transfer(why));
        let mut table = self.heaps_received.borrow_mut();
        let fds = match self.receive_note(&header) {
            Ok(fds) => fds,
            Err(Note::OutOfStep(why)) => return Err(corrupt(why)),
            // The note arrived in step, so the channel is intact: only this message's
            // objects are lost (the kernel closed the descriptors it could not install,
            // and those that fit are dropped here). Heaps it registered are lost too:
            // ask the writer to start its heap table over.
            Err(Note::Truncated) => {
                if lose_registrations(&items, &mut table) {
                    self.ask_writer_to_resend_heaps();
                }
                return Err(bad(DESCRIPTORS_LOST));
            }
        };
        let rebuilt = rebuild(&header, &items, fds, &mut table);
        drop(table);
        let n_items = items.len();
        drop(items); // borrowed from `scratch`, which a body's bytes replace below
        let Arrived {
            ports,
            buffers,
            body,
        } = rebuilt.map_err(bad)?;
        let data = match body {
            // No sender writes more; refusing it keeps what one message costs us bounded.
            Some(b) if b.len() > crate::wire::codec::MAX_ARCHIVE_LEN => {
                return Err(bad("a message body larger than an archive may be"));
            }
            Some(b) if matches!(self.body_hand_off.take(), BodyHandOff::Keep) => {
                // A forwarder asked for it as it is (`try_recv_raw_in_place`): nothing is
                // read here, so nothing needs a private copy. Only the raw receives ask,
                // and their decoder, given no bytes, only notes where the archive is not.
                self.body_hand_off.set(BodyHandOff::Kept(b));
                decode(&[], tag)
            }
            Some(b) => {
                // Copy, then check: the sender still maps the body.
                scratch.clear();
                scratch.extend_from_slice(&b);
                decode(scratch, tag)
            }
            None => {
                let at = transfer::archive_offset(n_items);
                decode(&scratch[at..at + header.inline_len as usize], tag)
            }
        }?;
        Ok(MessageEvent {
            data,
            ports,
            buffers,
        })
    }

    /// Receives the note that pairs with the transfer record `header`, skipping the stale
    /// doorbells queued before it. `OutOfStep` when there is none or it does not match:
    /// record and socket no longer agree, and the channel must be poisoned. `Truncated`
    /// when it matches but the kernel could not give us all its descriptors.
    fn receive_note(&self, header: &TransferHeader) -> Result<Vec<OwnedFd>, Note> {
        if header.fds == 0 {
            return Ok(Vec::new()); // nothing to carry: the writer sent no note
        }
        let mut note = [0u8; SOCKET_MESSAGE];
        let mut skipped = 0;
        let mut reset_seen = false;
        let received = self.socket().and_then(|sock| {
            loop {
                match sys::recv_with_fds(sock, &mut note) {
                    // Doorbells (one byte, no descriptors) queued before the note are stale
                    // news; a protocol-following writer leaves a few at most.
                    Ok(r)
                        if doorbell::is_doorbell(&note[..r.len], &r.fds)
                            && skipped < MAX_DOORBELLS_BEFORE_NOTE =>
                    {
                        skipped += 1;
                    }
                    // A writer that closed with doorbells of ours unread in its queue resets
                    // the connection: the kernel reports that once, before what it queued
                    // for us, which is still there.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !reset_seen => {
                        reset_seen = true;
                    }
                    other => break other,
                }
            }
        });
        let received = match received {
            Ok(r) if r.len == SOCKET_MESSAGE => r,
            _ => return Err(Note::OutOfStep("transfer record without its descriptors")),
        };
        if note[..8] != header.seq.to_le_bytes() {
            return Err(Note::OutOfStep(
                "transfer record and descriptors out of step",
            ));
        }
        if received.truncated {
            return Err(Note::Truncated);
        }
        if received.fds.len() != header.fds as usize {
            return Err(Note::OutOfStep(
                "transfer record and descriptors out of step",
            ));
        }
        Ok(received.fds)
    }
}

impl MessagePort {
    /// Tells the writer of the ring we read that heap registrations were lost here, so
    /// that it starts the heap table over.
    pub(super) fn ask_writer_to_resend_heaps(&self) {
        // Release: pairs with the writer's Acquire swap in `heaps_already_sent`.
        let ctrl = self.seg.ring_ctrl(self.side.peer());
        ctrl.heaps_lost.store(1, Ordering::Release);
    }
}

/// What [`MessagePort::receive_note`] found instead of the note of a record.
enum Note {
    OutOfStep(&'static str),
    Truncated,
}

/// The per-message error of a transfer whose descriptors the kernel cut off.
const DESCRIPTORS_LOST: &str = "the transferred objects were lost: this process had no free \
     descriptor when they arrived (RLIMIT_NOFILE), so the kernel could not hand them over";

/// The objects of one transfer record, rebuilt.
#[derive(Default)]
struct Arrived {
    ports: Vec<MessagePort>,
    buffers: Vec<ArrayBuffer>,
    body: Option<ArrayBuffer>,
}

/// The fuzz targets' way in: rebuilds a record's items against `table` with no
/// descriptors (so every item that needs one fails, and table lookups are exercised).
#[cfg(fuzzing)]
pub(crate) fn rebuild_without_descriptors(
    header: &TransferHeader,
    items: &[Item],
    table: &mut HeapTable,
) -> bool {
    rebuild(header, items, Vec::new(), table).is_ok()
}

/// A channel direction's heap table, as the receiving port holds it: `None` where a
/// registration's descriptor was lost (`wire::transfer`, "Heap tables").
pub(crate) type HeapTable = Vec<Option<Arc<Heap>>>;

/// Rebuilds every item of a transfer record from the note's descriptors, in item order,
/// registering the heaps that came with descriptors in `table` (all of them, even when an
/// item fails: the sender counts them as carried). `Err` names the first item that failed
/// its checks; what was rebuilt is dropped.
fn rebuild(
    header: &TransferHeader,
    items: &[Item],
    fds: Vec<OwnedFd>,
    table: &mut HeapTable,
) -> Result<Arrived, &'static str> {
    let mut fds = fds.into_iter();
    // Sized once (`parse` capped the item count): no growth step per buffer pushed.
    let buffers = items
        .iter()
        .filter(|i| matches!(i.kind, ITEM_BUFFER | ITEM_SLOT | ITEM_SLOT_KNOWN))
        .count();
    let mut arrived = Arrived {
        buffers: Vec::with_capacity(buffers),
        ..Arrived::default()
    };
    let mut first_error = None;
    for (i, item) in items.iter().enumerate() {
        let last = i + 1 == items.len() && header.inline_len == 0;
        if let Err(why) = rebuild_item(item, last, &mut fds, table, &mut arrived) {
            first_error.get_or_insert(why);
        }
    }
    if fds.next().is_some() {
        first_error.get_or_insert("more descriptors than transfer items");
    }
    match first_error {
        Some(why) => Err(why),
        None => Ok(arrived),
    }
}

/// Rebuilds one item into `arrived`. `last`: the item may be the message's body.
fn rebuild_item(
    item: &Item,
    last: bool,
    fds: &mut impl Iterator<Item = OwnedFd>,
    table: &mut HeapTable,
    arrived: &mut Arrived,
) -> Result<(), &'static str> {
    match item.kind {
        ITEM_PORT => arrived.ports.push(rebuild_port(item, fds)?),
        ITEM_BUFFER if item.len == 0 => arrived
            .buffers
            .push(ArrayBuffer::new(0).map_err(|_| "empty buffer")?),
        ITEM_BUFFER => {
            let fd = fds.next().ok_or("a buffer without its descriptor")?;
            arrived
                .buffers
                .push(ArrayBuffer::from_received(fd, item.len)?);
        }
        ITEM_SLOT | ITEM_SLOT_KNOWN => {
            let b = pooled(item, item.kind == ITEM_SLOT, fds, table)?;
            arrived.buffers.push(b);
        }
        ITEM_BODY if last => {
            let fd = fds.next().ok_or("a message body without its descriptor")?;
            arrived.body = Some(ArrayBuffer::from_received(fd, item.len)?);
        }
        ITEM_BODY_SLOT | ITEM_BODY_SLOT_KNOWN if last => {
            arrived.body = Some(pooled(item, item.kind == ITEM_BODY_SLOT, fds, table)?);
        }
        _ => return Err("unknown or misplaced transfer item"),
    }
    Ok(())
}

/// A moving port: its segment, its socket, and the heaps of its receive table.
fn rebuild_port(
    item: &Item,
    fds: &mut impl Iterator<Item = OwnedFd>,
) -> Result<MessagePort, &'static str> {
    if item.len > MAX_HEAPS_PER_CHANNEL as u64 {
        return Err("a port with more heaps than a channel carries");
    }
    let (Some(segment), Some(socket)) = (fds.next(), fds.next()) else {
        return Err("a port without its descriptors");
    };
    let heaps: Vec<OwnedFd> = fds.take(item.len as usize).collect();
    if heaps.len() as u64 != item.len {
        return Err("a port without its heap descriptors");
    }
    MessagePort::arrive(segment, socket, item.side as usize, heaps).map_err(|e| match e {
        Error::BadBootstrap(_) => "a port descriptor is malformed",
        Error::InvalidSegment(_) => "a port's segment or heaps are invalid",
        _ => "a port's rings are invalid",
    })
}

/// A pooled buffer or body: its heap from the item's descriptor (registered in `table`)
/// or, `with_fd == false`, from `table`; then the slot's ownership.
fn pooled(
    item: &Item,
    with_fd: bool,
    fds: &mut impl Iterator<Item = OwnedFd>,
    table: &mut HeapTable,
) -> Result<ArrayBuffer, &'static str> {
    let r = SlotRef::unpack(item.reserved);
    let heap = if with_fd {
        let fd = fds.next().ok_or("a buffer without its heap descriptor")?;
        let heap = heap::adopt(fd);
        register(table, r.index, heap.as_ref().ok().cloned())?;
        heap?
    } else {
        let known = table.get(r.index as usize).cloned().flatten();
        known.ok_or("a buffer names a heap this channel did not carry")?
    };
    ArrayBuffer::from_received_slot(heap, item.side, r.generation, item.len)
}

/// Puts `heap` at `index` of the table (`NO_INDEX`: nowhere). Indices come in order: at
/// most the table's length, which appends.
fn register(
    table: &mut HeapTable,
    index: u32,
    heap: Option<Arc<Heap>>,
) -> Result<(), &'static str> {
    if index == NO_INDEX {
        return Ok(());
    }
    let i = index as usize;
    if i > table.len() || i >= MAX_HEAPS_PER_CHANNEL {
        return Err("a heap registered out of order");
    }
    if i == table.len() {
        table.push(heap);
    } else {
        table[i] = heap;
    }
    Ok(())
}

/// The registrations of a record whose descriptors were lost: their table entries become
/// unusable. `true` when there was one (the writer must then start its table over).
fn lose_registrations(items: &[Item], table: &mut HeapTable) -> bool {
    let mut lost = false;
    for item in items {
        if matches!(item.kind, ITEM_SLOT | ITEM_BODY_SLOT) {
            let index = SlotRef::unpack(item.reserved).index;
            lost |= index != NO_INDEX && register(table, index, None).is_ok();
        }
    }
    lost
}
