//! Posting with a transfer list (or a message too large for the ring): one transfer record
//! in the ring plus one note on the socket carrying the moved objects' descriptors.

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::shm::buffer::Wire;
use crate::shm::ring::{Corrupt, Producer};
use crate::sys;
use crate::wire::codec::{self, Message};
use crate::wire::transfer::{
    self, ITEM_BODY, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT, Item, KIND_TRANSFER, MAX_TRANSFER_LIST,
    SOCKET_MESSAGE, TransferHeader,
};
use crate::{ArrayBuffer, Error};

use super::*;

impl MessagePort {
    /// Posts a message with a transfer list: validates the list, encodes, then sends.
    pub(super) fn post_with_transfers<T: Message>(
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
    pub(super) fn send_encoded(
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
            .and_then(|sock| sys::send_with_fds(sock, &note, &fds, block));
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
}

/// A sequence number for a transfer record: unique per process and message, so that a
/// record and its socket message can be matched.
pub(super) fn next_transfer_seq() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (u64::from(std::process::id()) << 40) ^ n
}
