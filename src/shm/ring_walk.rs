//! Finding and checking the record published at a position of a ring, without taking it:
//! the step [`Consumer::peek`] takes, and the walk [`Consumer::queued`] makes over every
//! record published.

use super::{Consumer, Corrupt, KIND_PAD, RECORD_HEADER, RecordHeader, RingMem, record_size};
use crate::sys::sync::Ordering;

/// Where a published record found by [`Consumer::frame_at`] lies, its header checked.
pub(super) struct Frame {
    /// Its position and ring offset (past a skipped short remainder).
    pub(super) pos: u64,
    pub(super) off: usize,
    /// Its size in the ring: header, payload and alignment, or the rest of the ring for
    /// padding.
    pub(super) size: usize,
    pub(super) is_padding: bool,
    /// Its header, copied out of the ring and checked.
    pub(super) header: RecordHeader,
}

impl Consumer {
    /// The record published at position `pos` (ring offset `off`), checked: `None` when
    /// none is published there yet. A remainder too short for a header is skipped (the
    /// frame's `pos` and `off` are then past it) only once a record is found after it:
    /// until then the producer's tail may still stand before it.
    #[inline(always)]
    pub(super) fn frame_at(&self, pos: u64, off: usize) -> Result<Option<Frame>, Corrupt> {
        let cap = self.mem.cap;
        let (pos, off) = if cap - off < RECORD_HEADER {
            (pos + (cap - off) as u64, 0)
        } else {
            (pos, off)
        };
        // Acquire: pairs with the producer's Release store of the mark in
        // `RingMem::publish`: the record's bytes are visible once its mark is.
        // SAFETY: `off + 24 <= cap` (a shorter remainder was skipped above), 8-aligned
        // (record offsets are).
        let mark = unsafe { self.mem.mark(off) }.load(Ordering::Acquire);
        if mark != pos + 1 {
            self.mem.prefetch_lines_after(off);
            return Ok(None);
        }
        // SAFETY: in bounds and aligned as just above.
        let header = unsafe { self.mem.read_fields(off) };
        let (size, is_padding) = self.extent(&header, cap - off)?;
        Ok(Some(Frame {
            pos,
            off,
            size,
            is_padding,
            header,
        }))
    }

    /// The bytes a record with `header` takes in the ring (the rest of the ring for
    /// padding), `to_end` bytes before the ring's end, and whether it is padding; `Err`
    /// for a framing no producer writes (the checks `peek` makes).
    #[inline(always)]
    pub(super) fn extent(
        &self,
        header: &RecordHeader,
        to_end: usize,
    ) -> Result<(usize, bool), Corrupt> {
        if header.kind == KIND_PAD {
            if header.len as usize != to_end - RECORD_HEADER {
                return Err(Corrupt("padding record of the wrong length"));
            }
            return Ok((to_end, true));
        }
        if header.kind == 0 {
            return Err(Corrupt("record of kind zero"));
        }
        let size = record_size(header.len as usize);
        if header.len as usize > self.mem.max_payload() || size > to_end {
            return Err(Corrupt("record length out of range"));
        }
        Ok((size, false))
    }

    /// How many records (padding not counted) are published after the consumer's
    /// position now, taking none. The walk is the one [`peek`](Self::peek) makes, up to
    /// the producer's published tail: every header is copied and checked before it moves
    /// the walk, and a framing `peek` would refuse (or a tail that cannot be) ends the
    /// count with what was counted so far. Each step advances at least 8 bytes and the walk
    /// stops at most a ring's capacity past the head, so it ends.
    pub(crate) fn queued(&self) -> usize {
        // Acquire: pairs with the producer's Release store of its tail in
        // `Producer::publish_record`: every mark published before that tail is visible.
        let tail = self.mem.ctrl().tail.load(Ordering::Acquire);
        if tail < self.head || tail - self.head > self.mem.cap as u64 {
            return 0;
        }
        let (mut pos, mut off, mut n) = (self.head, self.head_off, 0);
        while pos < tail {
            let Ok(Some(frame)) = self.frame_at(pos, off) else {
                break;
            };
            n += usize::from(!frame.is_padding);
            pos = frame.pos + frame.size as u64;
            off = if frame.off + frame.size == self.mem.cap {
                0
            } else {
                frame.off + frame.size
            };
        }
        n
    }
}

impl RingMem {
    /// Asks the CPU to fetch the two cache lines after the one that holds offset `off`, as
    /// far as the ring goes: a hint, with no effect on memory or on what any load returns.
    ///
    /// A reader polling an empty ring calls it beside its look at the next mark. A small
    /// record spans two or three lines (a 64-byte message is an 88-byte record), and the
    /// payload is written before the mark: fetched in the same spin as the mark, the
    /// payload's lines arrive with it instead of as misses in series after it
    /// (docs/design.md, "What bounds a busy-poll round trip").
    #[inline(always)]
    fn prefetch_lines_after(&self, off: usize) {
        const LINE: usize = 64;
        let base = self.data.as_ptr() as usize;
        let first = ((base + off) | (LINE - 1)) + 1 - base;
        for line in [first, first + LINE] {
            if line >= self.cap {
                return;
            }
            #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
            // SAFETY: `line < cap`, so the address lies in the mapped data area; a prefetch
            // reads nothing into the program and cannot fault, and SSE is part of x86_64.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(self.data.as_ptr().add(line).cast::<i8>());
            }
            #[cfg(all(target_arch = "aarch64", not(miri), not(loom)))]
            // SAFETY: as above; `prfm` is a hint that neither faults nor writes.
            unsafe {
                std::arch::asm!(
                    "prfm pldl1keep, [{0}]",
                    in(reg) self.data.as_ptr().add(line),
                    options(nostack, readonly, preserves_flags)
                );
            }
        }
    }
}
