//! A single-producer single-consumer ring of variable-length records over raw memory.
//!
//! The memory is shared with another process that may be buggy or hostile, so:
//! - each side keeps its own index in a local variable and only *publishes* it; the shared
//!   copy of our own index is never read back (a peer could rewrite it);
//! - every value read from the peer (its index, a record header) is copied once, checked
//!   against the capacity and our own index, and only then used; an impossible value is a
//!   [`Corrupt`] error that poisons the channel, never an out-of-bounds access.
//!
//! Indices are monotonic byte positions (`u64`, which never wraps in practice: 2^64 bytes
//! at 100 GB/s is 5 years). `tail - head` is the number of bytes in use, so a full ring and
//! an empty ring are told apart without a spare slot (as in rtrb). Each side caches the
//! other's index and re-reads the shared one only when its cache says "full" or "empty".
//!
//! Records are a 16-byte [`RecordHeader`] then the payload, padded to 16 bytes. A record
//! never straddles the end of the data area: when it would, the producer writes a padding
//! record that fills the rest and places the record at offset 0. A record is published by
//! one `Release` store of the tail after all of its bytes are written, so a reader can never
//! observe a half-written record, and a producer killed mid-write publishes nothing.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use bytemuck::{Pod, Zeroable};

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Bytes of record header.
pub(crate) const RECORD_HEADER: usize = 16;
/// Records start at and are padded to multiples of this.
pub(crate) const RECORD_ALIGN: usize = 16;
/// The kind of a padding record (skipped by the consumer).
pub(crate) const KIND_PAD: u32 = 1;

/// The control block of one ring: producer and consumer indices on separate cache-line
/// pairs (128 bytes, against adjacent-line prefetch), each with the futex word the *other*
/// side sets when it sleeps.
#[repr(C, align(128))]
pub(crate) struct RingCtrl {
    /// Bytes ever published by the producer. Written by the producer only.
    pub tail: AtomicU64,
    /// 1 while the consumer sleeps (or is about to) waiting for data; the futex word.
    pub reader_sleeping: AtomicU32,
    pad0: [u8; 116],
    /// Bytes ever released by the consumer. Written by the consumer only.
    pub head: AtomicU64,
    /// 1 while the producer sleeps (or is about to) waiting for room; the futex word.
    pub writer_sleeping: AtomicU32,
    pad1: [u8; 116],
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RingCtrl>() == 256);
    assert!(align_of::<RingCtrl>() == 128);
    assert!(offset_of!(RingCtrl, tail) == 0);
    assert!(offset_of!(RingCtrl, reader_sleeping) == 8);
    assert!(offset_of!(RingCtrl, head) == 128);
    assert!(offset_of!(RingCtrl, writer_sleeping) == 136);
};

impl RingCtrl {
    /// A control block for an empty ring (for rings over heap memory in tests).
    #[cfg(any(test, loom))]
    pub(crate) fn new() -> Self {
        RingCtrl {
            tail: AtomicU64::new(0),
            reader_sleeping: AtomicU32::new(0),
            pad0: [0; 116],
            head: AtomicU64::new(0),
            writer_sleeping: AtomicU32::new(0),
            pad1: [0; 116],
        }
    }
}

/// The header in front of every record, copied out of the ring before it is looked at.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct RecordHeader {
    /// Payload bytes (not counting this header or padding).
    pub len: u32,
    /// Record kind: [`KIND_PAD`] or a codec kind. Zero is never valid.
    pub kind: u32,
    /// Kind-specific tag (the codec stores the message's type fingerprint here).
    pub tag: u64,
}

const _: () = assert!(std::mem::size_of::<RecordHeader>() == RECORD_HEADER);

/// The ring's metadata is impossible; the channel must be poisoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt(pub &'static str);

/// Where a ring lives: its control block and data area, which must stay valid (mapped) for
/// as long as any `Producer`/`Consumer` built from it is used.
#[derive(Clone, Copy)]
pub(crate) struct RingMem {
    ctrl: NonNull<RingCtrl>,
    data: NonNull<u8>,
    cap: usize,
}

impl RingMem {
    /// # Safety
    ///
    /// `ctrl` must point to a valid, aligned `RingCtrl`, and `data` to `cap` bytes, both
    /// valid for reads and writes until every user of this `RingMem` is gone. `cap` must be
    /// a non-zero multiple of [`RECORD_ALIGN`].
    pub(crate) unsafe fn new(ctrl: NonNull<RingCtrl>, data: NonNull<u8>, cap: usize) -> Self {
        debug_assert!(cap > 0 && cap % RECORD_ALIGN == 0);
        RingMem { ctrl, data, cap }
    }

    pub(crate) fn ctrl(&self) -> &RingCtrl {
        // SAFETY: valid and aligned for the lifetime of `self` (contract of `new`); all of
        // its shared fields are atomics, so a shared reference is sound even while the peer
        // writes them.
        unsafe { self.ctrl.as_ref() }
    }

    /// Largest record (header included) this ring accepts: half the capacity, so that a
    /// record always fits once the ring drains, even after a padding record.
    pub(crate) fn max_record(&self) -> usize {
        self.cap / 2 / RECORD_ALIGN * RECORD_ALIGN
    }

    /// Largest payload of one record.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_record() - RECORD_HEADER
    }

    fn read_header(&self, off: usize) -> RecordHeader {
        debug_assert!(off + RECORD_HEADER <= self.cap);
        // SAFETY: `off + 16 <= cap` (callers check), so the read is in bounds; the data area
        // is 16-aligned and `off` a multiple of 16. A volatile copy: the peer may be writing,
        // and whatever we get is checked before use.
        unsafe {
            self.data
                .as_ptr()
                .add(off)
                .cast::<RecordHeader>()
                .read_volatile()
        }
    }

    fn write_header(&self, off: usize, header: RecordHeader) {
        debug_assert!(off + RECORD_HEADER <= self.cap);
        // SAFETY: in bounds as above; the range [off, off+16) lies in the free part of the
        // ring, which the protocol gives to the producer alone until the tail is published.
        unsafe {
            self.data
                .as_ptr()
                .add(off)
                .cast::<RecordHeader>()
                .write(header)
        }
    }
}

/// Rounds a payload length up to the record size it occupies (header included).
pub(crate) fn record_size(payload: usize) -> usize {
    RECORD_HEADER + payload.next_multiple_of(RECORD_ALIGN)
}

/// The writing side of one ring.
pub(crate) struct Producer {
    mem: RingMem,
    tail: u64,
    tail_off: usize,
    head_cache: u64,
}

// SAFETY: a Producer is the only writer of its ring's free space and tail; moving it to
// another thread moves that role with it.
unsafe impl Send for Producer {}

impl Producer {
    /// Takes the producer role of a ring, starting from its published indices (a fresh
    /// ring, or one whose producer moved here from another process).
    pub(crate) fn attach(mem: RingMem) -> Result<Self, Corrupt> {
        let tail = mem.ctrl().tail.load(Ordering::Acquire);
        let head = mem.ctrl().head.load(Ordering::Acquire);
        check_indices(head, tail, mem.cap)?;
        Ok(Producer {
            mem,
            tail,
            tail_off: (tail % mem.cap as u64) as usize,
            head_cache: head,
        })
    }

    pub(crate) fn mem(&self) -> &RingMem {
        &self.mem
    }

    /// Re-reads the consumer's index.
    pub(crate) fn refresh(&mut self) -> Result<(), Corrupt> {
        // Acquire: pairs with the consumer's Release store in `Consumer::release`, so the
        // bytes it has finished copying out are not overwritten under it.
        let head = self.mem.ctrl().head.load(Ordering::Acquire);
        check_indices(head, self.tail, self.mem.cap)?;
        self.head_cache = head;
        Ok(())
    }

    /// Free bytes `(at the current position up to the end, at the start after a wrap)`
    /// according to the cached consumer index.
    fn free_regions(&self) -> (usize, usize) {
        let used = (self.tail - self.head_cache) as usize;
        let free = self.mem.cap - used;
        let to_end = self.mem.cap - self.tail_off;
        if free >= to_end {
            (to_end, free - to_end)
        } else {
            (free, 0)
        }
    }

    /// The largest payload placeable now, `(in place, after wrapping)`.
    pub(crate) fn room(&self) -> (usize, usize) {
        let (here, wrapped) = self.free_regions();
        let max = self.mem.max_payload();
        let fit = |bytes: usize| bytes.saturating_sub(RECORD_HEADER).min(max) / RECORD_ALIGN * RECORD_ALIGN;
        (fit(here), fit(wrapped))
    }

    /// True when a payload of `len` bytes can be placed now (in place or after wrapping).
    pub(crate) fn fits(&self, len: usize) -> Option<bool> {
        let (here, wrapped) = self.room();
        if len <= here {
            Some(false)
        } else if len <= wrapped {
            Some(true)
        } else {
            None
        }
    }

    /// The payload area of the next record: in place, or at the start of the ring when
    /// `wrap` is set. Its length is what [`room`](Self::room) reported.
    pub(crate) fn payload_area(&mut self, wrap: bool) -> &mut [MaybeUninit<u8>] {
        let (here, wrapped) = self.room();
        let (off, len) = if wrap {
            (0, wrapped)
        } else {
            (self.tail_off, here)
        };
        if len == 0 {
            return &mut [];
        }
        // SAFETY: `room` only reports bytes in the free part of the ring, which the protocol
        // gives to this producer alone (the consumer does not read past the published tail);
        // `off + 16 + len <= cap` by construction of `free_regions`. MaybeUninit: we make no
        // claim about the bytes' current contents. The borrow of `self` keeps the mapping
        // alive and prevents a second area from being handed out.
        unsafe {
            let start = self.mem.data.as_ptr().add(off + RECORD_HEADER);
            std::slice::from_raw_parts_mut(start.cast::<MaybeUninit<u8>>(), len)
        }
    }

    /// Publishes a record whose `len` payload bytes were written to `payload_area(wrap)`.
    pub(crate) fn commit(&mut self, wrap: bool, len: usize, kind: u32, tag: u64) {
        let (here, wrapped) = self.room();
        assert!(
            len <= if wrap { wrapped } else { here } && kind != 0 && kind != KIND_PAD,
            "shmport bug: commit of {len} bytes beyond the payload area"
        );
        if wrap {
            let rest = self.mem.cap - self.tail_off;
            self.mem.write_header(
                self.tail_off,
                RecordHeader {
                    len: (rest - RECORD_HEADER) as u32,
                    kind: KIND_PAD,
                    tag: 0,
                },
            );
            self.tail += rest as u64;
            self.tail_off = 0;
        }
        self.mem.write_header(
            self.tail_off,
            RecordHeader {
                len: len as u32,
                kind,
                tag,
            },
        );
        let size = record_size(len);
        self.tail += size as u64;
        self.tail_off += size;
        if self.tail_off == self.mem.cap {
            self.tail_off = 0;
        }
        // Release: pairs with the consumer's Acquire load in `Consumer::peek`; every byte of
        // the record (and of a padding header) is visible before the new tail is.
        self.mem.ctrl().tail.store(self.tail, Ordering::Release);
    }

    /// Copies `bytes` into one record if there is room now; returns whether it did.
    pub(crate) fn try_write(&mut self, bytes: &[u8], kind: u32, tag: u64) -> bool {
        let wrap = match self.fits(bytes.len()) {
            Some(wrap) => wrap,
            None => return false,
        };
        let area = self.payload_area(wrap);
        // SAFETY: `fits` guarantees `bytes.len() <= area.len()`; the regions cannot overlap
        // (one is ring memory owned by us, the other a caller's slice... or, if the caller
        // passed ring memory, it is not the free part we are writing).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), area.as_mut_ptr().cast::<u8>(), bytes.len())
        };
        self.commit(wrap, bytes.len(), kind, tag);
        true
    }
}

/// A record found by [`Consumer::peek`], valid until [`Consumer::release`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pub header: RecordHeader,
    payload_off: usize,
    next_head: u64,
}

impl Record {
    pub(crate) fn len(&self) -> usize {
        self.header.len as usize
    }
}

/// The reading side of one ring.
pub(crate) struct Consumer {
    mem: RingMem,
    head: u64,
    head_off: usize,
    tail_cache: u64,
}

// SAFETY: a Consumer is the only reader of its ring's published records and the only
// writer of its head; moving it to another thread moves that role with it.
unsafe impl Send for Consumer {}

impl Consumer {
    /// Takes the consumer role of a ring, starting from its published indices.
    pub(crate) fn attach(mem: RingMem) -> Result<Self, Corrupt> {
        let head = mem.ctrl().head.load(Ordering::Acquire);
        let tail = mem.ctrl().tail.load(Ordering::Acquire);
        check_indices(head, tail, mem.cap)?;
        Ok(Consumer {
            mem,
            head,
            head_off: (head % mem.cap as u64) as usize,
            tail_cache: head,
        })
    }

    pub(crate) fn mem(&self) -> &RingMem {
        &self.mem
    }

    fn refresh(&mut self) -> Result<(), Corrupt> {
        // Acquire: pairs with the producer's Release store in `Producer::commit`, making the
        // published records' bytes visible.
        let tail = self.mem.ctrl().tail.load(Ordering::Acquire);
        check_indices(self.head, tail, self.mem.cap)?;
        self.tail_cache = tail;
        Ok(())
    }

    /// The next record, if one is published. Padding is skipped (and released).
    pub(crate) fn peek(&mut self) -> Result<Option<Record>, Corrupt> {
        loop {
            if self.head == self.tail_cache {
                self.refresh()?;
                if self.head == self.tail_cache {
                    return Ok(None);
                }
            }
            // Both multiples of 16 and different, so at least one header is available.
            let avail = (self.tail_cache - self.head) as usize;
            let to_end = self.mem.cap - self.head_off;
            let header = self.mem.read_header(self.head_off);
            if header.kind == KIND_PAD {
                if header.len as usize != to_end - RECORD_HEADER || avail < to_end {
                    return Err(Corrupt("padding record of the wrong length"));
                }
                self.head += to_end as u64;
                self.head_off = 0;
                self.publish_head();
                continue;
            }
            if header.kind == 0 {
                return Err(Corrupt("record of kind zero"));
            }
            let size = record_size(header.len as usize);
            if header.len as usize > self.mem.max_payload() || size > to_end || size > avail {
                return Err(Corrupt("record length out of range"));
            }
            return Ok(Some(Record {
                header,
                payload_off: self.head_off + RECORD_HEADER,
                next_head: self.head + size as u64,
            }));
        }
    }

    /// Copies a peeked record's payload into `out` (replacing its contents).
    pub(crate) fn copy_payload(&self, record: &Record, out: &mut rkyv::util::AlignedVec<16>) {
        out.clear();
        out.reserve(record.len());
        // SAFETY: `peek` checked `payload_off + len <= cap`; the bytes are published (Acquire
        // on the tail) and, until `release`, the producer does not write them; `out` has
        // room for `len` bytes (reserved above) and is a different allocation.
        unsafe {
            let src = self.mem.data.as_ptr().add(record.payload_off);
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), record.len());
            out.set_len(record.len());
        }
    }

    /// Gives a record's bytes back to the producer.
    pub(crate) fn release(&mut self, record: Record) {
        debug_assert!(record.next_head > self.head && record.next_head <= self.tail_cache);
        let size = (record.next_head - self.head) as usize;
        self.head = record.next_head;
        self.head_off += size;
        if self.head_off == self.mem.cap {
            self.head_off = 0;
        }
        self.publish_head();
    }

    fn publish_head(&self) {
        // Release: pairs with the producer's Acquire load in `Producer::refresh`: our reads
        // of the released bytes happen before the producer may overwrite them.
        self.mem.ctrl().head.store(self.head, Ordering::Release);
    }
}

/// The invariant every pair of indices must satisfy; a peer that breaks it is corrupt.
fn check_indices(head: u64, tail: u64, cap: usize) -> Result<(), Corrupt> {
    if head > tail {
        return Err(Corrupt("consumer index ahead of producer index"));
    }
    if tail - head > cap as u64 {
        return Err(Corrupt("more bytes in use than the ring holds"));
    }
    if head % RECORD_ALIGN as u64 != 0 || tail % RECORD_ALIGN as u64 != 0 {
        return Err(Corrupt("index not on a record boundary"));
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A ring over heap memory: the same code path as shared memory, runnable under Miri.
    pub(crate) struct HeapRing {
        ctrl: Box<RingCtrl>,
        data: Vec<u128>,
    }

    impl HeapRing {
        pub(crate) fn new(cap: usize) -> Self {
            HeapRing {
                ctrl: Box::new(RingCtrl::new()),
                data: vec![0u128; cap / 16],
            }
        }

        pub(crate) fn mem(&mut self) -> RingMem {
            let cap = self.data.len() * 16;
            // SAFETY: both allocations live as long as `self`, which every test keeps alive
            // while it uses the producer and consumer built from this RingMem.
            unsafe {
                RingMem::new(
                    NonNull::from(&mut *self.ctrl),
                    NonNull::new(self.data.as_mut_ptr().cast()).unwrap(),
                    cap,
                )
            }
        }

        fn bytes_mut(&mut self) -> &mut [u8] {
            bytemuck::cast_slice_mut(&mut self.data)
        }
    }

    fn pop(c: &mut Consumer) -> Result<Option<(RecordHeader, Vec<u8>)>, Corrupt> {
        let Some(r) = c.peek()? else { return Ok(None) };
        let mut out = rkyv::util::AlignedVec::<16>::new();
        c.copy_payload(&r, &mut out);
        c.release(r);
        Ok(Some((r.header, out.to_vec())))
    }

    #[test]
    fn records_come_out_in_order_with_their_bytes() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        for i in 0..5u8 {
            assert!(p.try_write(&vec![i; i as usize * 7], 2, u64::from(i)));
        }
        for i in 0..5u8 {
            let (h, bytes) = pop(&mut c).unwrap().unwrap();
            assert_eq!((h.kind, h.tag), (2, u64::from(i)));
            assert_eq!(bytes, vec![i; i as usize * 7]);
        }
        assert_eq!(pop(&mut c).unwrap(), None);
    }

    #[test]
    fn a_full_ring_refuses_until_the_consumer_releases() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        let mut n = 0;
        while p.try_write(&[7; 100], 2, 0) {
            n += 1;
        }
        assert_eq!(n, 4096 / record_size(100));
        pop(&mut c).unwrap().unwrap();
        p.refresh().unwrap();
        assert!(p.try_write(&[7; 100], 2, 0));
    }

    #[test]
    fn records_never_straddle_the_end_and_survive_many_wraps() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        let miri = cfg!(miri);
        let rounds = if miri { 300 } else { 20_000 };
        let (mut sent, mut got) = (0u64, 0u64);
        let mut rng = 0x1234_5678u64;
        while got < rounds {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 700) as usize;
            p.refresh().unwrap();
            if p.try_write(&vec![sent as u8; len], 2, sent) {
                sent += 1;
            }
            if rng % 3 == 0 {
                while let Some((h, bytes)) = pop(&mut c).unwrap() {
                    assert_eq!(h.tag, got);
                    assert!(bytes.iter().all(|&b| b == got as u8));
                    got += 1;
                }
            }
        }
    }

    #[test]
    fn a_record_at_the_limit_fits_after_a_wrap() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        let max = ring.mem().max_payload();
        assert!(p.try_write(&[1; 16], 2, 0));
        pop(&mut c).unwrap();
        for _ in 0..10 {
            p.refresh().unwrap();
            assert!(p.try_write(&vec![9; max], 2, 0));
            assert_eq!(pop(&mut c).unwrap().unwrap().1.len(), max);
        }
    }

    #[test]
    fn a_producer_attached_later_continues_where_the_last_one_stopped() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        {
            let mut p = Producer::attach(ring.mem()).unwrap();
            for i in 0..30u64 {
                p.refresh().unwrap();
                if !p.try_write(&[1; 200], 2, i) {
                    pop(&mut c).unwrap();
                    p.refresh().unwrap();
                    assert!(p.try_write(&[1; 200], 2, i));
                }
            }
        }
        let mut p = Producer::attach(ring.mem()).unwrap();
        while pop(&mut c).unwrap().is_some() {}
        p.refresh().unwrap();
        assert!(p.try_write(&[2; 10], 2, 99));
        let mut c2 = Consumer::attach(ring.mem()).unwrap();
        assert_eq!(pop(&mut c2).unwrap().unwrap().0.tag, 99);
    }

    #[test]
    fn a_tail_past_capacity_poisons_instead_of_reading_out_of_bounds() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        ring.ctrl.tail.store(4096 + 16, Ordering::Relaxed);
        assert!(c.peek().is_err());
    }

    #[test]
    fn a_tail_off_a_record_boundary_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        ring.ctrl.tail.store(24, Ordering::Relaxed);
        assert!(c.peek().is_err());
    }

    #[test]
    fn a_head_ahead_of_the_tail_poisons_the_producer() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        ring.ctrl.head.store(64, Ordering::Relaxed);
        assert!(p.refresh().is_err());
    }

    #[test]
    fn a_record_length_past_the_published_bytes_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        assert!(p.try_write(&[0; 16], 2, 0));
        ring.bytes_mut()[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(c.peek().unwrap_err(), Corrupt("record length out of range"));
    }

    #[test]
    fn a_huge_record_length_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        assert!(p.try_write(&[0; 16], 2, 0));
        ring.bytes_mut()[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(c.peek().is_err());
    }

    #[test]
    fn a_padding_record_of_the_wrong_length_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        assert!(p.try_write(&[0; 16], 2, 0));
        ring.bytes_mut()[4..8].copy_from_slice(&KIND_PAD.to_le_bytes());
        assert_eq!(c.peek().unwrap_err(), Corrupt("padding record of the wrong length"));
    }

    #[test]
    fn a_zeroed_record_header_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        ring.ctrl.tail.store(32, Ordering::Relaxed);
        assert_eq!(c.peek().unwrap_err(), Corrupt("record of kind zero"));
    }

    #[test]
    fn impossible_indices_refuse_to_attach() {
        let mut ring = HeapRing::new(4096);
        ring.ctrl.head.store(32, Ordering::Relaxed);
        assert!(Consumer::attach(ring.mem()).is_err());
        assert!(Producer::attach(ring.mem()).is_err());
    }

    #[test]
    fn random_metadata_never_reads_out_of_bounds() {
        // Whatever the peer writes into the control block and the data area, peek either
        // returns an error, nothing, or a record inside the data area.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        for _ in 0..rounds {
            let mut ring = HeapRing::new(4096);
            let fill = next();
            for (i, b) in ring.bytes_mut().iter_mut().enumerate().take(256) {
                *b = (fill >> (i % 8 * 8)) as u8;
            }
            let hdr_len = (next() % 5000) as u32;
            let kind = (next() % 4) as u32;
            ring.bytes_mut()[0..4].copy_from_slice(&hdr_len.to_le_bytes());
            ring.bytes_mut()[4..8].copy_from_slice(&kind.to_le_bytes());
            let mut c = Consumer::attach(ring.mem()).unwrap();
            let tail = match next() % 3 {
                0 => next(),
                1 => next() % 8192,
                _ => next() % 512 * 16,
            };
            ring.ctrl.tail.store(tail, Ordering::Relaxed);
            if let Ok(Some(r)) = c.peek() {
                assert!(r.payload_off + r.len() <= 4096);
                let mut out = rkyv::util::AlignedVec::<16>::new();
                c.copy_payload(&r, &mut out);
            }
        }
    }
}
