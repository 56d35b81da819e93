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

// ----- the ring's publication protocol ------------------------------------------------------

mod ring {
    //! Models of `ring.rs` itself: a producer and a consumer streaming a few records through
    //! a 96-byte ring, with the marks in a table of loom atomics (`RingMem::with_loom_marks`).
    //!
    //! The data area is plain memory, which loom does not track, so a *shadow* of it (one
    //! loom `UnsafeCell` per 8-byte chunk) is touched exactly where the ring touches the
    //! bytes: the producer writes a record's chunks after filling its payload and before
    //! `commit` (whose `Release` store of the mark publishes them), the consumer reads them
    //! after `peek` (whose `Acquire` load of the mark found them) and before `release`.
    //! Loom panics on a shadow access not ordered after the conflicting one. The bytes are
    //! checked too (record index, length, checksum) against logic errors.
    //!
    //! Not covered: the table keeps each slot's last *mark*, while in the real ring payload
    //! bytes of a later lap may overwrite a slot that was a mark in an earlier one.

    use std::ptr::NonNull;

    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    use super::check_model;
    use crate::ring::{
        Consumer, Producer, RECORD_ALIGN, RECORD_HEADER, RecordHeader, RingCtrl, RingMem,
        record_size,
    };
    use crate::sync::AtomicU64;

    const KIND: u32 = 2;
    /// The smallest ring `RingMem` accepts (four headers): records of up to 24 payload bytes.
    const CAP: usize = 96;

    /// A ring over heap memory, with its loom mark table.
    struct HeapRing {
        ctrl: Box<RingCtrl>,
        data: Vec<u128>,
        marks: Vec<AtomicU64>,
    }

    impl HeapRing {
        fn new() -> Self {
            HeapRing {
                ctrl: Box::new(RingCtrl::new()),
                data: vec![0u128; CAP / 16],
                marks: (0..CAP / RECORD_ALIGN).map(|_| AtomicU64::new(0)).collect(),
            }
        }

        fn mem(&mut self) -> RingMem {
            // SAFETY: all three allocations live as long as `self`, which every model keeps
            // alive until the threads using this RingMem are joined; CAP is a multiple of 8
            // of at least four headers, the data 16-aligned, the table CAP / 8 long.
            unsafe {
                RingMem::new(
                    NonNull::from(&mut *self.ctrl),
                    NonNull::new(self.data.as_mut_ptr().cast()).unwrap(),
                    CAP,
                )
                .with_loom_marks(NonNull::new(self.marks.as_mut_ptr()).unwrap())
            }
        }
    }

    /// Loom-tracked stand-ins for the data area's 8-byte chunks.
    struct Shadow(Vec<UnsafeCell<()>>);

    // SAFETY: the cells hold nothing and their pointers are never dereferenced; they exist
    // so loom checks that accesses from different threads are ordered, and it panics
    // (rather than anything being undefined) when they are not.
    unsafe impl Sync for Shadow {}

    impl Shadow {
        fn new() -> Arc<Self> {
            Arc::new(Shadow(
                (0..CAP / RECORD_ALIGN)
                    .map(|_| UnsafeCell::new(()))
                    .collect(),
            ))
        }

        fn chunks(&self, off: usize, len: usize) -> &[UnsafeCell<()>] {
            &self.0[off / RECORD_ALIGN..(off + len).div_ceil(RECORD_ALIGN)]
        }

        fn write(&self, off: usize, len: usize) {
            self.chunks(off, len)
                .iter()
                .for_each(|c| c.with_mut(|_| ()));
        }

        fn read(&self, off: usize, len: usize) {
            self.chunks(off, len).iter().for_each(|c| c.with(|_| ()));
        }
    }

    /// The header fields and payload of a record at `off`: every byte but the mark.
    fn body(off: usize, len: usize) -> (usize, usize) {
        (off + 8, RECORD_HEADER - 8 + len)
    }

    fn payload(i: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|j| (i as usize * 37 + j * 11 + 5) as u8)
            .collect()
    }

    /// FNV-1a, over a payload.
    fn checksum(bytes: &[u8]) -> u32 {
        bytes.iter().fold(0x811c_9dc5, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }

    /// Where the next record starts after one of `size` bytes at `off`: both sides skip a
    /// remainder too short for a header.
    fn advance(off: usize, size: usize) -> usize {
        let next = off + size;
        if CAP - next < RECORD_HEADER { 0 } else { next }
    }

    /// The producer side: writes record `i` as a port does (payload area, then commit).
    struct Writer {
        p: Producer,
        tail_off: usize,
        shadow: Arc<Shadow>,
    }

    impl Writer {
        /// Publishes record `i` of `len` payload bytes if there is room now.
        fn put(&mut self, i: u64, len: usize) -> bool {
            self.p.refresh().unwrap();
            let Some(wrap) = self.p.fits(len) else {
                return false;
            };
            let bytes = payload(i, len);
            for (dst, &b) in self.p.payload_area(wrap).iter_mut().zip(&bytes) {
                dst.write(b);
            }
            if wrap {
                // `commit` writes a padding header here (after the record, before its mark).
                let (off, n) = body(self.tail_off, 0);
                self.shadow.write(off, n);
                self.tail_off = 0;
            }
            let (off, n) = body(self.tail_off, len);
            self.shadow.write(off, n);
            self.tail_off = advance(self.tail_off, record_size(len));
            self.p
                .commit(wrap, len, KIND, (i << 32) | u64::from(checksum(&bytes)));
            true
        }
    }

    /// The consumer side: takes records as a port does (peek, copy, release; flush when
    /// the ring is found empty).
    struct Reader {
        c: Consumer,
        head_off: usize,
        shadow: Arc<Shadow>,
    }

    impl Reader {
        fn take(&mut self) -> Option<(RecordHeader, Vec<u8>)> {
            let Some(record) = self.c.peek().unwrap() else {
                self.c.flush();
                return None;
            };
            let size = record_size(record.len());
            if self.head_off + size > CAP {
                // The record did not fit before the end: `peek` read a padding header here.
                let (off, n) = body(self.head_off, 0);
                self.shadow.read(off, n);
                self.head_off = 0;
            }
            let (off, n) = body(self.head_off, record.len());
            self.shadow.read(off, n);
            let mut out = rkyv::util::AlignedVec::<16>::new();
            self.c.copy_payload(&record, &mut out);
            self.c.release(record);
            self.head_off = advance(self.head_off, size);
            Some((record.header, out.to_vec()))
        }
    }

    /// Asserts that `got` is record `i` of `len` payload bytes, intact.
    fn check(got: &(RecordHeader, Vec<u8>), i: u64, len: usize) {
        let (header, bytes) = got;
        assert_eq!(header.kind, KIND);
        assert_eq!(header.tag >> 32, i, "records out of order");
        assert_eq!(header.len as usize, len);
        assert_eq!(checksum(bytes), header.tag as u32, "payload corrupted");
        assert_eq!(*bytes, payload(i, len));
    }

    /// Streams records of the given payload lengths from a producer thread to the model's
    /// main thread, both yielding to loom while the ring is full or empty.
    fn stream(lens: &'static [usize]) {
        let mut ring = HeapRing::new();
        let shadow = Shadow::new();
        let mut writer = Writer {
            p: Producer::attach(ring.mem()).unwrap(),
            tail_off: 0,
            shadow: shadow.clone(),
        };
        let mut reader = Reader {
            c: Consumer::attach(ring.mem()).unwrap(),
            head_off: 0,
            shadow,
        };
        let producer = thread::spawn(move || {
            for (i, &len) in lens.iter().enumerate() {
                while !writer.put(i as u64, len) {
                    thread::yield_now();
                }
            }
        });
        for (i, &len) in lens.iter().enumerate() {
            let got = loop {
                match reader.take() {
                    Some(got) => break got,
                    None => thread::yield_now(),
                }
            };
            check(&got, i as u64, len);
        }
        producer.join().unwrap();
        drop(ring);
    }

    #[test]
    fn a_published_record_is_seen_whole_by_the_consumer() {
        // 48 + 24 bytes: no wrap, no reuse; only publication.
        check_model(None, || stream(&[24, 0]));
    }

    #[test]
    fn the_producer_never_overwrites_bytes_the_consumer_has_not_released() {
        // Two 48-byte records fill the ring: the third goes where the first was.
        check_model(None, || stream(&[24, 24, 24]));
    }

    #[test]
    fn a_record_that_would_straddle_the_end_is_seen_whole_after_the_padding() {
        // 24 + 48 bytes, then 48 bytes fit only at offset 0, behind a 24-byte padding record.
        check_model(None, || stream(&[0, 24, 24]));
    }

    #[test]
    fn a_remainder_too_short_for_a_header_is_skipped_by_both_sides() {
        // 32 + 48 bytes leave 16 at the end: the third record goes to offset 0.
        check_model(None, || stream(&[8, 24, 8]));
    }
}
