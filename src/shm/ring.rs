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
//! an empty ring are told apart without a spare slot (as in rtrb).
//!
//! Records are a 24-byte [`RecordHeader`] then the payload, padded to 8 bytes. A record
//! never straddles the end of the data area: when it would, the producer writes a padding
//! record over the rest (or, when fewer than 24 bytes remain, leaves them: both sides skip
//! such a remainder) and places the record at offset 0.
//!
//! # Publication: the record's own mark, not a shared tail
//!
//! The consumer does not poll the producer's tail. Each header starts with a `mark`, the
//! record's position plus one, stored last with `Release` after every other byte of the
//! record; the consumer polls the mark at its head with `Acquire` and takes the record once
//! the mark equals `head + 1`. Before publishing a record the producer zeroes the mark slot
//! right after it (where the consumer will look next), so what the consumer polls is always
//! zero, a genuine mark of an earlier position, or the new mark: payload bytes of an earlier
//! lap, which may hold any value, can never pass for a mark. So a reader can never observe a
//! half-written record, a producer killed mid-write publishes nothing, and the cache line
//! the consumer waits on is the one that carries the data: one cache-line transfer per
//! small message instead of two (the tail's and the record's). The producer still stores
//! its tail (a line the consumer does not read), so that the producer role can be taken
//! over elsewhere (a transferred port) from the published state.
//!
//! The consumer publishes its head in batches (every eighth of the ring, and whenever it
//! finds the ring empty), keeping the head's line off the per-message path too.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use bytemuck::{Pod, Zeroable};

use crate::sys::sync::{AtomicU64, Ordering};

#[path = "ring_ctrl.rs"]
mod ctrl;
#[path = "ring_many.rs"]
mod many;
#[path = "ring_walk.rs"]
mod walk;

pub(crate) use ctrl::RingCtrl;

/// Bytes of record header.
pub(crate) const RECORD_HEADER: usize = 24;
/// Records start at and are padded to multiples of this.
pub(crate) const RECORD_ALIGN: usize = 8;
/// The kind of a padding record (skipped by the consumer).
pub(crate) const KIND_PAD: u32 = 1;

/// The header fields after the mark, copied out of the ring before they are looked at.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct RecordHeader {
    /// Payload bytes (not counting the header or padding).
    pub len: u32,
    /// Record kind: [`KIND_PAD`] or a codec kind. Zero is never valid.
    pub kind: u32,
    /// Kind-specific tag (the codec stores the message's type fingerprint here).
    pub tag: u64,
}

/// Offset of [`RecordHeader`] in a record, after the 8-byte mark.
const FIELDS_AT: usize = 8;
const _: () = assert!(FIELDS_AT + std::mem::size_of::<RecordHeader>() == RECORD_HEADER);

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
    /// Under loom, the mark words: one loom atomic per 8-byte slot of the data area. Loom's
    /// atomics are handles into its model, not memory that can be laid over bytes, so the
    /// marks live beside the data area instead of in it (see `with_loom_marks`).
    #[cfg(loom)]
    marks: Option<NonNull<AtomicU64>>,
}

impl RingMem {
    /// # Safety
    ///
    /// `ctrl` must point to a valid, aligned `RingCtrl`, and `data` to `cap` bytes aligned
    /// to 8, both valid for reads and writes until every user of this `RingMem` is gone.
    /// `cap` must be a non-zero multiple of [`RECORD_ALIGN`] no smaller than 4 headers.
    pub(crate) unsafe fn new(ctrl: NonNull<RingCtrl>, data: NonNull<u8>, cap: usize) -> Self {
        debug_assert!(cap >= 4 * RECORD_HEADER && cap % RECORD_ALIGN == 0);
        debug_assert!(data.as_ptr() as usize % RECORD_ALIGN == 0);
        RingMem {
            ctrl,
            data,
            cap,
            #[cfg(loom)]
            marks: None,
        }
    }

    /// Under loom: takes the mark words from `marks` instead of from the data area.
    ///
    /// # Safety
    ///
    /// `marks` must point to `cap / RECORD_ALIGN` atomics, valid until every user of this
    /// `RingMem` is gone.
    #[cfg(all(test, loom))]
    pub(crate) unsafe fn with_loom_marks(self, marks: NonNull<AtomicU64>) -> Self {
        RingMem {
            marks: Some(marks),
            ..self
        }
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

    /// The mark word of a record starting at `off` (under loom: its slot in the mark table).
    ///
    /// # Safety
    ///
    /// `off + RECORD_HEADER <= cap` and `off` is a multiple of `RECORD_ALIGN`.
    #[cfg(loom)]
    unsafe fn mark(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + RECORD_HEADER <= self.cap && off % RECORD_ALIGN == 0);
        let marks = self
            .marks
            .expect("a ring under loom needs RingMem::with_loom_marks");
        // SAFETY: `off < cap` (our contract), so the slot is one of the `cap / 8` atomics
        // the table holds (contract of `with_loom_marks`).
        unsafe { &*marks.as_ptr().add(off / RECORD_ALIGN) }
    }

    /// The mark word of a record starting at `off`.
    ///
    /// # Safety
    ///
    /// `off + RECORD_HEADER <= cap` and `off` is a multiple of `RECORD_ALIGN`.
    #[cfg(not(loom))]
    unsafe fn mark(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + RECORD_HEADER <= self.cap && off % RECORD_ALIGN == 0);
        // SAFETY: `off + 24 <= cap` (our contract) and `off` is 8-aligned in an 8-aligned
        // area, so this is an aligned, in-bounds 8-byte location. Every access to a mark is
        // atomic; the protocol gives the rest of the record's bytes to one side at a time,
        // so the plain writes of payload bytes never overlap a mark being polled.
        unsafe { &*self.data.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// A copy of the header fields of the record at `off`.
    ///
    /// # Safety
    ///
    /// As [`mark`](Self::mark).
    unsafe fn read_fields(&self, off: usize) -> RecordHeader {
        debug_assert!(off + RECORD_HEADER <= self.cap);
        // SAFETY: in bounds as in `mark` (our contract). A volatile copy: a hostile peer may be writing, and
        // whatever we get is checked before use.
        unsafe {
            self.data
                .as_ptr()
                .add(off + FIELDS_AT)
                .cast::<RecordHeader>()
                .read_volatile()
        }
    }

    /// Writes a whole record header, mark last (Release): the record is then published.
    ///
    /// # Safety
    ///
    /// As [`mark`](Self::mark), and `[off, off + 24)` lies in the free part of the ring,
    /// which the protocol gives to the producer alone until the mark is stored.
    unsafe fn publish(&self, off: usize, pos: u64, fields: RecordHeader) {
        debug_assert!(off + RECORD_HEADER <= self.cap);
        // SAFETY: in bounds and ours alone (our contract).
        unsafe {
            self.data
                .as_ptr()
                .add(off + FIELDS_AT)
                .cast::<RecordHeader>()
                .write(fields)
        };
        // Release: pairs with the consumer's Acquire load of the mark in `Consumer::peek`;
        // the header fields and every payload byte are visible before the mark is.
        // SAFETY: our contract is `mark`'s.
        unsafe { self.mark(off) }.store(pos + 1, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
impl RingMem {
    /// Publishes an arbitrary header at `off`, as a buggy or hostile producer could.
    pub(crate) fn forge(&self, off: usize, mark: u64, len: u32, kind: u32) {
        let fields = RecordHeader { len, kind, tag: 0 };
        assert!(off + RECORD_HEADER <= self.cap && off % RECORD_ALIGN == 0);
        // SAFETY: in bounds and aligned (asserted); the test owns the ring, so no producer
        // writes meanwhile.
        unsafe { self.publish(off, mark.wrapping_sub(1), fields) };
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
        // Acquire: pairs with the consumer's Release store in `Consumer::flush`, so the
        // bytes it has finished copying out are not overwritten under it.
        self.take_head(self.mem.ctrl().head.load(Ordering::Acquire))
    }

    /// Bytes ever written by this producer, and the consumer's index as last read
    /// ([`refresh`](Self::refresh)): a record written when `written()` was `w` has been
    /// taken by the reader once `consumed() >= w`.
    pub(crate) fn written(&self) -> u64 {
        self.tail
    }

    /// See [`written`](Self::written).
    pub(crate) fn consumed(&self) -> u64 {
        self.head_cache
    }

    /// Takes `head` as the consumer index, after the checks every peer value gets.
    fn take_head(&mut self, head: u64) -> Result<(), Corrupt> {
        check_indices(head, self.tail, self.mem.cap)?;
        if head < self.head_cache {
            return Err(Corrupt("consumer index moved backwards"));
        }
        self.head_cache = head;
        Ok(())
    }

    /// Free bytes `(at the current position up to the end, at the start after a wrap)`
    /// according to the cached consumer index.
    #[inline]
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

    /// The largest payload placeable now, `(in place, after wrapping)`; `None` where not
    /// even a header fits (distinct from `Some(0)`: room for an empty payload).
    #[inline]
    pub(crate) fn room(&self) -> (Option<usize>, Option<usize>) {
        let (here, wrapped) = self.free_regions();
        let max = self.mem.max_payload();
        let fit = |bytes: usize| {
            (bytes >= RECORD_HEADER)
                .then(|| (bytes - RECORD_HEADER).min(max) / RECORD_ALIGN * RECORD_ALIGN)
        };
        (fit(here), fit(wrapped))
    }

    /// Where a payload of `len` bytes can be placed now; `None`: not yet.
    pub(crate) fn fits(&self, len: usize) -> Option<Placement> {
        let (here, wrapped) = self.room();
        if here.is_some_and(|r| len <= r) {
            Some(Placement::InPlace)
        } else if wrapped.is_some_and(|r| len <= r) {
            Some(Placement::AfterWrap)
        } else {
            None
        }
    }

    /// Reserves the payload area of the next record where at least `min` bytes fit now, in
    /// place or else after a wrap, with all the room there. `None`: nowhere yet.
    #[inline]
    pub(crate) fn reserve_at_least(&mut self, min: usize) -> Option<Reservation<'_>> {
        let (at, room) = match self.room() {
            (Some(here), _) if here >= min => (Placement::InPlace, here),
            (_, Some(wrapped)) if wrapped >= min => (Placement::AfterWrap, wrapped),
            _ => return None,
        };
        Some(Reservation {
            producer: self,
            at,
            room,
        })
    }

    /// Writes a record whose payload `fill` writes into the area offered (room for `min`
    /// bytes at least, or a larger one after a `None`: too small): its length, or `None`
    /// with nothing written. The in-place posts of ports and broadcasts serialize here.
    #[inline]
    pub(crate) fn write_in_place(
        &mut self,
        mut min: usize,
        kind: u32,
        tag: u64,
        mut fill: impl FnMut(&mut [MaybeUninit<u8>]) -> Option<usize>,
    ) -> Option<usize> {
        while let Some(mut reservation) = self.reserve_at_least(min) {
            let room = reservation.area().len();
            if let Some(len) = fill(reservation.area()) {
                reservation.commit(len, kind, tag);
                return Some(len);
            }
            min = room + 1;
        }
        None
    }

    /// Reserves the payload area of the next record at `at`: as many bytes as
    /// [`room`](Self::room) reports there. `None` when not even a header fits there. (The
    /// loom model picks the placement itself; the library asks `reserve_at_least`.)
    #[cfg(loom)]
    pub(crate) fn reserve(&mut self, at: Placement) -> Option<Reservation<'_>> {
        let (here, wrapped) = self.room();
        let room = match at {
            Placement::InPlace => here?,
            Placement::AfterWrap => wrapped?,
        };
        Some(Reservation {
            producer: self,
            at,
            room,
        })
    }

    /// Publishes a record of `len` payload bytes written at `at` (`len` within the room
    /// reserved there, and the producer unchanged since: the `Reservation` holds it).
    #[inline]
    fn publish_record(&mut self, at: Placement, len: usize, kind: u32, tag: u64) {
        let wrap = at == Placement::AfterWrap;
        let pad_at = self.tail_off;
        let pad_pos = self.tail;
        if wrap {
            self.tail += (self.mem.cap - self.tail_off) as u64;
            self.tail_off = 0;
        }
        let (rec_at, rec_pos) = (self.tail_off, self.tail);
        let size = record_size(len);
        self.tail += size as u64;
        self.tail_off += size;
        let rest = self.mem.cap - self.tail_off;
        if rest < RECORD_HEADER && self.tail + rest as u64 <= self.head_cache + self.mem.cap as u64
        {
            // Too short for a header: both sides skip the remainder (when it is free; if
            // not, the next commit skips it as a wrap).
            self.tail += rest as u64;
            self.tail_off = 0;
        }
        self.clear_next_mark();
        // The record first, then the padding in front of it: the consumer reaches the
        // record only through the padding, so it sees both or neither.
        let fields = RecordHeader {
            len: len as u32,
            kind,
            tag,
        };
        // SAFETY: the record fits at `rec_at` (`size <= room` as reserved, so its header
        // does), 8-aligned like every record offset, in free ring memory.
        unsafe { self.mem.publish(rec_at, rec_pos, fields) };
        let pad_len = self.mem.cap - pad_at;
        if wrap && pad_len >= RECORD_HEADER {
            let pad = RecordHeader {
                len: (pad_len - RECORD_HEADER) as u32,
                kind: KIND_PAD,
                tag: 0,
            };
            // SAFETY: `pad_len >= 24` bytes from `pad_at` to the end are free (the wrap
            // reserved them), and `pad_at` is 8-aligned.
            unsafe { self.mem.publish(pad_at, pad_pos, pad) };
        }
        // Release: pairs with the Acquire load in `Producer::attach` when this role moves.
        self.mem.ctrl().tail.store(self.tail, Ordering::Release);
    }

    /// Zeroes the mark where the consumer will look after the record being committed, so
    /// that stale bytes there (payload of an earlier lap, which may hold any value) can
    /// never read as that position's mark. Runs before the record is published, so the
    /// consumer sees the zero or a newer mark. When that slot is not free (the ring is
    /// exactly full), it holds the genuine header of the oldest unread record, whose mark
    /// names an earlier position: safe as it is.
    #[inline]
    fn clear_next_mark(&self) {
        let (mut pos, mut off) = (self.tail, self.tail_off);
        if self.mem.cap - off < RECORD_HEADER {
            pos += (self.mem.cap - off) as u64;
            off = 0;
        }
        if pos < self.head_cache + self.mem.cap as u64 {
            // SAFETY: `off + 24 <= cap` (a shorter remainder was skipped above), 8-aligned.
            unsafe { self.mem.mark(off) }.store(0, Ordering::Relaxed);
        }
    }

    /// Copies `bytes` into one record if there is room now; returns whether it did.
    pub(crate) fn try_write(&mut self, bytes: &[u8], kind: u32, tag: u64) -> bool {
        self.try_write_parts(&[bytes], kind, tag)
    }

    /// Copies `parts`, one after the other, into one record if there is room now; returns
    /// whether it did.
    pub(crate) fn try_write_parts(&mut self, parts: &[&[u8]], kind: u32, tag: u64) -> bool {
        let len = parts.iter().map(|p| p.len()).sum();
        let Some(mut r) = self.reserve_at_least(len) else {
            return false;
        };
        let mut at = r.area().as_mut_ptr().cast::<u8>();
        for part in parts {
            // SAFETY: `reserve_at_least` gave `len <= area.len()`, and the parts add up to `len`,
            // so every copy stays inside the area; the area is free ring memory owned by
            // this producer and cannot overlap a caller's slice, which is either
            // process-private memory or a part of some ring we do not write.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
        }
        r.commit(len, kind, tag);
        true
    }
}

/// Where the next record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// At the producer's position.
    InPlace,
    /// At the start of the data area, behind a padding record over the rest of the lap.
    AfterWrap,
}

/// The next record's payload area, reserved by its producer; dropped uncommitted: nothing.
pub(crate) struct Reservation<'a> {
    producer: &'a mut Producer,
    at: Placement,
    room: usize,
}

impl Reservation<'_> {
    /// The reserved bytes, free ring memory no one else touches until the commit (what
    /// they hold now is unspecified).
    #[inline]
    pub(crate) fn area(&mut self) -> &mut [MaybeUninit<u8>] {
        let off = match self.at {
            Placement::InPlace => self.producer.tail_off,
            Placement::AfterWrap => 0,
        };
        // SAFETY: `room` only reports bytes in the free part of the ring, which the protocol
        // gives to this producer alone (the consumer reads no further than the last
        // published mark); `off + 24 + room <= cap` by construction of `free_regions`. The
        // reservation borrows the producer mutably, so the indices cannot change and no
        // second area can be handed out while this one lives; the producer's `RingMem`
        // keeps the mapping valid for as long as the producer is used.
        unsafe {
            let start = self.producer.mem.data.as_ptr().add(off + RECORD_HEADER);
            std::slice::from_raw_parts_mut(start.cast::<MaybeUninit<u8>>(), self.room)
        }
    }

    /// Publishes the record: its first `len` bytes of [`area`](Self::area) are its
    /// payload, of kind `kind` and type tag `tag`.
    ///
    /// # Panics
    ///
    /// If `len` exceeds the reserved area, or `kind` is 0 or padding: bugs in shmport,
    /// never caused by a peer.
    #[inline]
    #[track_caller]
    pub(crate) fn commit(self, len: usize, kind: u32, tag: u64) {
        if len > self.room || kind == 0 || kind == KIND_PAD {
            bad_commit(len, kind, self.room);
        }
        self.producer.publish_record(self.at, len, kind, tag);
    }
}

/// The panic of [`Reservation::commit`], out of line: its formatting would otherwise keep
/// `commit` from being inlined into a post (72 instructions per post as a call, callgrind
/// over `examples/hot_path_count.rs`).
#[cold]
#[inline(never)]
#[track_caller]
fn bad_commit(len: usize, kind: u32, room: usize) -> ! {
    panic!("shmport bug: commit of {len} bytes of kind {kind} into a reservation of {room}")
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
///
/// Releasing is batched: the shared head is published once at least an eighth of the ring
/// has been released, or when the consumer finds the ring empty (it is about to wait), or
/// on [`flush`](Consumer::flush). That keeps the head's cache line (and the fence that
/// goes with publishing it) off the per-message path while the producer still gets room
/// long before it could run out.
pub(crate) struct Consumer {
    mem: RingMem,
    head: u64,
    head_off: usize,
    published_head: u64,
    publish_every: u64,
    /// Where the head is published: `None`, the ring's `head` (see `many`).
    cursor: Option<NonNull<AtomicU64>>,
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
            published_head: head,
            publish_every: (mem.cap / 8) as u64,
            cursor: None,
        })
    }

    pub(crate) fn mem(&self) -> &RingMem {
        &self.mem
    }

    /// The next record, if one is published. Padding is skipped (and released). When
    /// nothing is published the caller should [`flush`](Self::flush) before waiting.
    ///
    /// `inline(always)`, as are `frame_at` and `extent`: left to the inliner, `peek` stays
    /// a call and a receive costs 25 instructions more (callgrind, `hot_path_count`).
    #[inline(always)]
    pub(crate) fn peek(&mut self) -> Result<Option<Record>, Corrupt> {
        loop {
            let Some(frame) = self.frame_at(self.head, self.head_off)? else {
                return Ok(None);
            };
            if frame.is_padding {
                self.head = frame.pos + frame.size as u64;
                self.head_off = 0;
                continue;
            }
            (self.head, self.head_off) = (frame.pos, frame.off);
            return Ok(Some(Record {
                header: frame.header,
                payload_off: frame.off + RECORD_HEADER,
                next_head: frame.pos + frame.size as u64,
            }));
        }
    }

    /// Copies a peeked record's payload into `out` (replacing its contents).
    #[inline]
    pub(crate) fn copy_payload(&self, record: &Record, out: &mut rkyv::util::AlignedVec<16>) {
        out.clear();
        out.reserve(record.len());
        // SAFETY: `peek` checked `payload_off + len <= cap`; the bytes are published (Acquire
        // on the mark) and, until `release`, the producer does not write them; `out` has
        // room for `len` bytes (reserved above) and is a different allocation.
        unsafe {
            let src = self.mem.data.as_ptr().add(record.payload_off);
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), record.len());
            out.set_len(record.len());
        }
    }

    /// Gives a record's bytes back to the producer. Returns true when the head was
    /// published, in which case the caller must wake a producer waiting for room.
    #[inline]
    pub(crate) fn release(&mut self, record: Record) -> bool {
        debug_assert!(record.next_head > self.head);
        let size = (record.next_head - self.head) as usize;
        self.head = record.next_head;
        self.head_off += size;
        if self.head_off == self.mem.cap {
            self.head_off = 0;
        }
        self.head - self.published_head >= self.publish_every && self.flush()
    }
}

/// The invariant every pair of indices must satisfy; a peer that breaks it is corrupt.
fn check_indices(head: u64, tail: u64, cap: usize) -> Result<(), Corrupt> {
    if tail > u64::MAX / 2 {
        return Err(Corrupt("index beyond any reachable position"));
    }
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
    ///
    /// Holds raw pointers only (as the shared mapping does), so that producer, consumer and
    /// test all access the memory through pointers of equal standing.
    pub(crate) struct HeapRing {
        ctrl: NonNull<RingCtrl>,
        data: NonNull<u128>,
        words: usize,
    }

    impl HeapRing {
        pub(crate) fn new(cap: usize) -> Self {
            let data = Box::into_raw(vec![0u128; cap / 16].into_boxed_slice());
            HeapRing {
                ctrl: NonNull::from(Box::leak(Box::new(RingCtrl::new()))),
                data: NonNull::new(data.cast::<u128>()).unwrap(),
                words: cap / 16,
            }
        }

        pub(crate) fn mem(&self) -> RingMem {
            // SAFETY: both allocations live until `drop`, after every use in the test.
            unsafe { RingMem::new(self.ctrl, self.data.cast(), self.words * 16) }
        }

        fn ctrl(&self) -> &RingCtrl {
            // SAFETY: allocated in `new`, freed only in `drop`; only atomics inside.
            unsafe { self.ctrl.as_ref() }
        }

        fn bytes_mut(&mut self) -> &mut [u8] {
            // SAFETY: `words * 16` bytes allocated in `new`; tests do not hold a producer
            // or consumer access across the use of this slice.
            unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().cast(), self.words * 16) }
        }

        /// Writes a header at `off` as a hostile producer would: any mark, any fields.
        fn forge(&mut self, off: usize, mark: u64, len: u32, kind: u32) {
            let b = self.bytes_mut();
            b[off..off + 8].copy_from_slice(&mark.to_le_bytes());
            b[off + 8..off + 12].copy_from_slice(&len.to_le_bytes());
            b[off + 12..off + 16].copy_from_slice(&kind.to_le_bytes());
        }
    }

    impl Drop for HeapRing {
        fn drop(&mut self) {
            // SAFETY: both pointers come from Box allocations in `new` of these exact types
            // and lengths, and are freed once.
            unsafe {
                drop(Box::from_raw(self.ctrl.as_ptr()));
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    self.data.as_ptr(),
                    self.words,
                )));
            }
        }
    }

    fn pop(c: &mut Consumer) -> Result<Option<(RecordHeader, Vec<u8>)>, Corrupt> {
        let Some(r) = c.peek()? else { return Ok(None) };
        let mut out = rkyv::util::AlignedVec::<16>::new();
        c.copy_payload(&r, &mut out);
        c.release(r);
        c.flush();
        Ok(Some((r.header, out.to_vec())))
    }

    #[test]
    fn records_come_out_in_order_with_their_bytes() {
        let ring = HeapRing::new(4096);
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
        let ring = HeapRing::new(4096);
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
        let ring = HeapRing::new(4096);
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
        let ring = HeapRing::new(4096);
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
        let ring = HeapRing::new(4096);
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
    fn a_remainder_left_by_the_producer_is_not_released_ahead_of_its_tail() {
        // Found by the loom model of the remainder rule.
        let ring = HeapRing::new(96);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        assert!(p.try_write(&[1; 8], 2, 0)); // 0..32
        assert!(p.try_write(&[1; 24], 2, 1)); // 32..80; 16 left, free: skipped, tail 96
        pop(&mut c).unwrap().unwrap();
        pop(&mut c).unwrap().unwrap(); // head 80, published
        p.refresh().unwrap();
        assert!(p.try_write(&[1; 24], 2, 2)); // 96..144
        assert!(p.try_write(&[1; 8], 2, 3)); // 144..176; 16 left, not free: tail stays
        pop(&mut c).unwrap().unwrap();
        pop(&mut c).unwrap().unwrap(); // head 176
        assert_eq!(pop(&mut c).unwrap(), None);
        c.flush(); // as try_recv does when it finds the ring empty
        p.refresh().unwrap();
        assert!(p.try_write(&[1; 8], 2, 4));
        assert_eq!(pop(&mut c).unwrap().unwrap().0.tag, 4);
    }

    #[test]
    fn stale_payload_bytes_are_not_a_record() {
        // Found by review: payload of an earlier lap holding `head + 1` where the consumer
        // looks next.
        let ring = HeapRing::new(96);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        let mut a = Vec::new();
        a.extend_from_slice(&121u64.to_le_bytes());
        a.extend_from_slice(&0u32.to_le_bytes());
        a.extend_from_slice(&2u32.to_le_bytes());
        a.extend_from_slice(&0xdeadu64.to_le_bytes());
        assert!(p.try_write(&a, 2, 1));
        assert!(p.try_write(&[0; 24], 2, 2));
        assert_eq!(pop(&mut c).unwrap().unwrap().0.tag, 1);
        assert_eq!(pop(&mut c).unwrap().unwrap().0.tag, 2);
        p.refresh().unwrap();
        assert!(p.try_write(&[], 2, 3));
        assert_eq!(pop(&mut c).unwrap().unwrap().0.tag, 3);
        assert_eq!(pop(&mut c), Ok(None));
        p.refresh().unwrap();
    }

    #[test]
    fn payloads_forging_every_future_mark_never_make_a_phantom_record() {
        // Every payload word holds the mark the consumer would accept if a header landed on
        // that word in the next lap; random sizes move header positions around each lap.
        let cap = 1024usize;
        let ring = HeapRing::new(cap);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        let mut rng = 0x0123_4567_89ab_cdefu64;
        let (mut sent, mut got) = (0u64, 0u64);
        let rounds = if cfg!(miri) { 200 } else { 50_000 };
        let mut pos_of_next = 0u64;
        while got < rounds {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 200) as usize / 8 * 8;
            p.refresh().unwrap();
            if let Some(at) = p.fits(len) {
                let start = if at == Placement::AfterWrap {
                    pos_of_next.next_multiple_of(cap as u64)
                } else {
                    pos_of_next
                };
                let payload_pos = start + RECORD_HEADER as u64;
                let words: Vec<u8> = (0..len / 8)
                    .flat_map(|w| (payload_pos + 8 * w as u64 + cap as u64 + 1).to_le_bytes())
                    .collect();
                assert!(p.try_write(&words, 2, sent));
                sent += 1;
                pos_of_next = p.tail;
            }
            if rng % 5 < 2 {
                while let Some((h, _)) = pop(&mut c).unwrap() {
                    assert_eq!(h.tag, got, "a record out of order or a phantom");
                    got += 1;
                }
                if got != sent {
                    let off = c.head_off;
                    // `at + 24 <= cap`, and record offsets are 8-aligned.
                    let at = off.min(cap - RECORD_HEADER);
                    let mem = ring.mem();
                    // SAFETY: as above.
                    let mark = unsafe { mem.mark(at) }.load(Ordering::Relaxed);
                    panic!(
                        "got {got} sent {sent}: consumer head {} off {off} mark {mark}; producer tail {} off {} head_cache {}",
                        c.head, p.tail, p.tail_off, p.head_cache
                    );
                }
            }
        }
    }

    #[test]
    fn a_stale_mark_from_an_earlier_lap_is_not_a_record() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        // Position 0 written one lap ago would carry mark 1; a lap later the head is 4096.
        ring.forge(0, 1, 16, 2);
        ring.ctrl().head.store(4096, Ordering::Relaxed);
        ring.ctrl().tail.store(4096, Ordering::Relaxed);
        let mut c2 = Consumer::attach(ring.mem()).unwrap();
        assert_eq!(c2.peek().unwrap().map(|r| r.header), None);
        // ...while at head 0 the same bytes are a record.
        assert!(c.peek().unwrap().is_some());
    }

    #[test]
    fn zeroed_memory_is_not_a_record() {
        let ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        assert_eq!(c.peek().unwrap().map(|r| r.header), None);
    }

    #[test]
    fn a_record_length_past_the_end_of_the_ring_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        ring.forge(0, 1, 4000, 2);
        assert_eq!(c.peek().unwrap_err(), Corrupt("record length out of range"));
    }

    #[test]
    fn a_huge_record_length_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        ring.forge(0, 1, u32::MAX, 2);
        assert!(c.peek().is_err());
    }

    #[test]
    fn a_padding_record_of_the_wrong_length_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        ring.forge(0, 1, 16, KIND_PAD);
        assert_eq!(
            c.peek().unwrap_err(),
            Corrupt("padding record of the wrong length")
        );
    }

    #[test]
    fn a_record_of_kind_zero_poisons() {
        let mut ring = HeapRing::new(4096);
        let mut c = Consumer::attach(ring.mem()).unwrap();
        ring.forge(0, 1, 16, 0);
        assert_eq!(c.peek().unwrap_err(), Corrupt("record of kind zero"));
    }

    #[test]
    fn a_consumer_index_moving_backwards_poisons_the_producer() {
        let ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        assert!(p.try_write(&[0; 64], 2, 0));
        pop(&mut c).unwrap().unwrap();
        p.refresh().unwrap();
        ring.ctrl().head.store(0, Ordering::Relaxed);
        assert!(p.refresh().is_err());
    }

    #[test]
    fn a_head_ahead_of_the_tail_poisons_the_producer() {
        let ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        ring.ctrl().head.store(64, Ordering::Relaxed);
        assert!(p.refresh().is_err());
    }

    #[test]
    fn impossible_indices_refuse_to_attach() {
        let ring = HeapRing::new(4096);
        ring.ctrl().head.store(32, Ordering::Relaxed);
        assert!(Consumer::attach(ring.mem()).is_err());
        assert!(Producer::attach(ring.mem()).is_err());
    }

    #[test]
    fn an_empty_ring_has_nothing_queued() {
        let ring = HeapRing::new(4096);
        let c = Consumer::attach(ring.mem()).unwrap();
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn queued_counts_published_records_and_takes_none() {
        let ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        for i in 0..5u8 {
            assert!(p.try_write(&vec![i; i as usize * 9], 2, u64::from(i)));
        }
        assert_eq!(c.queued(), 5);
        assert_eq!(c.queued(), 5);
        pop(&mut c).unwrap().unwrap();
        pop(&mut c).unwrap().unwrap();
        assert_eq!(c.queued(), 3);
        assert_eq!(pop(&mut c).unwrap().unwrap().0.tag, 2);
    }

    #[test]
    fn queued_skips_padding_and_remainders_after_wrapping_around() {
        let ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        let (mut sent, mut got) = (0u64, 0u64);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let rounds = if cfg!(miri) { 200 } else { 20_000 };
        while got < rounds {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            p.refresh().unwrap();
            if p.try_write(&vec![0; (rng % 500) as usize], 2, sent) {
                sent += 1;
            }
            assert_eq!(c.queued() as u64, sent - got);
            if rng % 3 == 0 {
                while pop(&mut c).unwrap().is_some() {
                    got += 1;
                    assert_eq!(c.queued() as u64, sent - got);
                }
            }
        }
        assert!(p.tail > 4 * 4096, "the ring wrapped around several times");
    }

    #[test]
    fn queued_skips_a_remainder_too_short_for_a_header() {
        // The layout of `a_remainder_left_by_the_producer_is_not_released_ahead_of_its_tail`.
        let ring = HeapRing::new(96);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let mut c = Consumer::attach(ring.mem()).unwrap();
        assert!(p.try_write(&[1; 8], 2, 0)); // 0..32
        assert!(p.try_write(&[1; 24], 2, 1)); // 32..80; 16 left, free: skipped, tail 96
        assert_eq!(c.queued(), 2);
        pop(&mut c).unwrap().unwrap();
        pop(&mut c).unwrap().unwrap(); // head 80, before the remainder
        assert_eq!(c.queued(), 0);
        p.refresh().unwrap();
        assert!(p.try_write(&[1; 24], 2, 2)); // 96..144
        assert_eq!(c.queued(), 1);
        assert!(p.try_write(&[1; 8], 2, 3)); // 144..176; 16 left, not free: tail stays
        assert_eq!(c.queued(), 2);
    }

    #[test]
    fn queued_stops_at_a_corrupt_length_with_what_it_counted() {
        let mut ring = HeapRing::new(4096);
        {
            let mut p = Producer::attach(ring.mem()).unwrap();
            assert!(p.try_write(&[1; 16], 2, 0)); // 0..40
            assert!(p.try_write(&[1; 16], 2, 1)); // 40..80
            assert!(p.try_write(&[1; 16], 2, 2)); // 80..120
        }
        ring.forge(40, 41, u32::MAX, 2);
        let c = Consumer::attach(ring.mem()).unwrap();
        assert_eq!(c.queued(), 1);
        ring.forge(0, 1, 4000, 2);
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn queued_trusts_no_impossible_tail() {
        let ring = HeapRing::new(4096);
        let mut p = Producer::attach(ring.mem()).unwrap();
        let c = Consumer::attach(ring.mem()).unwrap();
        assert!(p.try_write(&[1; 16], 2, 0));
        ring.ctrl().tail.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(c.queued(), 0);
        // A tail past the records: the count stops where the marks do.
        ring.ctrl().tail.store(4096, Ordering::Relaxed);
        assert_eq!(c.queued(), 1);
    }

    #[test]
    fn random_headers_never_read_out_of_bounds() {
        // Whatever the peer writes into the data area, peek returns an error, nothing, or a
        // record inside the data area.
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
            let start = (next() % 512) as usize * 8;
            ring.ctrl().head.store(start as u64, Ordering::Relaxed);
            ring.ctrl().tail.store(start as u64, Ordering::Relaxed);
            let mut off = start;
            for _ in 0..4 {
                if off + RECORD_HEADER > 4096 {
                    break;
                }
                let mark = if next() % 4 == 0 {
                    next()
                } else {
                    off as u64 + 1
                };
                let len = match next() % 3 {
                    0 => next() as u32,
                    1 => (next() % 5000) as u32,
                    _ => (next() % 64) as u32,
                };
                ring.forge(off, mark, len, (next() % 4) as u32);
                off += record_size((len % 64) as usize);
            }
            let mut c = Consumer::attach(ring.mem()).unwrap();
            for _ in 0..4 {
                match c.peek() {
                    Ok(Some(r)) => {
                        assert!(r.payload_off + r.len() <= 4096);
                        let mut out = rkyv::util::AlignedVec::<16>::new();
                        c.copy_payload(&r, &mut out);
                        c.release(r);
                    }
                    _ => break,
                }
            }
        }
    }
}
