//! How a port waits: spin briefly, then sleep on a futex in the shared segment.
//!
//! # The protocol, and why no wake-up is lost
//!
//! Each ring has two futex words: `reader_sleeping` (set by a consumer waiting for data)
//! and `writer_sleeping` (set by a producer waiting for room). With `word` the sleeper's
//! flag and `state` what it waits for (the mark of the next record for a reader, the head
//! for a writer, and the peer's `closed` flag for both):
//!
//! ```text
//! sleeper                                  waker
//! v = (word |= 1)                          state.store(new)          (Release)
//! fence(SeqCst)                            fence(SeqCst)
//! if state changed { word &= !1; return }  if word.load() != 0 {
//! futex_wait(word, v, timeout)                 word.swap(0); futex_wake(word)
//!                                          }
//! ```
//!
//! The two fences order the sleeper's flag store before its state load, and the waker's state
//! store before its flag load (a store-load order, which only a full barrier gives). So at
//! least one side sees the other: either the sleeper sees the new state and does not
//! sleep, or the waker sees the flag and wakes it. If the wake comes between the sleeper's
//! check and its `futex_wait`, the waker has already reset the word to 0, and
//! `futex_wait(word, v)` returns at once because the kernel compares the word with `v`
//! atomically with queueing the sleeper. (Bit 1 is `SLEEPING`; bit 2, `WANTS_DOORBELL`, is
//! set by a reader that waits in epoll instead, see `MessagePort::ready_or_arm`; the RMWs
//! keep each side's bit intact.) A waker that sees 0 makes no system call: with
//! nobody sleeping, posting is syscall-free (P5).
//!
//! A full barrier on every post is the price of the store-load order, unless the reader
//! busy-polls: then it never sleeps, and `polling.rs` lets the writer skip the fence until
//! the reader, before it first sleeps again, sends one asymmetric barrier
//! (`membarrier`). Sending that barrier before *every* sleep was tried and rejected: an
//! inter-processor interrupt to every shmport process per sleep (docs/design.md).
//!
//! Sleeps are bounded by [`LIVENESS_INTERVAL`]: a peer process that dies sets no flag,
//! so the sleeper wakes on its own and asks the kernel whether the peer's socket hung up.
//! That bounds how long a survivor can miss a crash (the 100 ms a survivor may take to see a death).

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::sys::sync::{AtomicU32, Ordering, fence};
use crate::sys::{futex_wait, futex_wake};

/// Longest single futex sleep: a dead peer is noticed within this (plus one poll).
pub(crate) const LIVENESS_INTERVAL: Duration = Duration::from_millis(50);

/// How often a busy-polling waiter asks the kernel whether its peer is still alive.
const BUSY_LIVENESS_INTERVAL: Duration = Duration::from_millis(10);

const ADAPTIVE_MIN: Duration = Duration::from_micros(2);
const ADAPTIVE_START: Duration = Duration::from_micros(50);
const ADAPTIVE_MAX: Duration = Duration::from_micros(100);

/// How long a spin that may end in a sleep runs before it yields the core between its
/// looks. With more runnable threads than cores, the thread that would post what the
/// spin waits for may be waiting for this very core; without the yield, such spins fail,
/// the adaptive budget falls to its floor, and waits become sleeps (round trips of 14 µs
/// instead of 0.4-0.8 µs, docs/design.md "Spinning on a busy machine").
const YIELD_AFTER: Duration = Duration::from_micros(2);

/// How a port waits for a message (or for room in a full ring).
///
/// ```
/// use shmport::{MessageChannel, WaitStrategy};
/// use std::time::Duration;
///
/// let ch = MessageChannel::builder()
///     .wait_strategy(WaitStrategy::Spin(Duration::from_micros(20)))
///     .build()?;
/// ch.port2.set_wait_strategy(WaitStrategy::Block); // per port, any time
/// # Ok::<(), shmport::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Spin for a budget that follows how long recent waits lasted (between 2 µs and
    /// 100 µs), then sleep. Low latency while messages flow, no CPU while idle. A spin
    /// that lasts past 2 µs yields the core (`sched_yield`) every 64 looks, so that on a
    /// machine with more runnable threads than cores the one that would post can run.
    #[default]
    Adaptive,
    /// Spin for at most this long (yielding as [`Adaptive`](Self::Adaptive) does), then
    /// sleep.
    Spin(Duration),
    /// Never spin: sleep on the futex at once (pure blocking, lowest CPU use).
    Block,
    /// Never sleep: spin until the wait ends (lowest latency; keeps one core busy).
    BusyPoll,
}

/// A waiter's adaptive state; lives in the port, one per direction of waiting.
#[derive(Debug)]
pub(crate) struct Waiter {
    strategy: Cell<WaitStrategy>,
    budget: Cell<Duration>,
    /// Waits that did not succeed at the first look, and futex sleeps among them.
    waits: Cell<u64>,
    sleeps: Cell<u64>,
}

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        Waiter {
            strategy: Cell::new(strategy),
            budget: Cell::new(ADAPTIVE_START),
            waits: Cell::new(0),
            sleeps: Cell::new(0),
        }
    }

    pub(crate) fn strategy(&self) -> WaitStrategy {
        self.strategy.get()
    }

    pub(crate) fn set_strategy(&self, strategy: WaitStrategy) {
        self.strategy.set(strategy);
    }

    /// Whether a wait never sleeps ([`WaitStrategy::BusyPoll`]): it spins until it ends.
    pub(crate) fn never_sleeps(&self) -> bool {
        self.spin_budget().is_none()
    }

    /// How many waits did not succeed at their first look, and how many futex sleeps
    /// they took.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.waits.get(), self.sleeps.get())
    }

    /// A wait that found nothing at its first look begins: counted; its spin budget.
    fn begin_wait(&self) -> Option<Duration> {
        self.waits.set(self.waits.get() + 1);
        self.spin_budget()
    }

    /// Sleeps on `word` while it holds `announced`, at most `nap`: counted.
    fn sleep(&self, word: &AtomicU32, announced: u32, nap: Duration) {
        self.sleeps.set(self.sleeps.get() + 1);
        futex_wait(word, announced, nap);
    }

    pub(crate) fn spin_budget(&self) -> Option<Duration> {
        match self.strategy.get() {
            WaitStrategy::Adaptive => Some(self.budget.get()),
            WaitStrategy::Spin(d) => Some(d),
            WaitStrategy::Block => Some(Duration::ZERO),
            WaitStrategy::BusyPoll => None,
        }
    }

    pub(crate) fn adapt(&self, satisfied_while_spinning: bool) {
        if self.strategy.get() != WaitStrategy::Adaptive {
            return;
        }
        let b = self.budget.get();
        self.budget.set(if satisfied_while_spinning {
            (b * 2).min(ADAPTIVE_MAX)
        } else {
            (b / 2).max(ADAPTIVE_MIN)
        });
    }

    /// Waits until `attempt` yields a result, or until `deadline`.
    ///
    /// `attempt` must be a fresh look at the shared state (it is called after the flag is
    /// announced and the fence is passed); `peer_dead` is the expensive liveness check,
    /// called only between sleeps and rarely while busy-polling. Returns `None` on timeout.
    pub(crate) fn wait<R>(
        &self,
        word: &AtomicU32,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Option<R>,
        mut peer_dead: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        if let Some(r) = attempt() {
            return Some(r);
        }
        let budget = self.begin_wait();
        if budget != Some(Duration::ZERO) {
            let start = Instant::now();
            let mut last_liveness = start;
            loop {
                for _ in 0..64 {
                    std::hint::spin_loop();
                    if let Some(r) = attempt() {
                        self.adapt(true);
                        return Some(r);
                    }
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                match budget {
                    Some(b) if now - start >= b => break,
                    // Spinning on: past the first microseconds, between looks the core
                    // goes to whoever else may run (not before a sleep, which frees it).
                    Some(_) if now - start >= YIELD_AFTER => std::thread::yield_now(),
                    Some(_) => {}
                    None => {
                        if now - last_liveness >= BUSY_LIVENESS_INTERVAL {
                            last_liveness = now;
                            if let Some(r) = peer_dead() {
                                return Some(r);
                            }
                        }
                    }
                }
            }
            self.adapt(false);
        }
        loop {
            let nap = next_nap(deadline)?;
            // An RMW, not a store: a reader's WANTS_DOORBELL bit (its port is also watched
            // by a PortSet or a future) must survive this sleep.
            let announced = word.fetch_or(SLEEPING, Ordering::Relaxed) | SLEEPING;
            // SeqCst fence: pairs with the waker's fence in `wake`: our flag store is
            // ordered before the re-check below, its state store before its flag load.
            fence(Ordering::SeqCst);
            if let Some(r) = attempt() {
                word.fetch_and(!SLEEPING, Ordering::Relaxed);
                return Some(r);
            }
            self.sleep(word, announced, nap);
            word.fetch_and(!SLEEPING, Ordering::Relaxed);
            if let Some(r) = attempt() {
                return Some(r);
            }
            if let Some(r) = peer_dead() {
                return Some(r);
            }
        }
    }
}

/// How long the next sleep of a wait until `deadline` may last: the liveness interval, or
/// less to end at the deadline; `None` once the deadline has passed.
pub(crate) fn next_nap(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(LIVENESS_INTERVAL),
        Some(d) => d
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .map(|left| left.min(LIVENESS_INTERVAL)),
    }
}

/// Bit of a sleeping word: the waiter sleeps (or is about to) in `futex_wait` on it.
pub(crate) const SLEEPING: u32 = 1;
/// Bit of a sleeping word: the waiter watches its socket (a [`PortSet`](crate::PortSet) or
/// an async receive) and wants a doorbell message there instead of a futex wake.
pub(crate) const WANTS_DOORBELL: u32 = 2;

/// Wakes the peer waiting on `word`, if it announced it waits. Call after the state change
/// it waits for is stored. Costs a fence and one load when nobody waits.
///
/// Returns the bits that were set: the caller rings the doorbell when
/// [`WANTS_DOORBELL`] is among them (only the caller knows the socket).
#[inline]
pub(crate) fn wake(word: &AtomicU32) -> u32 {
    // SeqCst fence: pairs with the sleeper's fence in `Waiter::wait` (and in
    // `MessagePort::ready_or_arm` for doorbell waiters).
    fence(Ordering::SeqCst);
    take_waiters(word)
}

/// [`wake`] without its fence: for a caller that orders its state store before this by
/// other means (`polling::wake_reader`).
#[inline]
pub(crate) fn take_waiters(word: &AtomicU32) -> u32 {
    if word.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let was = word.swap(0, Ordering::Relaxed);
    if was & SLEEPING != 0 {
        futex_wake(word);
    }
    was
}
