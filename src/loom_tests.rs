//! Loom models of the sleep/wake protocol of `wake.rs` (below) and of the ring's publication
//! protocol in `ring.rs` (module `ring`, at the end).
//!
//! Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib
//! loom_tests` (see `docs/testing.md`). Loom runs each model under every interleaving of its
//! threads' atomic operations (up to a preemption bound) and every value a weakly ordered
//! load may return, so a model that passes holds for all of them, not only for the ones a
//! stress test happens to hit.
//!
//! For the wake models, the code under test is the real [`Waiter::wait`] and [`wake`],
//! sleeping on the real [`RingCtrl`] words through loom's futex model
//! (`platform/loom_futex.rs`). That model never times out, so a lost wake-up leaves the
//! sleeper blocked for good and loom reports a deadlock; the 50 ms liveness timeout cannot
//! hide it.
//!
//! What the waiters wait for is a small channel that stands in for the ring, with the
//! ring's index discipline: the producer publishes by a `Release` store of its count, the
//! consumer releases by a `Release` store of its own, each side reads the other's with
//! `Acquire`. Its slots are loom `UnsafeCell`s, so loom also checks that every value is
//! written before it is read and read before it is overwritten.

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use crate::shm::polling::{PollFlag, wake_reader};
use crate::shm::ring::RingCtrl;
use crate::shm::wake::{WANTS_DOORBELL, WaitStrategy, Waiter, wake};
use crate::sys::sync::{AtomicU32, Ordering, fence};

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
        self.wait_to_publish(waiter);
        wake(&self.ch.ctrl.reader_sleeping);
    }

    /// As a blocking `post_message` to a reader that may busy-poll: wakes it through
    /// `polling::wake_reader`, as a port's post does.
    fn send_to_poller(&mut self, waiter: &Waiter) {
        self.wait_to_publish(waiter);
        wake_reader(&self.ch.ctrl);
    }

    fn wait_to_publish(&mut self, waiter: &Waiter) {
        let ch = self.ch.clone();
        let sent = waiter.wait(
            &ch.ctrl.writer_sleeping,
            None,
            || self.try_send().then_some(()),
            || None,
        );
        assert_eq!(sent, Some(()));
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
    check_model_with(preemptions, 1_000, model)
}

/// As [`check_model`], allowing up to `branches` branches per execution (models with three
/// threads that yield while waiting need more than loom's default 1,000).
fn check_model_with(
    preemptions: Option<usize>,
    branches: usize,
    model: impl Fn() + Sync + Send + 'static,
) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    let mut builder = loom::model::Builder::new();
    builder.max_branches = branches;
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
fn a_reader_that_stops_polling_mid_stream_misses_no_wake_up() {
    // `shm/polling.rs`: the reader busy-polls (its flag set, so the writer leaves out its
    // fence), takes what it finds at one look, then clears the flag (the remote barrier)
    // and blocks for the rest while the writer goes on posting. Loom models both sides of
    // the asymmetric barrier as full fences, which is what `membarrier` guarantees they
    // amount to; the model checks the flag's handling around them. Two values and two
    // blocking waits make the full search run for hours: bounded to two preemptions.
    check_model(Some(2), || {
        let (mut tx, mut rx) = channel(2);
        let flag = PollFlag::new();
        flag.polling(&rx.ch.ctrl);
        let producer = thread::spawn(move || {
            tx.send_to_poller(&blocking());
            tx.send_to_poller(&blocking());
        });
        let mut got: Vec<u64> = rx.try_take().into_iter().collect();
        flag.may_sleep(&rx.ch.ctrl);
        assert_eq!(rx.ch.ctrl.reader_polls.load(Ordering::Relaxed), 0);
        while got.len() < 2 {
            got.push(rx.recv(&blocking()).expect("the producer does not close"));
        }
        assert_eq!(got, [value(0), value(1)]);
        producer.join().unwrap();
    });
}

#[test]
fn a_reader_armed_for_a_doorbell_sees_the_record_or_gets_the_doorbell() {
    // The PortSet / async path: instead of sleeping on the futex, the reader sets
    // WANTS_DOORBELL, fences, looks again (as `MessagePort::ready_or_arm`), then would
    // wait in epoll; the writer publishes and rings when `wake` reports the bit.
    check_model(None, || {
        let (mut tx, mut rx) = channel(1);
        let rang = Arc::new(AtomicU32::new(0));
        let rang2 = rang.clone();
        let producer = thread::spawn(move || {
            assert!(tx.try_send());
            if wake(&tx.ch.ctrl.reader_sleeping) & WANTS_DOORBELL != 0 {
                rang2.store(1, Ordering::Relaxed); // the doorbell message
            }
        });
        let seen = rx.try_take().is_some() || {
            rx.ch
                .ctrl
                .reader_sleeping
                .fetch_or(WANTS_DOORBELL, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            rx.try_take().is_some()
        };
        producer.join().unwrap();
        assert!(
            seen || rang.load(Ordering::Relaxed) == 1,
            "the reader missed the record and got no doorbell"
        );
    });
}

#[test]
fn a_stream_with_both_sides_sleeping_never_loses_a_wake_up() {
    // Three values through one slot: the producer sleeps for room and the consumer for
    // data, each woken only by the other, with both flags on the same control block.
    //
    // Bounded at 3 preemptions to keep CI short. While the sleeper announced itself with a
    // plain `store(1)`, loom 0.7 reported a deadlock from 4 preemptions on that the memory
    // model forbids (a later `wake` was allowed to read its own old `swap` instead of the
    // newer store; loom keeps only a partial modification order, issues #254, #389). The
    // sleeper now announces with `fetch_or` (an RMW, so a doorbell bit in the same word
    // survives), and the model passes at 4 (224,292 executions) and 5 (1,819,600).
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
    //! Models of `ring.rs` itself: the real `Producer` and `Consumer` streaming a few records
    //! through a 96-byte ring (the smallest `RingMem` accepts: records of up to 24 payload
    //! bytes), with the marks in a table of loom atomics (`RingMem::with_loom_marks`).
    //!
    //! The table stands for the data area's 8-byte words as the consumer polls them. Loom's
    //! atomics cannot be laid over bytes, so every write the real ring makes to a word is
    //! mirrored there: `commit` stores marks and zeroes (`clear_next_mark`) through the table
    //! itself, and the model stores each payload word it writes into the table too. So a
    //! payload word left over from an earlier lap is exactly what the consumer finds when it
    //! polls that word, as in the real ring. Every payload word is forged to be the mark the
    //! consumer would accept at that word one lap later: a consumer that ever takes stale
    //! bytes for a record gets a phantom record (caught by the order check or the final
    //! empty check) or a `Corrupt` error (a panic in `take`).
    //!
    //! The data area itself is plain memory, which loom does not track, so a *shadow* of it
    //! (one loom `UnsafeCell` per 8-byte word) is touched where the ring touches the bytes:
    //! the producer writes a record's words (header fields and payload; a padding record's
    //! fields) before `commit` publishes them, the consumer reads them after `peek` found
    //! them, and reads the word under its head each time it polls a mark there. Loom panics
    //! on a shadow access not ordered after the conflicting one: a byte overwritten before
    //! the consumer released it, a record read before it was published, or a plain write
    //! racing a poll of a mark (marks must be the only atomics in the data area).

    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed as StdRelaxed};

    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    use super::{check_model, check_model_with};
    use crate::shm::ring::{
        Consumer, Placement, Producer, RECORD_ALIGN, RECORD_HEADER, RecordHeader, RingCtrl,
        RingMem, record_size,
    };
    use crate::sys::sync::{AtomicU64, Ordering};

    const KIND: u32 = 2;
    const CAP: usize = 96;
    const WORDS: usize = CAP / RECORD_ALIGN;

    /// A ring over heap memory: control block, data area, mark table and shadow.
    struct Ring {
        ctrl: RingCtrl,
        /// `CAP / 16` u128s from `Box::into_raw`, freed in `Drop`; written only through
        /// raw pointers (the `RingMem`'s and the model's).
        data: NonNull<u128>,
        marks: Vec<AtomicU64>,
        shadow: Vec<UnsafeCell<()>>,
        /// Two readers' cursors, for a ring with many readers (`ring_many.rs`).
        cursors: [AtomicU64; 2],
    }

    // SAFETY: `data` is reached through raw pointers by the producer and the consumer under
    // the ring's protocol, which is what the model checks; the shadow cells hold nothing and
    // exist so that loom panics (instead of anything being undefined) on an unordered
    // access; the rest are loom atomics.
    unsafe impl Send for Ring {}
    // SAFETY: as above.
    unsafe impl Sync for Ring {}

    impl Ring {
        fn new() -> Arc<Self> {
            let data = Box::into_raw(vec![0u128; CAP / 16].into_boxed_slice());
            Arc::new(Ring {
                ctrl: RingCtrl::new(),
                data: NonNull::new(data.cast::<u128>()).unwrap(),
                marks: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
                shadow: (0..WORDS).map(|_| UnsafeCell::new(())).collect(),
                cursors: [AtomicU64::new(0), AtomicU64::new(0)],
            })
        }

        fn mem(&self) -> RingMem {
            // SAFETY: the control block, the CAP bytes of data (16-aligned) and the CAP / 8
            // mark atomics live as long as this `Ring`, which every user of the `RingMem`
            // keeps alive through its `Arc`. CAP is a multiple of 8 of four headers.
            unsafe {
                RingMem::new(NonNull::from(&self.ctrl), self.data.cast(), CAP)
                    .with_loom_marks(NonNull::new(self.marks.as_ptr().cast_mut()).unwrap())
            }
        }

        fn offset_of(&self, p: *const std::mem::MaybeUninit<u8>) -> usize {
            p as usize - self.data.as_ptr() as usize
        }

        fn shadow_write(&self, off: usize, len: usize) {
            for w in off / RECORD_ALIGN..(off + len).div_ceil(RECORD_ALIGN) {
                self.shadow[w].with_mut(|_| ());
            }
        }

        fn shadow_read(&self, off: usize, len: usize) {
            for w in off / RECORD_ALIGN..(off + len).div_ceil(RECORD_ALIGN) {
                self.shadow[w].with(|_| ());
            }
        }
    }

    impl Drop for Ring {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` as a boxed slice of CAP / 16 u128s; freed once.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    self.data.as_ptr(),
                    CAP / 16,
                ))
            });
        }
    }

    /// The mark a record at data-area offset `off` of lap `lap` carries.
    fn mark_at(lap: u64, off: usize) -> u64 {
        lap * CAP as u64 + off as u64 + 1
    }

    /// FNV-1a, over a payload.
    fn checksum(bytes: &[u8]) -> u32 {
        bytes.iter().fold(0x811c_9dc5, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }

    /// Counts, over a model's executions, commits that left a remainder shorter than a
    /// header in place (it was not free) and had the next commit skip it as a wrap.
    static REMAINDER_LEFT: AtomicUsize = AtomicUsize::new(0);
    /// ...and commits that skipped such a remainder at once (it was free).
    static REMAINDER_SKIPPED: AtomicUsize = AtomicUsize::new(0);

    /// The producer side: writes record `i` as a port does (payload area, then commit).
    struct Writer {
        p: Producer,
        ring: Arc<Ring>,
        /// Offset just past the last record (not reduced modulo CAP).
        last_end: usize,
        lap: u64,
        /// Many readers: the consumer index is the least of the ring's cursors.
        many: bool,
    }

    impl Writer {
        /// Publishes record `i` of `len` payload bytes if there is room now.
        fn put(&mut self, i: u64, len: usize) -> bool {
            if self.many {
                // Acquire: pairs with each reader's Release store in `Consumer::flush`.
                let low = (self.ring.cursors.iter())
                    .map(|c| c.load(Ordering::Acquire))
                    .min()
                    .unwrap();
                self.p.set_head(low).unwrap();
            } else {
                self.p.refresh().unwrap();
            }
            let Some(at) = self.p.fits(len) else {
                return false;
            };
            let wrap = at == Placement::AfterWrap;
            let mut reservation = self.p.reserve(at).expect("fits promised room");
            let area = reservation.area();
            assert!(area.len() >= len);
            let rec_at = self.ring.offset_of(area.as_ptr()) - RECORD_HEADER;
            let short_rest = CAP - self.last_end < RECORD_HEADER;
            if wrap {
                assert_eq!(rec_at, 0);
            } else {
                let skipped = short_rest && self.last_end != CAP && rec_at == 0;
                assert!(rec_at == self.last_end % CAP || skipped, "record misplaced");
            }
            if short_rest && self.last_end != CAP {
                let counter = if wrap {
                    &REMAINDER_LEFT
                } else {
                    &REMAINDER_SKIPPED
                };
                counter.fetch_add(1, StdRelaxed);
            }
            if rec_at < self.last_end {
                self.lap += 1;
            }
            // Each payload word is the mark the consumer would accept there one lap later.
            let payload_at = rec_at + RECORD_HEADER;
            let bytes: Vec<u8> = (0..len / 8)
                .flat_map(|w| mark_at(self.lap + 1, payload_at + 8 * w).to_le_bytes())
                .collect();
            for (dst, &b) in area.iter_mut().zip(&bytes) {
                dst.write(b);
            }
            for (w, word) in bytes.chunks_exact(8).enumerate() {
                let word = u64::from_le_bytes(word.try_into().unwrap());
                self.ring.marks[payload_at / 8 + w].store(word, Ordering::Relaxed);
            }
            // What `commit` writes besides marks: the record's header fields (the payload is
            // written above) and, at a wrap with room for one, a padding record's fields.
            self.ring.shadow_write(rec_at + 8, RECORD_HEADER - 8 + len);
            if wrap && !short_rest {
                self.ring.shadow_write(self.last_end + 8, RECORD_HEADER - 8);
            }
            reservation.commit(len, KIND, (i << 32) | u64::from(checksum(&bytes)));
            self.last_end = rec_at + record_size(len);
            true
        }
    }

    /// The consumer side: takes records as a port does (peek, copy, release; flush when
    /// the ring is found empty).
    struct Reader {
        c: Consumer,
        ring: Arc<Ring>,
        head_off: usize,
    }

    impl Reader {
        fn take(&mut self) -> Option<(RecordHeader, Vec<u8>)> {
            if CAP - self.head_off < RECORD_HEADER {
                // `peek` skips a remainder too short for a header.
                self.head_off = 0;
            }
            let Some(record) = self.c.peek().unwrap() else {
                // `peek` polled the mark under the head: no plain write may race it.
                self.ring.shadow_read(self.head_off, 8);
                self.c.flush();
                return None;
            };
            let size = record_size(record.len());
            if self.head_off + size > CAP {
                // The record is at offset 0: `peek` went through a padding record here.
                self.ring.shadow_read(self.head_off, RECORD_HEADER);
                self.head_off = 0;
            }
            self.ring.shadow_read(self.head_off, size);
            let mut out = rkyv::util::AlignedVec::<16>::new();
            self.c.copy_payload(&record, &mut out);
            self.c.release(record);
            self.head_off += size;
            Some((record.header, out.to_vec()))
        }
    }

    /// Asserts that `got` is record `i` of `len` payload bytes, intact.
    fn check(got: &(RecordHeader, Vec<u8>), i: u64, len: usize) {
        let (header, bytes) = got;
        assert_eq!(header.kind, KIND);
        assert_eq!(header.tag >> 32, i, "a record out of order, or a phantom");
        assert_eq!(header.len as usize, len);
        assert_eq!(bytes.len(), len);
        assert_eq!(checksum(bytes), header.tag as u32, "payload corrupted");
    }

    /// Streams records of the given payload lengths from a producer thread to the model's
    /// main thread, both yielding to loom while the ring is full or empty; then checks that
    /// the drained ring holds no further record (before and after the producer finishes)
    /// and that the indices agree.
    fn stream(lens: &'static [usize]) {
        let ring = Ring::new();
        let mut writer = Writer {
            p: Producer::attach(ring.mem()).unwrap(),
            ring: ring.clone(),
            last_end: 0,
            lap: 0,
            many: false,
        };
        let mut reader = Reader {
            c: Consumer::attach(ring.mem()).unwrap(),
            ring,
            head_off: 0,
        };
        let producer = thread::spawn(move || {
            for (i, &len) in lens.iter().enumerate() {
                while !writer.put(i as u64, len) {
                    thread::yield_now();
                }
            }
            writer
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
        // The slot after the last record, polled while the producer may still be inside
        // its last `commit`, then once it is done.
        assert!(reader.take().is_none(), "a record nobody posted");
        let mut writer = producer.join().unwrap();
        assert!(reader.take().is_none(), "a record nobody posted");
        writer.p.refresh().unwrap();
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
    fn a_remainder_too_short_for_a_header_is_skipped_when_free_else_by_the_next_wrap() {
        // 32 + 48 bytes leave 16 at the end of lap 0 (free: skipped at once). In lap 1,
        // 48 + 32 bytes leave 16 again; if the consumer's published head still sits at the
        // end of lap 0's last record (80), those 16 bytes are not free: the producer leaves
        // them and the last record wraps to offset 0 without a padding record. Both happen
        // in some executions (asserted below).
        REMAINDER_LEFT.store(0, StdRelaxed);
        REMAINDER_SKIPPED.store(0, StdRelaxed);
        check_model(Some(4), || stream(&[8, 24, 24, 8, 0]));
        let (left, skipped) = (
            REMAINDER_LEFT.load(StdRelaxed),
            REMAINDER_SKIPPED.load(StdRelaxed),
        );
        eprintln!("remainder left for the next wrap in {left} commits, skipped in {skipped}");
        assert!(left > 0 && skipped > 0);
    }

    #[test]
    fn stale_payload_bytes_at_the_consumer_head_are_never_a_record() {
        // `clear_next_mark`. Lap 0: A (0..48) and B (48..96); A's payload word at offset 24
        // holds 121, the mark of a record at offset 24 of lap 1. Lap 1: C, an empty record
        // at 0..24, puts the consumer's head at position 120, offset 24, over that word.
        // The commit of C zeroes the word before publishing C, so the consumer, however it
        // interleaves with the producer, sees 0 there (or a later record), never 121.
        check_model(None, || stream(&[24, 24, 0]));
    }

    /// A ring with one writer and two readers (`ring_many.rs`, a `BroadcastChannel`
    /// member's): each reader publishes to its own cursor, the writer takes the least as
    /// its consumer index. Both readers get every record whole and in order, and the
    /// shadow panics if the writer reuses bytes the slower reader has not released.
    #[test]
    fn with_two_readers_the_writer_never_overwrites_what_the_slower_has_not_released() {
        const LENS: [usize; 3] = [24, 24, 24]; // 48-byte records: the third reuses the first's bytes
        check_model_with(Some(3), 100_000, || {
            let ring = Ring::new();
            let mut writer = Writer {
                p: Producer::attach(ring.mem()).unwrap(),
                ring: ring.clone(),
                last_end: 0,
                lap: 0,
                many: true,
            };
            let reader = |k: usize| Reader {
                // SAFETY: the cursor is in `ring`, which the reader keeps alive.
                c: unsafe {
                    Consumer::attach_reader(ring.mem(), 0, NonNull::from(&ring.cursors[k]))
                }
                .unwrap(),
                ring: ring.clone(),
                head_off: 0,
            };
            let (mut first, mut second) = (reader(0), reader(1));
            let producer = thread::spawn(move || {
                for (i, &len) in LENS.iter().enumerate() {
                    while !writer.put(i as u64, len) {
                        thread::yield_now();
                    }
                }
            });
            // The second reader trails the first by up to a record: it holds the writer
            // back whenever it is the slower.
            for (i, &len) in LENS.iter().enumerate() {
                for r in [&mut first, &mut second] {
                    let got = loop {
                        match r.take() {
                            Some(got) => break got,
                            None => thread::yield_now(),
                        }
                    };
                    check(&got, i as u64, len);
                }
            }
            producer.join().unwrap();
        });
    }
}

/// The bell of a `BroadcastChannel` name (`shm/bell.rs`): many readers sleep on one futex
/// word, any writer rings it, and only when the shared sleepers flag says someone sleeps.
/// The real `bell::ring` and `bell::sleep` run over loom atomics and the futex model,
/// which never times out, so a lost wake-up is a deadlock loom reports.
mod bell {
    use std::time::Duration;

    use loom::sync::Arc;
    use loom::thread;

    use super::check_model;
    use crate::shm::bell;
    use crate::sys::sync::{AtomicU32, AtomicU64, Ordering};

    /// The name's words and a stand-in for the rings: a count of published messages.
    struct Name {
        bell: AtomicU32,
        sleepers: AtomicU32,
        published: AtomicU64,
    }

    /// A reader's receive: sleeps on the bell until `want` messages are published.
    fn wait_for(name: &Name, want: u64) {
        let news = || (name.published.load(Ordering::Acquire) >= want).then_some(());
        while news().is_none() {
            if bell::sleep(&name.bell, &name.sleepers, Duration::from_secs(1), news).is_some() {
                return;
            }
        }
    }

    fn post(name: &Name) {
        name.published.fetch_add(1, Ordering::Release);
        bell::ring(&name.bell, &name.sleepers);
    }

    fn name() -> Arc<Name> {
        Arc::new(Name {
            bell: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            published: AtomicU64::new(0),
        })
    }

    #[test]
    fn two_sleeping_readers_are_both_woken_by_one_writer() {
        check_model(Some(3), || {
            let n = name();
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let n = n.clone();
                    thread::spawn(move || wait_for(&n, 1))
                })
                .collect();
            post(&n);
            for r in readers {
                r.join().unwrap();
            }
        });
    }

    #[test]
    fn a_reader_that_raises_the_flag_after_a_ring_took_it_still_wakes() {
        // The second post's ring finds the flag a reader raised after the first post took
        // the other reader's raise; a reader waiting for both posts must not sleep through.
        check_model(Some(3), || {
            let n = name();
            let (n1, n2) = (n.clone(), n.clone());
            let r1 = thread::spawn(move || wait_for(&n1, 2));
            let r2 = thread::spawn(move || wait_for(&n2, 1));
            post(&n);
            post(&n);
            r1.join().unwrap();
            r2.join().unwrap();
        });
    }

    #[test]
    fn a_receive_whose_sleep_another_thread_does_sees_the_post_or_that_thread_is_woken() {
        // An async receive (`wait/bell_waiter.rs`): the task announces and looks; if it
        // found nothing it hands the bell's value to the waiter thread, which sleeps on it.
        // A lost wake-up leaves the waiter asleep for good: a deadlock loom reports.
        use loom::sync::{Condvar, Mutex};
        check_model(Some(3), || {
            let n = name();
            // `Some(None)`: the task found the message; `Some(Some(seen))`: sleep on `seen`.
            let handed = Arc::new((Mutex::new(None::<Option<u32>>), Condvar::new()));
            let (nt, ht) = (n.clone(), handed.clone());
            let task = thread::spawn(move || {
                let seen = bell::announce(&nt.bell, &nt.sleepers);
                let found = nt.published.load(Ordering::Acquire) >= 1;
                *ht.0.lock().unwrap() = Some((!found).then_some(seen));
                ht.1.notify_one();
            });
            let (nw, hw) = (n.clone(), handed.clone());
            let waiter = thread::spawn(move || {
                let mut slot = hw.0.lock().unwrap();
                let seen = loop {
                    match *slot {
                        Some(seen) => break seen,
                        None => slot = hw.1.wait(slot).unwrap(),
                    }
                };
                drop(slot);
                if let Some(seen) = seen {
                    crate::sys::futex_wait(&nw.bell, seen, Duration::from_secs(1));
                }
            });
            post(&n);
            task.join().unwrap();
            waiter.join().unwrap();
        });
    }
}
