//! Posting with a transfer list (or a message too large for the ring): one transfer record
//! in the ring plus one note on the socket carrying the moved objects' descriptors.

use std::os::fd::BorrowedFd;

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::shm::buffer::ArrayBuffer;
use crate::shm::buffer::Wire;
use crate::shm::ring::{Corrupt, Producer};
use crate::sys;
use crate::wire::codec::{self, Message};
use crate::wire::transfer::{
    self, ITEM_BODY, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT, Item, KIND_TRANSFER, MAX_TRANSFER_LIST,
    SOCKET_MESSAGE, TransferHeader,
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
        self.send_encoded(&mut tx, &scratch, fp, list, wait)
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
        if self.peer_gone_cheap() {
            return Err(PostError::new(PostErrorKind::Disconnected, list));
        }
        let inline = transfer::archive_offset(list.len()) + archive.len() <= tx.mem().max_payload();
        let body = match (!inline)
            .then(|| ArrayBuffer::unpooled_copy(archive))
            .transpose()
        {
            Ok(body) => body,
            Err(e) => return Err(PostError::new(PostErrorKind::Os(e.into_io()), list)),
        };
        let described = describe(&list, body.as_ref());
        let (items, fds) = match described {
            Ok(d) => d,
            Err(e) => return Err(PostError::new(PostErrorKind::Os(e), list)),
        };
        let seq = next_transfer_seq();
        let payload = record_payload(seq, &items, fds.len(), inline.then_some(archive));
        // Room first: once the descriptors are on the socket, the record must follow.
        if let Err(kind) = self.when_room(tx, wait, |tx| tx.fits(payload.len()).is_some()) {
            return Err(PostError::new(kind, list));
        }
        let Some(moves) = Moves::begin(&list) else {
            let kind = PostErrorKind::DataClone("a buffer's slot was rewritten by another process");
            return Err(PostError::new(kind, list));
        };
        if let Err(kind) = self.send_note(seq, items.len(), &fds, !matches!(wait, RoomWait::Never))
        {
            drop(moves);
            return Err(PostError::new(kind, list));
        }
        moves.complete();
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

/// The items of a transfer record and the descriptors of its note, in item order (a port
/// takes two, a buffer one or none, the body one). Moving ports get their sockets now, if
/// they never had one.
fn describe<'a>(
    list: &'a [Transferable],
    body: Option<&'a ArrayBuffer>,
) -> std::io::Result<(Vec<Item>, Vec<BorrowedFd<'a>>)> {
    let mut items = Vec::with_capacity(list.len() + 1);
    let mut fds = Vec::with_capacity(2 * list.len() + 1);
    let item = |kind, side, len: usize, reserved| Item {
        kind,
        side,
        len: len as u64,
        reserved,
    };
    for t in list {
        match t {
            Transferable::Port(p) => {
                let wire = p.wire()?;
                items.push(item(ITEM_PORT, wire.side as u32, 0, 0));
                fds.extend([wire.segment, wire.socket]);
            }
            Transferable::Buffer(b) => match b.wire() {
                Wire::Empty => items.push(item(ITEM_BUFFER, 0, 0, 0)),
                Wire::Own(fd) => {
                    items.push(item(ITEM_BUFFER, 0, b.len(), 0));
                    fds.push(fd);
                }
                Wire::Slot {
                    heap_fd,
                    slot,
                    generation,
                } => {
                    items.push(item(ITEM_SLOT, slot, b.len(), u64::from(generation)));
                    fds.push(heap_fd);
                }
            },
        }
    }
    if let Some(b) = body {
        items.push(item(ITEM_BODY, 0, b.len(), 0));
        if let Wire::Own(fd) = b.wire() {
            fds.push(fd);
        }
    }
    Ok((items, fds))
}

/// The payload of a transfer record: header, items, and the archive when it is inline.
fn record_payload(seq: u64, items: &[Item], fds: usize, inline: Option<&[u8]>) -> AlignedVec<16> {
    let header = TransferHeader {
        seq,
        items: items.len() as u32,
        fds: fds as u32,
        inline_len: inline.map_or(0, |a| a.len() as u32),
        reserved: 0,
    };
    let mut payload = AlignedVec::<16>::new();
    payload.extend_from_slice(bytemuck::bytes_of(&header));
    payload.extend_from_slice(bytemuck::cast_slice(items));
    payload.resize(transfer::archive_offset(items.len()), 0);
    if let Some(archive) = inline {
        payload.extend_from_slice(archive);
    }
    payload
}

/// The moves of a transfer list in progress: moving ports have published their state and
/// are marked moved, moving buffers' slots are in transit. Dropped without
/// [`complete`](Moves::complete), every move is undone.
#[must_use = "dropping Moves undoes them"]
struct Moves<'a> {
    list: &'a [Transferable],
    begun: usize,
}

impl<'a> Moves<'a> {
    /// Begins every move, or none: `None` when a buffer's slot cannot go in transit.
    fn begin(list: &'a [Transferable]) -> Option<Self> {
        let mut moves = Moves { list, begun: 0 };
        for t in list {
            if !t.begin_move() {
                return None; // `moves` undoes the ones begun
            }
            moves.begun += 1;
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
    }
}

/// A sequence number for a transfer record: unique per process and message, so that a
/// record and its socket message can be matched.
pub(super) fn next_transfer_seq() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (u64::from(std::process::id()) << 40) ^ n
}
