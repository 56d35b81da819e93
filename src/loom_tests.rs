//! Loom models of the sleep/wake protocol of `wake.rs`.
//!
//! Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib
//! loom_tests` (see `docs/testing.md`). Loom runs each model under every interleaving of its
//! threads' atomic operations (up to a preemption bound) and every value a weakly ordered
//! load may return, so a model that passes holds for all of them, not only for the ones a
//! stress test happens to hit.
//!
//! The code under test is the real [`Waiter::wait`] and [`wake`], sleeping on the real
//! [`RingCtrl`] words through loom's futex model (`platform/loom_futex.rs`). That model
//! never times out, so a lost wake-up leaves the sleeper blocked for good and loom reports
//! a deadlock; the 50 ms liveness timeout cannot hide it.
//!
//! What the waiters wait for is a small channel that stands in for the ring, with the
//! ring's index discipline: the producer publishes by a `Release` store of its count, the
//! consumer releases by a `Release` store of its own, each side reads the other's with
//! `Acquire`. Its slots are loom `UnsafeCell`s, so loom also checks that every value is
//! written before it is read and read before it is overwritten.

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use crate::ring::RingCtrl;
use crate::sync::{AtomicU32, Ordering};
use crate::wake::{WaitStrategy, Waiter, wake};

/// A channel of `slots.len()` values between one producer and one consumer.
///
/// `ctrl.tail` counts values published, `ctrl.head` values released; the sleep flags are
/// `ctrl.reader_sleeping` and `ctrl.writer_sleeping`, as on a real ring.
struct Channel {
    ctrl: RingCtrl,
    slots: Vec<UnsafeCell<u64>>,
    /// The producer's `closed` flag, as in the segment header.
    closed: AtomicU32,
}

// SAFETY: `slots` is the only non-Sync field. The producer writes a slot only while the
// consumer's released count says it is free, the consumer reads it only while the
// producer's published count says it is full; every access goes through loom's
// `UnsafeCell`, which panics on an access not ordered after the conflicting one instead
// of letting two threads race.
unsafe impl Sync for Channel {}

impl Channel {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(Channel {
            ctrl: RingCtrl::new(),
            slots: (0..slots).map(|_| UnsafeCell::new(0)).collect(),
            closed: AtomicU32::new(0),
        })
    }

    fn slot(&self, n: u64) -> &UnsafeCell<u64> {
        &self.slots[n as usize % self.slots.len()]
    }
}

/// The value the producer sends `n`-th.
fn value(n: u64) -> u64 {
    0x5eed_0000 + n * 7919
}

/// The producing side: publishes values in order.
struct Sender {
    ch: Arc<Channel>,
    sent: u64,
}

impl Sender {
    /// Publishes the next value if a slot is free (as `Producer::refresh` + `try_write`).
    fn try_send(&mut self) -> bool {
        let released = self.ch.ctrl.head.load(Ordering::Acquire);
        if self.sent - released == self.ch.slots.len() as u64 {
            return false;
        }
        let v = value(self.sent);
        // SAFETY: the slot is free: the consumer released it (Acquire above), and loom
        // checks that claim.
        self.ch.slot(self.sent).with_mut(|p| unsafe { p.write(v) });
        self.sent += 1;
        self.ch.ctrl.tail.store(self.sent, Ordering::Release);
        true
    }

    /// As a blocking `post_message`: waits for room, publishes, wakes the reader.
    fn send(&mut self, waiter: &Waiter) {
        let ch = self.ch.clone();
        let sent = waiter.wait(
            &ch.ctrl.writer_sleeping,
            None,
            || self.try_send().then_some(()),
            || None,
        );
        assert_eq!(sent, Some(()));
        wake(&ch.ctrl.reader_sleeping);
    }

    /// As a port's Drop: sets the closed flag, then wakes the reader.
    fn close(self) {
        self.ch.closed.store(1, Ordering::Release);
        wake(&self.ch.ctrl.reader_sleeping);
    }
}

/// The consuming side: takes values in order.
struct Receiver {
    ch: Arc<Channel>,
    taken: u64,
}

impl Receiver {
    /// Takes the next value if one is published (as `Consumer::peek` + copy + release).
    fn try_take(&mut self) -> Option<u64> {
        let published = self.ch.ctrl.tail.load(Ordering::Acquire);
        if published == self.taken {
            return None;
        }
        // SAFETY: the slot is full: the producer published it (Acquire above), and loom
        // checks that claim.
        let v = self.ch.slot(self.taken).with(|p| unsafe { p.read() });
        self.taken += 1;
        self.ch.ctrl.head.store(self.taken, Ordering::Release);
        Some(v)
    }

    /// As `recv`: waits for a value or for the producer's close, then wakes a writer
    /// waiting for room. `None` means closed (and drained).
    fn recv(&mut self, waiter: &Waiter) -> Option<u64> {
        let ch = self.ch.clone();
        let got = waiter.wait(
            &ch.ctrl.reader_sleeping,
            None,
            || match self.try_take() {
                Some(v) => Some(Some(v)),
                // Closed: what was published before the close is visible now; look once more.
                None if ch.closed.load(Ordering::Acquire) != 0 => Some(self.try_take()),
                None => None,
            },
            || None,
        );
        wake(&ch.ctrl.writer_sleeping);
        got.expect("no deadline, so the wait ends only with a result")
    }
}

fn channel(slots: usize) -> (Sender, Receiver) {
    let ch = Channel::new(slots);
    (
        Sender {
            ch: ch.clone(),
            sent: 0,
        },
        Receiver { ch, taken: 0 },
    )
}

fn blocking() -> Waiter {
    Waiter::new(WaitStrategy::Block)
}

/// Runs `model` under loom with at most `preemptions` preemptions per execution (`None`:
/// every interleaving), or with `LOOM_MAX_PREEMPTIONS` when that is set, and prints how
/// many executions it explored (shown with `--nocapture`).
fn check_model(preemptions: Option<usize>, model: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = preemptions;
    }
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = executions.clone();
    builder.check(move || {
        counter.fetch_add(1, Relaxed);
        model();
    });
    eprintln!("explored {} executions", executions.load(Relaxed));
}

#[test]
fn a_consumer_sleeping_for_data_is_woken_by_a_publish() {
    check_model(None, || {
        let (mut tx, mut rx) = channel(1);
        let producer = thread::spawn(move || tx.send(&blocking()));
        assert_eq!(rx.recv(&blocking()), Some(value(0)));
        producer.join().unwrap();
    });
}

#[test]
fn a_producer_sleeping_for_room_is_woken_by_a_release() {
    check_model(None, || {
        let (mut tx, mut rx) = channel(1);
        assert!(tx.try_send(), "the first value fills the channel");
        let producer = thread::spawn(move || {
            tx.send(&blocking());
            tx
        });
        assert_eq!(rx.recv(&blocking()), Some(value(0)));
        let tx = producer.join().unwrap();
        assert_eq!(tx.sent, 2);
        assert_eq!(rx.try_take(), Some(value(1)));
    });
}

#[test]
fn a_consumer_sleeping_for_data_is_woken_when_the_peer_closes() {
    check_model(None, || {
        let (tx, mut rx) = channel(1);
        let producer = thread::spawn(move || tx.close());
        assert_eq!(rx.recv(&blocking()), None);
        producer.join().unwrap();
    });
}

#[test]
fn a_stream_with_both_sides_sleeping_never_loses_a_wake_up() {
    // Three values through one slot: the producer sleeps for room and the consumer for
    // data, each woken only by the other, with both flags on the same control block.
    //
    // Bounded at 3 preemptions. From 4 on, loom 0.7 reports a deadlock that the C++/Rust
    // memory model forbids: `wake`'s `swap` reads the sleeper's 0 and writes 0, the sleeper
    // then announces again (`store(1)`), and a later `wake` of the same thread, after its
    // SeqCst fence, is allowed to read its own old swap instead of that newer 1. An RMW
    // must read the value just before it in modification order, so the newer 1 is ordered
    // after the swap, and the fences then oblige one side to see the other; loom keeps
    // only a partial modification order and misses this (loom issues #254, #389). Written
    // as `compare_exchange(1, 0)`, which is equivalent here, the model passes at 5.
    check_model(Some(3), || {
        let (mut tx, mut rx) = channel(1);
        let producer = thread::spawn(move || {
            let waiter = blocking();
            for _ in 0..3 {
                tx.send(&waiter);
            }
        });
        let waiter = blocking();
        for n in 0..3 {
            assert_eq!(rx.recv(&waiter), Some(value(n)));
        }
        producer.join().unwrap();
    });
}
