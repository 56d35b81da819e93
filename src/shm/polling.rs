//! A reader that busy-polls lets its writer post without a full fence.
//!
//! The wake protocol (`wake.rs`) pairs a full fence on each side: the writer's, after every
//! post, orders its record's stores before its load of the reader's sleep flag. On this
//! project's 2-core AMD VM that fence was about a third of a post's cost in a stream of
//! 64-byte messages: it waits until the record's stores, to lines the reader just read,
//! have left the store buffer. A reader that busy-polls never sleeps and arms no doorbell,
//! so for it the fence buys nothing. This module lets the writer leave it out, and makes
//! the reader pay instead, once, when it stops busy-polling.
//!
//! # The protocol
//!
//! `RingCtrl::reader_polls` is set by a reader whose wait never sleeps (strategy
//! `BusyPoll`), and cleared by it before it next announces a sleep or a doorbell:
//!
//! ```text
//! reader (rare)                            writer (every post)
//! reader_polls = 1  (polls, never sleeps)  store record, mark, tail    (Release)
//! ...                                      light_barrier()             (compiler only)
//! reader_polls = 0                         if reader_polls != 0 {
//! remote_barrier()  (membarrier)               take_waiters(reader_sleeping)
//! then sleeps as in wake.rs:               } else {
//!   flag = 1; fence; look; futex_wait          wake(reader_sleeping)   (fence, load)
//!                                          }
//! ```
//!
//! `remote_barrier` (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`) runs a full barrier on
//! every CPU that runs a thread of a registered process, which turns the writer's compiler
//! barrier into a full one wherever it stands at that moment (the kernel's own statement
//! of the guarantee: the scenarios at the top of `kernel/sched/membarrier.c`). So the
//! reader's clearing store and the writer's record stores are ordered as by a pair of
//! fences: either the writer's load sees `reader_polls == 0`, and from then on it fences
//! and checks the sleep flag as before; or the reader's looks after the barrier see the
//! record, so it does not sleep past it. Either way no wake-up is lost.
//!
//! A writer skips the fence only after its own process has registered
//! (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, once per process, at the first post that
//! finds the flag set); a process whose registration is refused keeps the fence. A reader
//! sets the flag only in a process whose registration succeeded (so the kernel has the
//! command it will later send).
//!
//! Loom cannot model an asymmetric barrier; the model (`loom_tests.rs`,
//! `a_reader_that_stops_polling_mid_stream_misses_no_wake_up`) checks the flag's logic with
//! both barriers as full fences, which is what the kernel guarantees they amount to.
//!
//! # Costs and trust
//!
//! The reader pays one `membarrier` (an interrupt to each CPU running a registered
//! process's thread, a few microseconds) each time it goes from busy-polling to a wait
//! that may sleep: a port that alternates `BusyPoll` receives with a `PortSet` or an async
//! receive pays it at every change. The flag is in shared memory, so the peer can write
//! it: a writer that sets it only skips its own fences and loses its own wake-ups (its
//! reader's naps end within the liveness interval anyway); a reader that sets it and then
//! sleeps delays only the messages it waits for.

use std::cell::Cell;
use std::sync::atomic::AtomicU8;

use super::ring::RingCtrl;
use super::wake::{take_waiters, wake};
use crate::sys;
use crate::sys::sync::Ordering;

/// Whether this process takes part in remote barriers: `UNKNOWN` until first needed.
static REGISTERED: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// Whether this process is registered for remote barriers (registering on first call).
#[inline]
pub(crate) fn registered() -> bool {
    match REGISTERED.load(std::sync::atomic::Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => register(),
    }
}

#[cold]
fn register() -> bool {
    let ok = sys::register_for_remote_barriers();
    if !ok {
        event!(
            debug,
            "membarrier registration refused: posts keep their full fence"
        );
    }
    let state = if ok { YES } else { NO };
    REGISTERED.store(state, std::sync::atomic::Ordering::Relaxed);
    ok
}

/// The writer's wake-up after it published a record in the ring `ctrl` controls: as
/// [`wake`], without the full fence while the reader busy-polls. Returns the sleep word's
/// bits, as [`wake`].
#[inline]
pub(crate) fn wake_reader(ctrl: &RingCtrl) -> u32 {
    // Orders the record's stores before the flag's load, once a remote barrier from the
    // reader promotes it (module doc).
    sys::light_barrier();
    if ctrl.reader_polls.load(Ordering::Relaxed) != 0 && registered() {
        return take_waiters(&ctrl.reader_sleeping);
    }
    wake(&ctrl.reader_sleeping)
}

/// What the reader last stored in `reader_polls`, so that it writes the writer's line only
/// when its way of waiting changes. Starts unknown: a port that arrived from elsewhere
/// may find the flag its previous holder set.
#[derive(Debug)]
pub(crate) struct PollFlag(Cell<Known>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Unknown,
    Clear,
    Set,
}

impl PollFlag {
    pub(crate) fn new() -> Self {
        PollFlag(Cell::new(Known::Unknown))
    }

    /// A wait that never sleeps begins: the writer may leave out its fence.
    #[inline]
    pub(crate) fn polling(&self, ctrl: &RingCtrl) {
        if self.0.get() != Known::Set && registered() {
            ctrl.reader_polls.store(1, Ordering::Relaxed);
            self.0.set(Known::Set);
        }
    }

    /// Call before announcing a sleep or a doorbell on the ring `ctrl` controls: clears
    /// the flag and sends the remote barrier if it was set. Every way of waiting on
    /// `reader_sleeping` must call this first (today `recv_until` and `arm_for_data`);
    /// `Waiter::wait` does not, as it also serves the writer's wait for room.
    #[inline]
    pub(crate) fn may_sleep(&self, ctrl: &RingCtrl) {
        if self.0.get() == Known::Clear {
            return;
        }
        self.stop_polling(ctrl);
    }

    #[cold]
    fn stop_polling(&self, ctrl: &RingCtrl) {
        if ctrl.reader_polls.load(Ordering::Relaxed) != 0 {
            ctrl.reader_polls.store(0, Ordering::Relaxed);
            sys::remote_barrier();
        }
        self.0.set(Known::Clear);
    }
}
