//! Long-running processes stay bounded (P9): what a dropped channel had in flight is freed.

mod common;

use std::sync::Mutex;

use shmport::{ArrayBuffer, MessageChannel, MessagePort};

/// The heaps share one pool per process: tests that count them must not overlap.
static POOL: Mutex<()> = Mutex::new(());

/// Mappings of pooled shared heaps in this process.
fn heap_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("shmport-heap"))
        .count()
}

/// Posts a pooled buffer of `len` bytes to a port that is then dropped unread, `n` times.
fn drop_channels_with_an_unread_buffer(len: usize, n: usize) {
    for i in 0..n {
        let ch = MessageChannel::new().unwrap();
        let mut buf = ArrayBuffer::new(len).unwrap();
        buf[0] = i as u8;
        ch.port1.post_message(&(i as u64), [buf.into()]).unwrap();
        drop(ch.port2);
        drop(ch.port1);
    }
}

#[test]
fn small_buffers_in_flight_to_a_dropped_port_go_back_to_the_pool() {
    let _serial = POOL.lock().unwrap_or_else(|e| e.into_inner());
    drop_channels_with_an_unread_buffer(4096, 1);
    let before = heap_mappings();
    // 100,000 slots of 4 KiB would need 391 heaps of 256 if each stayed in transit.
    drop_channels_with_an_unread_buffer(4096, 100_000);
    assert_eq!(heap_mappings(), before);
}

#[test]
fn large_buffers_in_flight_to_a_dropped_port_go_back_to_the_pool() {
    let _serial = POOL.lock().unwrap_or_else(|e| e.into_inner());
    drop_channels_with_an_unread_buffer(1 << 20, 1);
    let before = heap_mappings();
    // 200 slots of 1 MiB would need 13 heaps of 16 if each stayed in transit.
    drop_channels_with_an_unread_buffer(1 << 20, 200);
    assert_eq!(heap_mappings(), before);
}

/// Sizes a client sends: pooled classes from the smallest to a large one.
const CLIENT_SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];

/// A client: sends one buffer of each size, filled, and exits once the server has them.
fn client(port: MessagePort) {
    for (i, len) in CLIENT_SIZES.into_iter().enumerate() {
        let mut buf = ArrayBuffer::new_unzeroed(len).unwrap();
        buf.fill(i as u8 + 1);
        port.post_message(&(len as u64), [buf.into()]).unwrap();
    }
    port.recv::<u8>().unwrap(); // the server has them all
}

/// Serves `n` client processes one after the other: receives and checks their buffers.
fn serve(n: usize) {
    for _ in 0..n {
        let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
        let child = common::spawn_test_child(
            "a_server_holds_no_more_after_2000_clients_than_after_20",
            port2,
        );
        for (i, len) in CLIENT_SIZES.into_iter().enumerate() {
            let ev = port1.recv::<u64>().unwrap();
            assert_eq!(ev.data, len as u64);
            assert!(ev.buffers[0].iter().all(|&b| b == i as u8 + 1));
        }
        port1.post_message(&0u8, []).unwrap();
        assert!(child.wait().success());
    }
}

fn resident_shared_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssShmem:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_server_holds_no_more_after_2000_clients_than_after_20() {
    common::as_child(client);
    common::isolated(
        "a_server_holds_no_more_after_2000_clients_than_after_20",
        || {
            serve(20);
            let (fds, maps, shmem) = (
                common::open_fds(),
                common::shmport_mappings(),
                resident_shared_kib(),
            );
            serve(2_000);
            assert_eq!(common::open_fds(), fds, "descriptors grew");
            assert_eq!(common::shmport_mappings(), maps, "mappings grew");
            // Each client's heaps hold at least 1 MiB of its pages: one kept would show.
            assert!(resident_shared_kib() - shmem < 512, "shared memory grew");
        },
    );
}

#[test]
fn a_pool_at_its_limit_gives_new_buffers_regions_of_their_own() {
    common::isolated(
        "a_pool_at_its_limit_gives_new_buffers_regions_of_their_own",
        || {
            ArrayBuffer::set_pool_limit(0);
            let ch = MessageChannel::new().unwrap();
            for len in [100, 1 << 20] {
                let mut buf = ArrayBuffer::new(len).unwrap();
                buf[len - 1] = 9;
                ch.port1.post_message(&0u8, [buf.into()]).unwrap();
                assert_eq!(ch.port2.recv::<u8>().unwrap().buffers[0][len - 1], 9);
            }
            assert_eq!(heap_mappings(), 0, "no heap was made past the limit");
        },
    );
}

#[test]
fn trimming_the_pool_hands_the_pages_of_free_large_slots_back() {
    common::isolated(
        "trimming_the_pool_hands_the_pages_of_free_large_slots_back",
        || {
            let frames: Vec<ArrayBuffer> = (0..4)
                .map(|i| {
                    let mut f = ArrayBuffer::new_unzeroed(16 << 20).unwrap();
                    f.fill(i);
                    f
                })
                .collect();
            drop(frames);
            let resident = resident_shared_kib();
            assert!(ArrayBuffer::trim_pool() >= 64 << 20);
            // The 64 MiB the frames touched are no longer resident.
            assert!(resident - resident_shared_kib() >= 60 << 10);
            let again = ArrayBuffer::new(16 << 20).unwrap(); // the slot works again
            assert!(again.iter().all(|&b| b == 0));
        },
    );
}

/// Runs `round` once to warm the pool, then 20 times more: each would need a new heap of
/// each class it uses if the killed client's slots stayed taken.
fn heaps_stay_flat_over_20_rounds_of(round: impl Fn()) {
    round();
    let before = heap_mappings();
    for _ in 0..20 {
        round();
    }
    assert_eq!(
        heap_mappings(),
        before,
        "heaps grew with the killed clients"
    );
}

/// Buffers a killed client holds: one heap's worth of 1 MiB slots (16), and 300 of 4 KiB
/// (more than one heap of 256).
const HELD: [(usize, usize); 2] = [(1 << 20, 16), (4 << 10, 300)];

/// A client that receives the buffers, says so, and waits to be killed holding them.
fn holder(port: MessagePort) {
    let count: usize = HELD.iter().map(|&(_, n)| n).sum();
    let held: Vec<_> = (0..count).map(|_| port.recv::<u8>().unwrap()).collect();
    port.post_message(&held.len(), []).unwrap();
    let _ = port.recv::<u8>(); // killed here
}

/// Sends a client the buffers of [`HELD`], then kills it once it holds them all.
fn kill_a_holder(test_name: &str) {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let child = common::spawn_test_child(test_name, port2);
    for &(len, n) in &HELD {
        for _ in 0..n {
            let buf = ArrayBuffer::new(len).unwrap();
            port1.post_message(&0u8, [buf.into()]).unwrap();
        }
    }
    let count: usize = HELD.iter().map(|&(_, n)| n).sum();
    assert_eq!(port1.recv::<usize>().unwrap().data, count);
    child.kill(); // and reaped: its pid no longer exists
}

#[test]
fn the_slots_of_killed_holders_go_back_to_the_pool() {
    const NAME: &str = "the_slots_of_killed_holders_go_back_to_the_pool";
    common::as_child(holder);
    common::isolated(NAME, || {
        heaps_stay_flat_over_20_rounds_of(|| kill_a_holder(NAME))
    });
}

/// A client that says it is up and never receives: killed with its queue full of buffers.
fn never_receives(port: MessagePort) {
    port.post_message(&1u8, []).unwrap();
    loop {
        std::thread::park(); // until killed
    }
}

/// Posts a client buffers it never receives, kills it, and drops the port.
fn kill_a_receiver_with_buffers_queued(test_name: &str) {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let child = common::spawn_test_child(test_name, port2);
    assert_eq!(port1.recv::<u8>().unwrap().data, 1);
    for &(len, n) in &HELD {
        for _ in 0..n {
            let buf = ArrayBuffer::new(len).unwrap();
            port1.post_message(&0u8, [buf.into()]).unwrap();
        }
    }
    child.kill();
    drop(port1); // its peer is gone: what it never received is freed
}

#[test]
fn buffers_queued_for_a_killed_receiver_go_back_to_the_pool() {
    const NAME: &str = "buffers_queued_for_a_killed_receiver_go_back_to_the_pool";
    common::as_child(never_receives);
    common::isolated(NAME, || {
        heaps_stay_flat_over_20_rounds_of(|| kill_a_receiver_with_buffers_queued(NAME))
    });
}
