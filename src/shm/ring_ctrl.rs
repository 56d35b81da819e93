//! A ring's control block: the indices each side publishes and the futex words each side
//! sets when it sleeps, on cache lines of their own (layout.md, "Ring control block").

use std::cell::UnsafeCell;

use crate::sys::sync::{AtomicU32, AtomicU64};

/// The control block of one ring: producer and consumer indices on separate cache-line
/// pairs (128 bytes, against adjacent-line prefetch), each with the futex word the *other*
/// side sets when it sleeps.
#[repr(C, align(128))]
pub(crate) struct RingCtrl {
    /// Bytes ever published by the producer. Written by the producer only; read when a
    /// producer attaches.
    pub tail: AtomicU64,
    /// 1 while the consumer sleeps (or is about to) waiting for data; the futex word.
    pub reader_sleeping: AtomicU32,
    /// Nonzero while the consumer busy-polls and will not sleep or arm a doorbell before
    /// it has cleared this and sent a barrier to every writer (`shm/polling.rs`): the
    /// producer may then post without a full fence. On the producer's line: it reads this
    /// after every post, the consumer writes it only when its way of waiting changes.
    pub reader_polls: AtomicU32,
    /// Never read. `UnsafeCell`, so a `&RingCtrl` claims nothing about bytes a peer may
    /// write.
    pad0: UnsafeCell<[u8; 112]>,
    /// Bytes ever released by the consumer. Written by the consumer only.
    pub head: AtomicU64,
    /// 1 while the producer sleeps (or is about to) waiting for room; the futex word.
    pub writer_sleeping: AtomicU32,
    /// Set by the consumer when it lost heap registrations (their descriptors did not
    /// arrive); the producer then starts the channel's heap table over. See
    /// `wire::transfer`, "Heap tables".
    pub heaps_lost: AtomicU32,
    /// Set by the producer while the out-of-ring bytes it has queued near its bound: the
    /// consumer then publishes its head after every transfer record instead of in batches
    /// (`port/in_flight.rs`).
    pub wants_head: AtomicU32,
    pad1: UnsafeCell<[u8; 108]>,
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RingCtrl>() == 256);
    assert!(align_of::<RingCtrl>() == 128);
    assert!(offset_of!(RingCtrl, tail) == 0);
    assert!(offset_of!(RingCtrl, reader_sleeping) == 8);
    assert!(offset_of!(RingCtrl, reader_polls) == 12);
    assert!(offset_of!(RingCtrl, head) == 128);
    assert!(offset_of!(RingCtrl, writer_sleeping) == 136);
    assert!(offset_of!(RingCtrl, heaps_lost) == 140);
    assert!(offset_of!(RingCtrl, wants_head) == 144);
};

impl RingCtrl {
    /// A control block for an empty ring (for rings over heap memory in tests and fuzzing).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn new() -> Self {
        RingCtrl {
            tail: AtomicU64::new(0),
            reader_sleeping: AtomicU32::new(0),
            reader_polls: AtomicU32::new(0),
            pad0: UnsafeCell::new([0; 112]),
            head: AtomicU64::new(0),
            writer_sleeping: AtomicU32::new(0),
            heaps_lost: AtomicU32::new(0),
            wants_head: AtomicU32::new(0),
            pad1: UnsafeCell::new([0; 108]),
        }
    }
}
