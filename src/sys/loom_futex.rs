//! A model of the futex for loom (`--cfg loom`), standing in for the kernel's.
//!
//! The kernel compares the word with `expected` and queues the sleeper atomically with
//! respect to `futex_wake` on the same word; a global loom `Mutex` gives the model that
//! atomicity, and a `Condvar` plays the wait queue. Two things differ on purpose:
//! - the timeout is ignored and there are no spurious returns: a sleeper returns only if
//!   the word differs from `expected` or a wake on its own word arrives after it queued.
//!   A wake-up the protocol loses therefore leaves the sleeper blocked for good, and loom
//!   reports the deadlock instead of the real timeout hiding it;
//! - wakes are counted per word address, so a wake on the other ring's word (or the other
//!   direction's) does not rescue a sleeper, exactly as with the kernel's per-address queues.

use std::collections::HashMap;
use std::time::Duration;

use loom::sync::{Condvar, Mutex};

use crate::sys::sync::{AtomicU32, Ordering};

struct Futexes {
    /// Wakes issued so far, per futex word address.
    wakes: Mutex<HashMap<usize, u64>>,
    /// Every sleeper waits here; each checks on wake-up whether the wake was for its word.
    queue: Condvar,
}

loom::lazy_static! {
    static ref FUTEXES: Futexes = Futexes {
        wakes: Mutex::new(HashMap::new()),
        queue: Condvar::new(),
    };
}

fn key(word: &AtomicU32) -> usize {
    std::ptr::from_ref(word) as usize
}

/// Sleeps while `*word == expected`, until a `futex_wake` on `word` (never on a timeout).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Duration) {
    let mut wakes = FUTEXES.wakes.lock().unwrap();
    // Relaxed, as the kernel's read of the word: what orders it against a waker is the
    // lock `futex_wake` takes too (the kernel's hash-bucket lock).
    if word.load(Ordering::Relaxed) != expected {
        return;
    }
    let seen = wakes.get(&key(word)).copied().unwrap_or(0);
    while wakes.get(&key(word)).copied().unwrap_or(0) == seen {
        wakes = FUTEXES.queue.wait(wakes).unwrap();
    }
}

/// Wakes every sleeper queued on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    *FUTEXES.wakes.lock().unwrap().entry(key(word)).or_insert(0) += 1;
    FUTEXES.queue.notify_all();
}

/// Loom has no asymmetric barrier: both sides of one are modelled as what `membarrier`
/// guarantees they amount to, a full fence each (the light side's compiler barrier is
/// promoted to one by the remote barrier it pairs with). Registration always succeeds.
pub(crate) fn register_for_remote_barriers() -> bool {
    true
}

/// See [`register_for_remote_barriers`].
pub(crate) fn remote_barrier() {
    crate::sys::sync::fence(Ordering::SeqCst);
}

/// See [`register_for_remote_barriers`].
pub(crate) fn light_barrier() {
    crate::sys::sync::fence(Ordering::SeqCst);
}
