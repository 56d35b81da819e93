//! What a port has posted and its peer may not have taken yet.
//!
//! - The pooled slots: freed by the sender when the receiving end is gone for good (its
//!   process was killed), which nobody else can notice. A receiver that closes normally
//!   frees what was queued for it itself (`discard_incoming`).
//! - The bytes outside the ring (message bodies and transferred buffers) of records the
//!   reader has not taken: a post waits while they exceed the port's bound
//!   ([`MessagePort::set_max_queued_bytes`]), as it waits for room in the ring, so a slow
//!   reader holds at most that much of the pool, and a sender that outruns it is held back
//!   instead of exhausting the pool and falling back to a memfd per body.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::sys::sync::{AtomicU32, Ordering};

use crate::shm::buffer::ArrayBuffer;
use crate::shm::heap::SlotInTransit;
use crate::shm::ring::Producer;
use crate::sys;

use super::post::RoomWait;
use super::{MessagePort, PostErrorKind};

/// The slots, pruned of the received ones whenever their number doubles: a port keeps at
/// most about twice as many as are really in flight (and their heaps mapped).
#[derive(Default)]
pub(super) struct InFlight {
    slots: Vec<SlotInTransit>,
    prune_at: usize,
}

/// Fewest slots remembered before the first prune.
const PRUNE_FROM: usize = 64;

/// The out-of-ring bytes of the records a port wrote that its reader has not taken yet.
#[derive(Default)]
pub(super) struct Queued {
    /// `(the ring's written bytes after the record, the record's out-of-ring bytes)`, oldest
    /// first.
    records: VecDeque<(u64, usize)>,
    bytes: usize,
    /// Whether the ring's `wants_head` is set (by us: only the writer sets it).
    wants_head: bool,
    /// When a wait within the cache window last saw the reader take nothing for
    /// [`CACHE_WAIT`] (see [`Queued::window_applies`]).
    reader_idle: Option<Idle>,
}

/// The default of [`MessagePort::max_queued_bytes`].
pub(super) const DEFAULT_MAX_QUEUED: usize = 256 << 20;

/// The cache window: how far ahead of a reader that keeps up its writer may run in
/// out-of-ring bytes, a fraction of a last-level cache. Frames handed over within it are
/// still in the cache they were written through; with only the bound, a pipeline of 1 MiB
/// frames fell into a state where every frame waited long enough to be evicted and was
/// read at memory speed, a quarter of the cached rate (docs/design.md, "A cache window
/// within the bound").
pub(super) const CACHE_WINDOW: usize = 4 << 20;

/// How long a post past the cache window waits for a reader that takes nothing: then the
/// reader counts as busy elsewhere (or as the posting thread itself), and posts go on up to
/// the bound.
const CACHE_WAIT: Duration = Duration::from_millis(2);

/// How long after a reader was found idle the window applies again, once it has moved (so
/// a thread that receives one and posts one with a backlog past the window waits 2 ms at
/// most once per this, not once per post), unless the queue falls back within the window
/// first.
const CACHE_REARM: Duration = Duration::from_millis(100);

/// A reader a wait within the cache window found taking nothing.
#[derive(Clone, Copy, Debug)]
struct Idle {
    /// Its consumed position then.
    consumed: u64,
    since: Instant,
}

impl Queued {
    /// The count of a writer taking over a ring: nothing of its own queued yet, and the
    /// ring's `wants_head` as a previous holder of this end (moved here) may have left it,
    /// so that its first transfer post below a quarter of the bound clears it, instead of
    /// leaving the reader publishing after every transfer record for good.
    pub(super) fn taking_over(wants_head: &AtomicU32) -> Queued {
        Queued {
            wants_head: wants_head.load(Ordering::Relaxed) != 0,
            ..Queued::default()
        }
    }

    /// Whether a record with `bytes` out-of-ring bytes may be written now, below `max`,
    /// once the reader has taken everything written before `consumed`. One record is always
    /// admitted when nothing is queued, however large.
    pub(super) fn admits(&mut self, bytes: usize, max: usize, consumed: u64) -> bool {
        while let Some(&(end, n)) = self.records.front() {
            if end > consumed {
                break;
            }
            self.bytes -= n;
            self.records.pop_front();
        }
        bytes == 0 || self.bytes == 0 || self.bytes.saturating_add(bytes) <= max
    }

    /// Whether a post of `bytes` out-of-ring bytes should wait within the cache window,
    /// the reader's consumed position being `consumed`: past the window, unless the reader
    /// was found idle and has not both moved and had [`CACHE_REARM`] since. A record of at
    /// least the window's size never waits for it (the window cannot keep it in cache).
    fn window_applies(
        &mut self,
        bytes: usize,
        consumed: u64,
        now: impl FnOnce() -> Instant,
    ) -> bool {
        if bytes >= CACHE_WINDOW {
            return false;
        }
        if self.admits(bytes, CACHE_WINDOW, consumed) {
            self.reader_idle = None;
            return false;
        }
        match self.reader_idle {
            None => true,
            Some(idle) if idle.consumed != consumed && now() >= idle.since + CACHE_REARM => {
                self.reader_idle = None;
                true
            }
            Some(_) => false,
        }
    }

    /// What the ring's `wants_head` should become before a record with `bytes` more is
    /// published: `Some` when it changes. Set above half of `max`, cleared at a quarter, so
    /// the reader publishes its head at once (a cache-line transfer per record) only while
    /// the bound is near.
    pub(super) fn wants_head(&mut self, bytes: usize, max: usize) -> Option<bool> {
        let after = self.bytes.saturating_add(bytes);
        let want = if self.wants_head {
            after > max / 4
        } else {
            after > max / 2
        };
        (want != self.wants_head).then(|| {
            self.wants_head = want;
            want
        })
    }

    /// Counts a record just written, ending at `end` in the ring.
    pub(super) fn push(&mut self, end: u64, bytes: usize) {
        if bytes > 0 {
            self.records.push_back((end, bytes));
            self.bytes += bytes;
        }
    }
}

impl InFlight {
    fn remember(&mut self, slot: SlotInTransit) {
        if self.slots.len() >= self.prune_at {
            self.slots.retain(SlotInTransit::pending);
            self.prune_at = (2 * self.slots.len()).max(PRUNE_FROM);
        }
        self.slots.push(slot);
    }
}

impl MessagePort {
    /// Waits, as `wait` allows ([`when_room`](Self::when_room)), until the ring has room
    /// for a record of `len` bytes and `queued` for `bytes` more out-of-ring bytes.
    pub(super) fn when_room_queued(
        &self,
        tx: &mut Producer,
        wait: RoomWait,
        len: usize,
        bytes: usize,
        queued: &mut Queued,
    ) -> Result<(), PostErrorKind> {
        let max = self.max_queued.get();
        if CACHE_WINDOW < max && !matches!(wait, RoomWait::Never) {
            self.when_in_cache_window(tx, wait, bytes, queued)?;
        }
        self.when_room(tx, wait, |tx| {
            tx.fits(len).is_some() && queued.admits(bytes, max, tx.consumed())
        })
    }

    /// Waits while `bytes` more would take the queue past the cache window and the reader
    /// keeps taking records: each wait lasts at most [`CACHE_WAIT`] without progress. A
    /// reader that took nothing in that time is busy elsewhere (or is this thread): the
    /// post goes on, and so do the next ones, up to the bound, until the reader moves.
    fn when_in_cache_window(
        &self,
        tx: &mut Producer,
        wait: RoomWait,
        bytes: usize,
        queued: &mut Queued,
    ) -> Result<(), PostErrorKind> {
        // Within the window by the head last read: within it for real (the head only moves
        // on), with no look at the reader's line.
        if bytes >= CACHE_WINDOW || queued.admits(bytes, CACHE_WINDOW, tx.consumed()) {
            return Ok(());
        }
        loop {
            let until = Instant::now() + CACHE_WAIT;
            if let RoomWait::Until(deadline) = wait {
                if deadline <= until {
                    // The caller's deadline comes first: the wait for the bound decides.
                    return Ok(());
                }
            }
            // Each look is `when_room`'s: the head re-read and checked, then the decision.
            // The head the first look saw tells a reader that took nothing from one that
            // took some.
            let mut first_seen = None;
            let settled = |tx: &mut Producer| {
                let consumed = tx.consumed();
                first_seen.get_or_insert(consumed);
                if !queued.window_applies(bytes, consumed, Instant::now) {
                    return true;
                }
                // The reader publishes its head after each transfer record it takes while
                // asked, so that the wait sees it move.
                self.set_wants_head(queued, true);
                false
            };
            match self.when_room(tx, RoomWait::Until(until), settled) {
                Ok(()) => return Ok(()),
                Err(PostErrorKind::Full) if first_seen == Some(tx.consumed()) => {
                    queued.reader_idle = Some(Idle {
                        consumed: tx.consumed(),
                        since: Instant::now(),
                    });
                    return Ok(());
                }
                Err(PostErrorKind::Full) => {} // it took some: wait on
                Err(e) => return Err(e),
            }
        }
    }

    /// Before publishing a record of `bytes` out-of-ring bytes: sets or clears the ring's
    /// `wants_head` as the queue's nearness to its bound says.
    pub(super) fn ask_for_head_near_bound(&self, queued: &mut Queued, bytes: usize) {
        if let Some(want) = queued.wants_head(bytes, self.max_queued.get().min(CACHE_WINDOW)) {
            self.store_wants_head(want);
        }
    }

    /// Asks the reader to publish its head after each transfer record (`want`), or not.
    fn set_wants_head(&self, queued: &mut Queued, want: bool) {
        if queued.wants_head != want {
            queued.wants_head = want;
            self.store_wants_head(want);
        }
    }

    fn store_wants_head(&self, want: bool) {
        // Relaxed: the record's publication (Release) that follows orders it for the
        // reader; before a wait, the reader sees it at its next transfer record or soon
        // after (it only makes the reader publish sooner).
        let word = &self.seg.ring_ctrl(self.side).wants_head;
        word.store(u32::from(want), Ordering::Relaxed);
    }

    /// Remembers the pooled slots of buffers (and a body) just posted.
    pub(super) fn remember_in_flight<'a>(&self, buffers: impl Iterator<Item = &'a ArrayBuffer>) {
        let mut in_flight = self.in_flight.borrow_mut();
        for slot in buffers.filter_map(ArrayBuffer::slot_in_transit) {
            in_flight.remember(slot);
        }
    }

    /// At drop: frees the slots still in transit if the peer's end is gone (every
    /// descriptor of it closed: killed, or closed after it stopped receiving). A peer that
    /// is only slow keeps them: it may still receive what was posted before our close.
    pub(super) fn free_in_flight_if_peer_gone(&self) {
        let slots = std::mem::take(&mut self.in_flight.borrow_mut().slots);
        if slots.is_empty() {
            return;
        }
        let gone = self.sock.get().is_some_and(|s| {
            use std::os::fd::AsFd;
            sys::peer_hung_up(s.as_fd())
        });
        if gone {
            let freed = slots.iter().filter(|s| s.reclaim()).count();
            if freed > 0 {
                event!(
                    debug,
                    "port: freed {freed} pooled slots its gone peer never received"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::{CACHE_REARM, CACHE_WINDOW, Idle, Queued};

    const MIB: usize = 1 << 20;

    /// A queue with five 1 MiB records written, the first ending at ring position 8.
    fn five_mib_queued() -> Queued {
        let mut q = Queued::default();
        for i in 1..=5u64 {
            q.push(i * 8, MIB);
        }
        q
    }

    #[test]
    fn a_post_within_the_cache_window_does_not_wait_for_it() {
        let mut q = Queued::default();
        q.push(8, 2 * MIB);
        assert!(!q.window_applies(MIB, 0, || unreachable!()));
    }

    #[test]
    fn a_post_past_the_cache_window_waits_for_a_reader_not_found_idle() {
        assert!(five_mib_queued().window_applies(MIB, 0, || unreachable!()));
    }

    #[test]
    fn a_record_as_large_as_the_cache_window_never_waits_for_it() {
        assert!(!five_mib_queued().window_applies(CACHE_WINDOW, 0, || unreachable!()));
    }

    #[test]
    fn a_reader_found_idle_is_not_waited_for_until_it_moves_and_the_rearm_time_passed() {
        let since = Instant::now();
        let mut q = five_mib_queued();
        q.reader_idle = Some(Idle { consumed: 0, since });
        let later = since + CACHE_REARM;
        assert!(!q.window_applies(MIB, 0, || later), "it has not moved");
        assert!(
            !q.window_applies(MIB, 1, || since),
            "moved, but just now found idle"
        );
        assert!(
            q.window_applies(MIB, 1, || later),
            "moved, and the rearm time passed"
        );
        assert!(q.reader_idle.is_none());
    }

    #[test]
    fn a_queue_back_within_the_cache_window_forgets_the_idle_reader() {
        let mut q = five_mib_queued();
        q.reader_idle = Some(Idle {
            consumed: 0,
            since: Instant::now(),
        });
        assert!(!q.window_applies(MIB, 24, || unreachable!()), "3 MiB taken");
        assert!(q.reader_idle.is_none());
    }

    #[test]
    fn wants_head_is_asked_above_half_the_bound_and_withdrawn_at_a_quarter() {
        let mut q = Queued::default();
        assert_eq!(q.wants_head(40, 100), None);
        q.push(8, 40);
        assert_eq!(q.wants_head(20, 100), Some(true));
        q.push(16, 20);
        assert!(q.admits(10, 100, 8)); // the first record taken: 20 queued
        assert_eq!(q.wants_head(10, 100), None, "30 > a quarter: still asked");
        assert!(q.admits(0, 100, 16));
        assert_eq!(q.wants_head(10, 100), Some(false));
    }

    // A plain test: under `--cfg loom` these atomics are loom's, built but never run
    // (loom runs `loom_tests` only).
    #[test]
    fn a_writer_taking_over_a_ring_whose_wants_head_is_set_clears_it_at_its_first_post() {
        let left_set = crate::sys::sync::AtomicU32::new(1);
        let mut q = Queued::taking_over(&left_set);
        assert_eq!(q.wants_head(10, 100), Some(false));
        let left_clear = crate::sys::sync::AtomicU32::new(0);
        assert_eq!(Queued::taking_over(&left_clear).wants_head(10, 100), None);
    }

    #[test]
    fn records_the_reader_took_are_forgotten_at_every_admission() {
        let mut q = Queued::default();
        for i in 1..=1000u64 {
            q.push(i * 8, 4096);
            assert!(q.admits(4096, usize::MAX, i * 8));
        }
        assert!(q.records.is_empty() && q.bytes == 0);
    }
}
