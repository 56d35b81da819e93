//! A ring with one writer and many readers (a `BroadcastChannel` member's): the same
//! records and publication protocol as the SPSC ring, but each reader keeps its own
//! position and publishes it to a cursor of its own, and the writer takes the slowest
//! reader's cursor as its consumer index. Declared from `ring.rs`, whose private fields
//! it uses; `Consumer::flush`, which publishes to either place, lives here too.

use std::ptr::NonNull;

use super::{Consumer, Corrupt, Producer, RECORD_ALIGN, RingMem, check_indices};
use crate::sys::sync::{AtomicU64, Ordering};

impl Producer {
    /// Bytes ever published: the position of the next record.
    pub(crate) fn position(&self) -> u64 {
        self.tail
    }

    /// Takes `head` as the consumer index: in a ring with many readers, the slowest
    /// reader's cursor, loaded by the caller with Acquire (pairing with the reader's
    /// Release store in `Consumer::flush`). Checked as `refresh` checks.
    pub(crate) fn set_head(&mut self, head: u64) -> Result<(), Corrupt> {
        self.take_head(head)
    }

    /// Whether a record of `len` payload bytes fits now (cached consumer index).
    pub(crate) fn has_room_for(&self, len: usize) -> bool {
        self.fits(len).is_some()
    }
}

impl Consumer {
    /// Takes one reader's role in a ring with many readers, from position `head` (as the
    /// writer recorded it when it let this reader in), publishing releases to `cursor`.
    ///
    /// # Safety
    ///
    /// `cursor` must stay valid for as long as the consumer is used (it lives in the same
    /// mapping as `mem`).
    pub(crate) unsafe fn attach_reader(
        mem: RingMem,
        head: u64,
        cursor: NonNull<AtomicU64>,
    ) -> Result<Self, Corrupt> {
        let tail = mem.ctrl().tail.load(Ordering::Acquire);
        check_indices(head, tail, mem.cap)?;
        if head % RECORD_ALIGN as u64 != 0 {
            return Err(Corrupt("reader position off the record alignment"));
        }
        Ok(Consumer {
            mem,
            head,
            head_off: (head % mem.cap as u64) as usize,
            published_head: head,
            publish_every: (mem.cap / 8) as u64,
            cursor: Some(cursor),
        })
    }

    /// Bytes the writer says it published past this reader's position (its tail as it
    /// stored it: a peer's value, only compared, never used as an index).
    pub(crate) fn unread(&self) -> u64 {
        self.mem
            .ctrl()
            .tail
            .load(Ordering::Acquire)
            .saturating_sub(self.head)
    }

    /// Publishes every release not yet published; true if there was one.
    pub(crate) fn flush(&mut self) -> bool {
        if self.head == self.published_head {
            return false;
        }
        self.published_head = self.head;
        // Release: pairs with the producer's Acquire load in `Producer::refresh` (or of the
        // cursor, for a ring with many readers): our reads of the released bytes happen
        // before the producer may overwrite them.
        match self.cursor {
            None => self.mem.ctrl().head.store(self.head, Ordering::Release),
            // SAFETY: valid while the consumer is used (contract of `attach_reader`); an
            // atomic, so a shared reference is sound whoever else writes it.
            Some(c) => unsafe { c.as_ref() }.store(self.head, Ordering::Release),
        }
        true
    }
}
