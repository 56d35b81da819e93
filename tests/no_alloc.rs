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
