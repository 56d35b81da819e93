//! A bell many sleepers wait on and any writer rings: how the members of a
//! `BroadcastChannel` sleep until some ring of the name has news.
//!
//! Two words in shared memory: `bell`, a counter the sleepers futex-wait on, and
//! `sleepers`, non-zero while some member sleeps (or is about to). A writer that published
//! rings only when `sleepers` says so, and takes the flag as it rings, so a burst of posts
//! rings once; with nobody asleep a post costs a fence and one load, and makes no system
//! call.
//!
//! ```text
//! sleeper                                  writer
//! v = bell.load()            (Acquire)     publish                    (Release)
//! sleepers.fetch_or(1)       (AcqRel)      fence(SeqCst)
//! fence(SeqCst)                            if sleepers.load() != 0 &&
//! if news { return }                          sleepers.swap(0) != 0 {  (AcqRel)
//! futex_wait(bell, v)                          bell.fetch_add(1)        (Release)
//!                                              futex_wake_all(bell)
//!                                          }
//! ```
//!
//! The fences give the store-load order on both sides (as in `wake.rs`): either the
//! sleeper's re-check sees the news, or the writer sees the flag. A sleeper waits on the
//! bell's value from *before* it raised the flag; the writer's swap reads that flag raise
//! (or a later one), so its increment comes after the sleeper's load, and `futex_wait`
//! returns at once if the increment is already there. Unlike the single-sleeper word of a
//! port, the flag is shared, so it is not the futex word: a second sleeper raising it again
//! after a writer took it must not make the first one's `futex_wait` sleep through the ring
//! (with a counter, the first one's expected value is stale and it returns).
//!
//! A sleeper that finds news after raising the flag leaves it raised: the next post rings
//! once for nobody. Sleeps are bounded by the caller's nap, so nothing waits forever on a
//! writer that died between publishing and ringing.

use std::time::Duration;

use crate::sys::sync::{AtomicU32, Ordering, fence};
use crate::sys::{futex_wait, futex_wake};

/// Wakes every sleeper if one announced itself. Call after publishing.
#[inline]
pub(crate) fn ring(bell: &AtomicU32, sleepers: &AtomicU32) {
    // SeqCst fence: pairs with the sleeper's fence in `sleep`.
    fence(Ordering::SeqCst);
    if sleepers.load(Ordering::Relaxed) != 0 && sleepers.swap(0, Ordering::AcqRel) != 0 {
        // Release: pairs with the sleeper's Acquire load of the bell (its next wait sees
        // what was published before this ring).
        bell.fetch_add(1, Ordering::Release);
        futex_wake(bell);
    }
}

/// Announces a sleep, checks `news` once more, and sleeps up to `nap` unless it found
/// some. Returns what `news` found, or `None` after the sleep (woken, timed out or
/// spuriously: the caller looks again).
pub(crate) fn sleep<R>(
    bell: &AtomicU32,
    sleepers: &AtomicU32,
    nap: Duration,
    mut news: impl FnMut() -> Option<R>,
) -> Option<R> {
    let seen = announce(bell, sleepers);
    if let Some(r) = news() {
        return Some(r);
    }
    futex_wait(bell, seen, nap);
    None
}

/// The first half of [`sleep`], for a sleep another thread does: announces a sleeper and
/// returns the bell's value to wait on. The caller then checks its news once more, and if
/// it found none, `futex_wait(bell, seen, nap)` (in any thread) sleeps through no ring that
/// follows the check.
pub(crate) fn announce(bell: &AtomicU32, sleepers: &AtomicU32) -> u32 {
    // Acquire: pairs with the writer's Release increment.
    let seen = bell.load(Ordering::Acquire);
    // AcqRel: the writer's swap that reads this raise is ordered after our load above.
    sleepers.fetch_or(1, Ordering::AcqRel);
    // SeqCst fence: pairs with the writer's fence in `ring`.
    fence(Ordering::SeqCst);
    seen
}

/// Moves the bell and wakes every sleeper, announced or not: for taking a thread of ours
/// out of its sleep on the bell (the others look again and sleep on).
pub(crate) fn nudge(bell: &AtomicU32) {
    // Release: as in `ring`.
    bell.fetch_add(1, Ordering::Release);
    futex_wake(bell);
}
