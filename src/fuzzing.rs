//! Entry points for the fuzz targets in `fuzz/` (built with `--cfg fuzzing`, as cargo-fuzz
//! does; not a public API).
//!
//! Each takes arbitrary bytes and runs the code that reads memory a peer controls. None may
//! panic, loop forever or touch memory out of bounds, whatever the bytes.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use rkyv::util::AlignedVec;

use crate::shm::ring::{Consumer, RingCtrl, RingMem};
use crate::wire::codec::{self, FingerprintCache, KIND_MESSAGE};
use crate::wire::nest::{Nest, Shape};
use crate::wire::transfer::{self, ITEM_SLOT};

const CAP: usize = 4096;
/// Decoding uses a receiving port's default depth limit.
const DEPTH: usize = codec::DEFAULT_MAX_DEPTH;

/// Record decoding: a ring whose data area holds `data` (repeated to fill it) and whose
/// consumer starts at an offset taken from the first bytes. Up to 64 records are read and
/// their payloads decoded as `Vec<u64>` and `String`.
pub fn ring_records(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let start = (u16::from_le_bytes([data[0], data[1]]) as usize % CAP) / 8 * 8;
    let mut words = vec![0u128; CAP / 16];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let fill = &data[2..];
    if !fill.is_empty() {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = fill[i % fill.len()];
        }
    }
    let ctrl = Box::new(RingCtrl::new());
    ctrl.head
        .store(start as u64, crate::sys::sync::Ordering::Relaxed);
    ctrl.tail
        .store(start as u64, crate::sys::sync::Ordering::Relaxed);
    // SAFETY: both allocations outlive every use of `mem` below (end of this function);
    // the data area is 16-aligned (u128) and CAP bytes long.
    let mem = unsafe {
        RingMem::new(
            NonNull::from(&*ctrl),
            NonNull::new(words.as_mut_ptr().cast()).expect("vec pointer"),
            CAP,
        )
    };
    let Ok(mut consumer) = Consumer::attach(mem) else {
        return;
    };
    let fingerprints = FingerprintCache::new();
    let mut scratch = AlignedVec::<16>::new();
    for _ in 0..64 {
        let Ok(Some(record)) = consumer.peek() else {
            return;
        };
        consumer.copy_payload(&record, &mut scratch);
        consumer.release(record);
        if record.header.kind == KIND_MESSAGE {
            let _ = codec::decode::<Vec<u64>>(&scratch, record.header.tag, &fingerprints, DEPTH);
            let _ = codec::decode::<String>(&scratch, record.header.tag, &fingerprints, DEPTH);
            let _ = codec::decode::<Vec<u64>>(
                &scratch,
                codec::fingerprint_of::<Vec<u64>>(),
                &fingerprints,
                DEPTH,
            );
            let _ = codec::decode::<String>(
                &scratch,
                codec::fingerprint_of::<String>(),
                &fingerprints,
                DEPTH,
            );
        }
    }
}

/// The segment header: `data` becomes a sealed shared-memory object that is opened (and
/// validated) as a received channel segment, then attached on both sides.
pub fn segment_header(data: &[u8]) {
    let Ok(fd) = rustix::fs::memfd_create(
        "shmport-fuzz",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    ) else {
        return;
    };
    let mut file = std::fs::File::from(fd);
    // Lengths around the valid ones: the header's claims must match the real size.
    let len = match data.first().map(|b| b % 4) {
        Some(0) => crate::shm::segment::Segment::len_for(4096),
        Some(1) => crate::shm::segment::Segment::len_for(8192),
        _ => data.len(),
    };
    let mut image = data.to_vec();
    image.resize(len, 0);
    if file.write_all(&image).is_err() {
        return;
    }
    let _ = rustix::fs::fcntl_add_seals(
        &file,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
    );
    if let Ok(seg) = crate::shm::segment::Segment::open(OwnedFd::from(file)) {
        let seg = std::sync::Arc::new(seg);
        use crate::shm::segment::Side;
        for side in [Side::ZERO, Side::ONE] {
            if let Ok(port) =
                crate::MessagePort::attach(seg.clone(), side, None, Default::default())
            {
                let _ = port.try_recv::<Vec<u64>>();
                port.depart().complete(); // do not mark the fuzzed segment closed
            }
        }
    }
}

/// The broadcast segment: `data` becomes a sealed shared-memory object opened (and
/// validated) as a received `BroadcastChannel` segment; every active cursor of its first
/// slots then becomes a reader, which reads and decodes up to 64 records.
pub fn broadcast_segment(data: &[u8]) {
    use crate::shm::fanout::{self, Registry};
    let Ok(fd) = rustix::fs::memfd_create(
        "shmport-fuzz",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    ) else {
        return;
    };
    let mut file = std::fs::File::from(fd);
    // Lengths around the valid ones: the header's claims must match the real size.
    let len = match data.first().map(|b| b % 4) {
        Some(0) => fanout::len_for(1, 4096),
        Some(1) => fanout::len_for(2, 4096),
        _ => data.len(),
    };
    let mut image = data.to_vec();
    image.resize(len, 0);
    if file.write_all(&image).is_err() {
        return;
    }
    let _ = rustix::fs::fcntl_add_seals(
        &file,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
    );
    let Ok(reg) = Registry::open(OwnedFd::from(file)) else {
        return;
    };
    let fingerprints = FingerprintCache::new();
    let mut scratch = AlignedVec::<16>::new();
    let slots = reg.slots().min(2);
    for k in 0..slots {
        let _ = reg.slot(k).word.load(crate::sys::sync::Ordering::Relaxed);
        for i in 0..slots {
            let pos = reg
                .cursor(k, i)
                .pos
                .load(crate::sys::sync::Ordering::Relaxed);
            let Ok(mut reader) = reg.reader(k, i, pos) else {
                continue;
            };
            for _ in 0..64 {
                let Ok(Some(record)) = reader.peek() else {
                    break;
                };
                reader.copy_payload(&record, &mut scratch);
                reader.release(record);
                let tag = record.header.tag;
                let _ = codec::decode::<Vec<u64>>(&scratch, tag, &fingerprints, DEPTH);
                let _ = codec::decode::<String>(&scratch, tag, &fingerprints, DEPTH);
            }
            let _ = reader.unread();
            reader.flush();
        }
    }
}

/// Descriptor validation: `data` is a transfer record's payload. Its framing is parsed as
/// the receiver does; pooled-buffer items are then checked against a real heap (slot,
/// generation and length), and the inline archive decoded.
pub fn transfer_record(data: &[u8]) {
    let mut payload = AlignedVec::<16>::new();
    payload.extend_from_slice(data);
    let Ok((header, items)) = transfer::parse(&payload) else {
        return;
    };
    let Ok(Some((heap, slot, generation))) = crate::shm::heap::allocate(0) else {
        return;
    };
    heap.send(slot, generation);
    // The items against a heap table holding that heap: indices named, registered out of
    // order or beyond the table, slots and generations forged (no descriptors: an item
    // that needs one fails).
    let mut table = vec![Some(heap.clone())];
    let _ = crate::port::transfer_in::rebuild_without_descriptors(&header, &items, &mut table);
    for item in items.iter() {
        if item.kind == ITEM_SLOT {
            let generation = transfer::SlotRef::unpack(item.reserved).generation;
            if heap.receive(item.side, generation, item.len).is_ok() {
                heap.forget_held(item.side);
                heap.release(item.side, generation);
            }
        }
    }
    heap.unsend(slot, generation);
    heap.forget_held(slot);
    heap.release(slot, generation);
    let at = transfer::archive_offset(items.len());
    let archive = &payload[at..at + header.inline_len as usize];
    let fingerprints = FingerprintCache::new();
    let fp = codec::fingerprint_of::<Vec<u64>>();
    let _ = codec::decode::<Vec<u64>>(archive, fp, &fingerprints, DEPTH);
}

/// The decoder on deep and wide archives: `data` picks a tree shape and its size (a chain
/// up to two million levels, a root with up to a million children, a comb, or any tree
/// described by the bytes themselves), the tree is archived (by hand, without recursion),
/// then bytes of it are flipped as the rest of `data` says, and it is decoded with the
/// default depth limit, as the tree type and as two others.
pub fn deep_archive(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let size = |bytes: &[u8], max: usize| {
        let mut word = [0u8; 4];
        let n = bytes.len().min(4);
        word[..n].copy_from_slice(&bytes[..n]);
        u32::from_le_bytes(word) as usize % max + 1
    };
    let (shape, mutations) = match kind % 4 {
        0 => (Shape::chain(size(rest, 2_000_000)), rest.get(4..)),
        1 => (Shape::wide(size(rest, 1_000_000)), rest.get(4..)),
        2 => (
            Shape::comb(
                size(rest, 100_000),
                size(rest.get(4..).unwrap_or(&[]), 8) - 1,
            ),
            rest.get(8..),
        ),
        _ => (described_tree(rest), None),
    };
    let mut archive = AlignedVec::<16>::new();
    archive.extend_from_slice(&shape.archive());
    for m in mutations.unwrap_or(&[]).chunks_exact(5) {
        let at = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) as usize % archive.len();
        archive[at] ^= m[4];
    }
    let fingerprints = FingerprintCache::new();
    let _ = codec::decode::<Nest>(
        &archive,
        codec::fingerprint_of::<Nest>(),
        &fingerprints,
        DEPTH,
    );
    let _ = codec::access::<Nest>(
        &archive,
        codec::fingerprint_of::<Nest>(),
        &fingerprints,
        DEPTH,
    );
    let _ = codec::decode::<Vec<u64>>(
        &archive,
        codec::fingerprint_of::<Vec<u64>>(),
        &fingerprints,
        DEPTH,
    );
    let _ = codec::decode::<String>(
        &archive,
        codec::fingerprint_of::<String>(),
        &fingerprints,
        DEPTH,
    );
}

/// A tree grown breadth-first: each byte gives the next node `byte % 8` children.
fn described_tree(bytes: &[u8]) -> Shape {
    let mut shape = Shape {
        children: vec![Vec::new()],
    };
    for (next, &b) in bytes.iter().enumerate() {
        if next == shape.children.len() {
            break;
        }
        for _ in 0..b % 8 {
            shape.children.push(Vec::new());
            let child = (shape.children.len() - 1) as u32;
            shape.children[next].push(child);
        }
    }
    shape
}
