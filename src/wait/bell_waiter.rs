//! The bell waiter: a thread that sleeps on a broadcast name's bell for the async receives
//! of one `BroadcastChannel`, and wakes their task when a writer rings.
//!
//! A futex cannot join epoll, and a broadcast has no socket a writer could ring (a post
//! would need a system call per member), so an async receive hands its sleep to a thread.
//! The receive does the first half of `bell::sleep` itself (raise the sleepers flag, fence,
//! look once more: `bell::announce`) and leaves its waker here with the bell's value it
//! read first; this thread does the second half, `futex_wait` on that value. So the
//! argument of `shm/bell.rs` carries over unchanged: either the receive's second look finds
//! the message, or the writer sees the flag and moves the bell past the value this thread
//! waits on. See `docs/design.md`, "Async receive on a `BroadcastChannel`".
//!
//! The thread starts with the channel's first receive that has to wait, sleeps on a
//! condition variable while no receive waits, and is stopped and joined when the channel
//! closes. A wait is bounded by the liveness interval: a writer that died between
//! publishing and ringing rings nobody, so the task is woken after a nap to look again.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;

use crate::shm::bell;
use crate::shm::fanout::Registry;
use crate::shm::wake::LIVENESS_INTERVAL;
use crate::sys;
use crate::sys::sync::Ordering;

/// The name of the thread, one per channel with async receives.
pub(crate) const THREAD_NAME: &str = "shmport-bell";

/// A task waiting for the bell to move.
struct Pending {
    waker: Waker,
    /// The bell's value before the receive announced itself.
    seen: u32,
    /// When the task is woken anyway, to look again (and check the others' liveness).
    until: Instant,
}

#[derive(Default)]
struct State {
    pending: Option<Pending>,
    /// The last task woken was woken by its nap's end, not by a ring.
    napped: bool,
    /// The thread sleeps on the condition variable (no task waits).
    idle: bool,
    /// The thread sleeps (or is about to) on the bell.
    on_bell: bool,
    stop: bool,
}

struct Shared {
    /// Kept mapped while the thread may sleep on its bell.
    reg: Arc<Registry>,
    state: Mutex<State>,
    wanted: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere never leaves the state half-written: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let bell = self.reg.bell();
        let mut st = self.state();
        loop {
            if st.stop {
                return;
            }
            let Some(p) = &st.pending else {
                st.idle = true;
                st = self.wanted.wait(st).unwrap_or_else(PoisonError::into_inner);
                st.idle = false;
                continue;
            };
            let (seen, until) = (p.seen, p.until);
            // Relaxed: the task does its own Acquire loads of what was published.
            let rang = bell.load(Ordering::Relaxed) != seen;
            let now = Instant::now();
            if rang || now >= until {
                st.napped = !rang;
                let waker = st.pending.take().map(|p| p.waker);
                drop(st);
                // Outside the lock: a waker may run the task inline, which may wait again.
                // One that panics must not take the channel's wake-ups down with it.
                if let Some(w) = waker {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
                }
                st = self.state();
                continue;
            }
            st.on_bell = true;
            drop(st);
            // Returns at once if the bell moved since `seen`; woken by the writer's ring.
            sys::futex_wait(bell, seen, until - now);
            st = self.state();
            st.on_bell = false;
        }
    }
}

/// One channel's bell waiter thread; dropping it stops the thread and waits for it.
pub(crate) struct BellWaiter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// A waker was left and not forgotten since (so a receive that completes without
    /// having waited costs no lock).
    left: bool,
}

impl std::fmt::Debug for BellWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BellWaiter").finish_non_exhaustive()
    }
}

impl BellWaiter {
    /// Starts a thread that sleeps on `reg`'s bell whenever a task waits.
    pub(crate) fn start(reg: Arc<Registry>) -> io::Result<BellWaiter> {
        let shared = Arc::new(Shared {
            reg,
            state: Mutex::new(State::default()),
            wanted: Condvar::new(),
        });
        let runner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || runner.run())?;
        Ok(BellWaiter {
            shared,
            thread: Some(thread),
            left: false,
        })
    }

    /// Leaves `waker` to be woken once the bell moves past `seen` (the value
    /// `bell::announce` returned before the caller's last look found nothing), or after
    /// one liveness interval. Replaces the waker of an earlier call.
    pub(crate) fn wake_after(&mut self, seen: u32, waker: &Waker) {
        self.left = true;
        let mut st = self.shared.state();
        let waker = match st.pending.take() {
            Some(p) if p.waker.will_wake(waker) => p.waker,
            _ => waker.clone(),
        };
        st.pending = Some(Pending {
            waker,
            seen,
            until: Instant::now() + LIVENESS_INTERVAL,
        });
        // Asleep on the bell, it wakes on its own: on a value the bell has left (a ring
        // came since), or on `seen` itself, with an earlier nap's end.
        if st.idle {
            self.shared.wanted.notify_one();
        }
    }

    /// Forgets the waker of a receive that was dropped or finished.
    pub(crate) fn forget(&mut self) {
        if std::mem::take(&mut self.left) {
            self.shared.state().pending = None;
        }
    }

    /// Whether the last wake-up came from a nap's end rather than a ring (the receive then
    /// checks whether the others live); resets it.
    pub(crate) fn take_napped(&self) -> bool {
        self.left && std::mem::take(&mut self.shared.state().napped)
    }

    /// The thread's id, for tests and for not joining it from itself.
    fn thread_id(&self) -> Option<ThreadId> {
        self.thread.as_ref().map(|t| t.thread().id())
    }
}

impl Drop for BellWaiter {
    fn drop(&mut self) {
        let on_bell = {
            let mut st = self.shared.state();
            st.stop = true;
            st.pending = None;
            self.shared.wanted.notify_one();
            st.on_bell
        };
        if on_bell {
            // Take it out of its nap now rather than at the nap's end (the name's other
            // sleepers wake once for nothing; this happens once per channel).
            bell::nudge(self.shared.reg.bell());
        }
        // A waker running the task inline on the thread itself may drop the channel there:
        // the thread then ends by itself, right after.
        if self.thread_id() != Some(std::thread::current().id()) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}
