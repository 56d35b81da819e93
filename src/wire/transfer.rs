//! The transfer list: what moves with a message instead of being copied.
//!
//! A message with a transfer list (or too large for the ring) travels as one record of kind
//! [`KIND_TRANSFER`] plus one message on the channel's socket. The socket message carries
//! the descriptors of the moved objects (`SCM_RIGHTS`): a port's segment and socket end, a
//! buffer's region, the out-of-ring body of a large message. The record carries what the
//! receiver needs to rebuild them, in order. The socket message is sent before the record is
//! published, so a receiver that sees the record always finds the descriptors; both carry
//! the same sequence number, so a desynchronized pair is detected, never mismatched.
//!
//! Payload of a `KIND_TRANSFER` record:
//!
//! ```text
//! TransferHeader (24 bytes) | Item x items (24 bytes each) | pad to 16 | archive (inline)
//! ```
//!
//! Descriptors are consumed in item order: a port takes two (segment, socket) plus one per
//! heap of its receive table (`len` of them), a buffer one (none when empty), a pooled
//! buffer or body one (its heap) the first time its heap crosses this channel direction and
//! none after that, a body of its own one. A record whose items need no descriptor has no
//! note on the socket (`fds == 0`).
//!
//! # Heap tables
//!
//! Each direction of a channel has a table of the heaps it has carried, held by the
//! receiving port: index `i` names the heap whose descriptor came with the item that
//! registered it (an `ITEM_SLOT` or `ITEM_BODY_SLOT` whose [`SlotRef`] has index `i`).
//! Later items name it by index alone (`ITEM_SLOT_KNOWN`, `ITEM_BODY_SLOT_KNOWN`), so a
//! pooled buffer's descriptor crosses the socket once per channel direction. Indices are
//! registered in order (an index is at most the table's length: equal appends, lower
//! replaces), at most [`MAX_HEAPS_PER_CHANNEL`]; past that a heap travels with its
//! descriptor every time ([`NO_INDEX`]). The table moves with the receiving port.

use std::borrow::Cow;

use bytemuck::{Pod, Zeroable};

/// Record kind of a message with a transfer list or an out-of-ring body.
pub(crate) const KIND_TRANSFER: u32 = 3;

/// Largest transfer list accepted (each port needs two descriptors, and one socket message
/// carries at most 250).
pub const MAX_TRANSFER_LIST: usize = 100;

/// Item kind: a port.
pub(crate) const ITEM_PORT: u32 = 1;
/// Item kind: an `ArrayBuffer`.
pub(crate) const ITEM_BUFFER: u32 = 2;
/// Item kind: the body of a message too large for the ring (at most one, last).
pub(crate) const ITEM_BODY: u32 = 3;
/// Item kind: a pooled `ArrayBuffer`: a slot (`side`) of a shared heap, under a generation
/// (`reserved`); the descriptor is the heap's.
pub(crate) const ITEM_SLOT: u32 = 4;
/// Item kind: the body of a message too large for the ring, in a pooled slot (`side`) of a
/// shared heap under a generation (`reserved`); the descriptor is the heap's. At most one,
/// last, like [`ITEM_BODY`].
pub(crate) const ITEM_BODY_SLOT: u32 = 5;
/// Item kind: as [`ITEM_SLOT`], of a heap in the channel's heap table: no descriptor.
pub(crate) const ITEM_SLOT_KNOWN: u32 = 6;
/// Item kind: as [`ITEM_BODY_SLOT`], of a heap in the channel's heap table: no descriptor.
pub(crate) const ITEM_BODY_SLOT_KNOWN: u32 = 7;

/// Most heaps in one channel direction's heap table.
pub(crate) const MAX_HEAPS_PER_CHANNEL: usize = 16;
/// A [`SlotRef`] index meaning "not in the table": the descriptor comes with the item.
pub(crate) const NO_INDEX: u32 = u32::MAX;

/// The `reserved` field of a pooled slot's item: the slot's generation (low 32 bits) and
/// the heap's index in the channel's heap table (high 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotRef {
    pub generation: u32,
    pub index: u32,
}

impl SlotRef {
    pub(crate) fn pack(self) -> u64 {
        u64::from(self.generation) | (u64::from(self.index) << 32)
    }

    pub(crate) fn unpack(reserved: u64) -> SlotRef {
        SlotRef {
            generation: reserved as u32,
            index: (reserved >> 32) as u32,
        }
    }
}

/// Fixed header of a transfer record's payload.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct TransferHeader {
    /// Pairs the record with its socket message.
    pub seq: u64,
    /// Number of [`Item`]s that follow.
    pub items: u32,
    /// Number of descriptors in the socket message.
    pub fds: u32,
    /// Length of the inline archive (0 when the body item carries it).
    pub inline_len: u32,
    pub reserved: u32,
}

/// One moved object.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Item {
    /// [`ITEM_PORT`], [`ITEM_BUFFER`] or [`ITEM_BODY`].
    pub kind: u32,
    /// For a port: its side (0 or 1) in its channel.
    pub side: u32,
    /// For a buffer or body: its length in bytes.
    pub len: u64,
    pub reserved: u64,
}

const _: () = assert!(std::mem::size_of::<TransferHeader>() == 24);
const _: () = assert!(std::mem::size_of::<Item>() == 24);

/// Bytes of a socket message: the sequence number and the item count.
pub(crate) const SOCKET_MESSAGE: usize = 12;

/// Offset of the inline archive in a payload with `items` items.
pub(crate) fn archive_offset(items: usize) -> usize {
    (24 + 24 * items).next_multiple_of(16)
}

/// Reads and checks the header and items of a transfer record's payload (copied out of the
/// ring). An error means the framing is impossible: the channel must be poisoned.
///
/// The items are borrowed from `payload` when it is 8-aligned (a port's receive buffer
/// is: no allocation per transfer), else copied.
pub(crate) fn parse(payload: &[u8]) -> Result<(TransferHeader, Cow<'_, [Item]>), &'static str> {
    if payload.len() < 24 {
        return Err("transfer record too short");
    }
    let header: TransferHeader = bytemuck::pod_read_unaligned(&payload[..24]);
    let n = header.items as usize;
    if n > MAX_TRANSFER_LIST + 1
        || header.fds as usize > crate::sys::MAX_FDS_PER_MESSAGE
        || archive_offset(n) + header.inline_len as usize > payload.len()
    {
        return Err("transfer record header out of range");
    }
    let bytes = &payload[24..24 + 24 * n];
    let items = match bytemuck::try_cast_slice(bytes) {
        Ok(items) => Cow::Borrowed(items),
        Err(_) => Cow::Owned(
            bytes
                .chunks_exact(24)
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        ),
    };
    Ok((header, items))
}
