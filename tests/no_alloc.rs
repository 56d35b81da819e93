//! P5: steady-state post and receive of a small message make no heap allocation.
//!
//! A counting global allocator counts the allocations made by this thread while the
//! counter is armed. (System calls: see docs/design.md, "The hot path"; a post makes one
//! only when the reader has announced it sleeps.)

mod common;

use common::counting::allocations_during;

use shmport::MessageChannel;
use shmport::rkyv::{Archive, Deserialize, Serialize};

#[global_allocator]
static GLOBAL: common::counting::Counting = common::counting::Counting;

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
struct Tick {
    seq: u64,
    price: f64,
    payload: [u8; 48],
}

#[test]
fn steady_state_post_and_recv_of_a_small_message_allocate_nothing() {
    let ch = MessageChannel::new().unwrap();
    let tick = Tick {
        seq: 0,
        price: 1.5,
        payload: [7; 48],
    };
    // Warm up: rkyv's thread-local arena and the port's scratch buffers, and several
    // trips around the ring (padding records included).
    for i in 0..10_000u64 {
        ch.port1.post_message(&Tick { seq: i, ..tick }, []).unwrap();
        assert_eq!(ch.port2.recv::<Tick>().unwrap().data.seq, i);
    }
    let n = allocations_during(|| {
        for i in 0..100_000u64 {
            ch.port1.post_message(&Tick { seq: i, ..tick }, []).unwrap();
            let ev = ch.port2.recv::<Tick>().unwrap();
            assert_eq!(ev.data.seq, i);
        }
    });
    assert_eq!(n, 0, "allocations in 100,000 post/recv pairs");
}

#[test]
fn a_steady_state_transfer_of_a_pooled_buffer_allocates_only_the_two_transfer_lists() {
    // The sender's list (`post_message` collects its transfer list into a `Vec`) and the
    // receiver's `MessageEvent::buffers`: nothing else per transfer, on either side.
    let ch = MessageChannel::new().unwrap();
    let round = |i: u64| {
        let mut frame = shmport::ArrayBuffer::new_unzeroed(4096).unwrap();
        frame[0] = i as u8;
        ch.port1.post_message(&i, [frame.into()]).unwrap();
        let ev = ch.port2.recv::<u64>().unwrap();
        assert_eq!((ev.data, ev.buffers[0][0]), (i, i as u8));
    };
    // Warm up: the pool's heap, the channel's heap table, the in-flight lists.
    (0..10_000).for_each(round);
    let n = allocations_during(|| (0..10_000).for_each(round));
    assert_eq!(n, 2 * 10_000, "allocations in 10,000 transfers");
}
