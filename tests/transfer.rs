//! Transfer lists between threads (S7–S13): ports and buffers move, they are not copied.
//! Cross-process transfers are in cross_process.rs.

mod common;

use std::thread;

use shmport::{ArrayBuffer, MessageChannel, MessageError, PostErrorKind, RecvError, Transferable};

#[test]
fn s9_a_transferred_buffer_arrives_with_its_length_and_contents() {
    let ch = MessageChannel::new().unwrap();
    let mut buf = ArrayBuffer::new(1 << 20).unwrap();
    buf[0] = 1;
    buf[(1 << 20) - 1] = 2;
    ch.port1
        .post_message(&String::from("frame"), [buf.into()])
        .unwrap();
    let rx = ch.port2;
    let ev = thread::spawn(move || rx.recv::<String>().unwrap())
        .join()
        .unwrap();
    assert_eq!(ev.data, "frame");
    assert_eq!(ev.buffers.len(), 1);
    let got = &ev.buffers[0];
    assert_eq!(got.len(), 1 << 20);
    assert_eq!((got[0], got[(1 << 20) - 1]), (1, 2));
}

#[test]
fn s9_a_transferred_buffer_is_not_copied() {
    // A fresh buffer's pages are not resident until touched; a copy would touch all of
    // them. So a 256 MiB transfer that leaves resident memory flat moved no bytes.
    common::isolated("s9_a_transferred_buffer_is_not_copied", || {
        let ch = MessageChannel::new().unwrap();
        let buf = ArrayBuffer::new(256 << 20).unwrap();
        let before = resident_kib();
        ch.port1.post_message(&(), [buf.into()]).unwrap();
        let ev = ch.port2.recv::<()>().unwrap();
        assert_eq!(ev.buffers[0].len(), 256 << 20);
        assert!(resident_kib() - before < 16 * 1024, "the bytes were copied");
    });
}

fn resident_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_zero_length_buffer_can_be_transferred() {
    let ch = MessageChannel::new().unwrap();
    ch.port1
        .post_message(&0u8, [ArrayBuffer::new(0).unwrap().into()])
        .unwrap();
    assert_eq!(ch.port2.recv::<u8>().unwrap().buffers[0].len(), 0);
}

#[test]
fn s10_a_transferred_port_arrives_working_and_entangled_with_the_original_peer() {
    let a = MessageChannel::new().unwrap();
    let b = MessageChannel::new().unwrap();
    b.port1
        .post_message(&String::from("to the moved port"), [])
        .unwrap();
    a.port1.post_message(&0u8, [b.port2.into()]).unwrap();
    let mut ev = a.port2.recv::<u8>().unwrap();
    let moved = ev.ports.pop().unwrap();
    assert_eq!(moved.recv::<String>().unwrap().data, "to the moved port");
    moved.post_message(&String::from("back"), []).unwrap();
    assert_eq!(b.port1.recv::<String>().unwrap().data, "back");
}

#[test]
fn s11_messages_queued_for_a_port_travel_with_it_and_come_first_in_order() {
    let a = MessageChannel::new().unwrap();
    let b = MessageChannel::new().unwrap();
    for i in 0..100u32 {
        b.port1.post_message(&i, []).unwrap();
    }
    a.port1.post_message(&0u8, [b.port2.into()]).unwrap();
    for i in 100..200u32 {
        b.port1.post_message(&i, []).unwrap();
    }
    let moved = a.port2.recv::<u8>().unwrap().ports.pop().unwrap();
    let got: Vec<u32> = (0..200)
        .map(|_| moved.recv::<u32>().unwrap().data)
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn s11_order_holds_across_many_hops() {
    let target = MessageChannel::new().unwrap();
    let hops: Vec<MessageChannel> = (0..5).map(|_| MessageChannel::new().unwrap()).collect();
    let mut port = target.port2;
    let mut next = 0u32;
    for hop in &hops {
        for _ in 0..10 {
            target.port1.post_message(&next, []).unwrap();
            next += 1;
        }
        hop.port1.post_message(&0u8, [port.into()]).unwrap();
        port = hop.port2.recv::<u8>().unwrap().ports.pop().unwrap();
    }
    let got: Vec<u32> = (0..next)
        .map(|_| port.recv::<u32>().unwrap().data)
        .collect();
    assert_eq!(got, (0..next).collect::<Vec<_>>());
}

#[test]
fn s12_both_ports_of_one_channel_can_move_in_one_message_and_stay_entangled() {
    let carrier = MessageChannel::new().unwrap();
    let pair = MessageChannel::new().unwrap();
    pair.port1.post_message(&1u8, []).unwrap();
    carrier
        .port1
        .post_message(&0u8, [pair.port1.into(), pair.port2.into()])
        .unwrap();
    let mut ports = carrier.port2.recv::<u8>().unwrap().ports;
    let p2 = ports.pop().unwrap();
    let p1 = ports.pop().unwrap();
    assert_eq!(p2.recv::<u8>().unwrap().data, 1);
    p2.post_message(&2u8, []).unwrap();
    assert_eq!(p1.recv::<u8>().unwrap().data, 2);
}

#[test]
fn s13_a_port_whose_peer_closed_can_be_transferred_and_arrives_disconnected() {
    let carrier = MessageChannel::new().unwrap();
    let pair = MessageChannel::new().unwrap();
    pair.port1.post_message(&9u8, []).unwrap();
    pair.port1.close();
    carrier
        .port1
        .post_message(&0u8, [pair.port2.into()])
        .unwrap();
    let moved = carrier.port2.recv::<u8>().unwrap().ports.pop().unwrap();
    assert_eq!(moved.recv::<u8>().unwrap().data, 9);
    assert!(matches!(moved.recv::<u8>(), Err(RecvError::Disconnected)));
}

#[test]
fn s8_posting_a_port_to_its_own_entangled_peer_is_refused_and_everything_handed_back() {
    let ch = MessageChannel::new().unwrap();
    let other = MessageChannel::new().unwrap();
    let buf = ArrayBuffer::from_slice(b"kept").unwrap();
    let err = ch
        .port1
        .post_message(&0u8, [buf.into(), other.port1.into(), ch.port2.into()])
        .unwrap_err();
    assert!(matches!(err.kind(), PostErrorKind::DataClone(_)), "{err}");
    let back = err.into_inner();
    assert_eq!(back.len(), 3);
    let Transferable::Buffer(buf) = &back[0] else {
        panic!("order kept")
    };
    assert_eq!(&buf[..], b"kept");
    // Nothing was detached: the returned ports still work.
    let Transferable::Port(p1) = &back[1] else {
        panic!()
    };
    p1.post_message(&5u8, []).unwrap();
    assert_eq!(other.port2.recv::<u8>().unwrap().data, 5);
}

#[test]
fn s16_a_post_to_a_closed_peer_hands_every_transferable_back() {
    let ch = MessageChannel::new().unwrap();
    let other = MessageChannel::new().unwrap();
    ch.port2.close();
    let err = ch
        .port1
        .post_message(
            &0u8,
            [ArrayBuffer::new(10).unwrap().into(), other.port1.into()],
        )
        .unwrap_err();
    assert!(err.is_disconnected());
    let back = err.into_inner();
    let Transferable::Port(p) = &back[1] else {
        panic!()
    };
    p.post_message(&1u8, []).unwrap();
    assert_eq!(other.port2.recv::<u8>().unwrap().data, 1);
}

#[test]
fn transferables_arrive_in_transfer_list_order() {
    let ch = MessageChannel::new().unwrap();
    let bufs: Vec<Transferable> = (0..20u8)
        .map(|i| ArrayBuffer::from_slice(&[i; 3]).unwrap().into())
        .collect();
    ch.port1.post_message(&0u8, bufs).unwrap();
    let ev = ch.port2.recv::<u8>().unwrap();
    let firsts: Vec<u8> = ev.buffers.iter().map(|b| b[0]).collect();
    assert_eq!(firsts, (0..20).collect::<Vec<_>>());
}

#[test]
fn a_wrong_type_with_transfers_is_a_message_error_and_the_port_keeps_working() {
    let ch = MessageChannel::new().unwrap();
    let pair = MessageChannel::new().unwrap();
    ch.port1
        .post_message(&String::from("x"), [pair.port2.into()])
        .unwrap();
    ch.port1.post_message(&3u64, []).unwrap();
    assert!(matches!(
        ch.port2.recv::<u64>(),
        Err(RecvError::MessageError(MessageError::TypeMismatch { .. }))
    ));
    assert_eq!(ch.port2.recv::<u64>().unwrap().data, 3);
    // The port that arrived with the rejected message was dropped: its peer is told.
    assert!(matches!(
        pair.port1.recv::<u8>(),
        Err(RecvError::Disconnected)
    ));
}

#[test]
fn a_message_too_large_for_the_ring_arrives_whole() {
    let ch = MessageChannel::builder()
        .capacity(64 * 1024)
        .build()
        .unwrap();
    let big: Vec<u64> = (0..(8 << 20) / 8).collect();
    ch.port1.post_message(&big, []).unwrap();
    ch.port1.post_message(&1u8, []).unwrap();
    assert_eq!(ch.port2.recv::<Vec<u64>>().unwrap().data, big);
    assert_eq!(ch.port2.recv::<u8>().unwrap().data, 1);
}

#[test]
fn a_one_gibibyte_message_arrives_whole() {
    let ch = MessageChannel::new().unwrap();
    let mut big = vec![0u8; 1 << 30];
    big[0] = 1;
    big[(1 << 30) - 1] = 2;
    ch.port1.post_message(&big, []).unwrap();
    drop(big);
    let got = ch.port2.recv::<Vec<u8>>().unwrap().data;
    assert_eq!(got.len(), 1 << 30);
    assert_eq!((got[0], got[(1 << 30) - 1]), (1, 2));
}

#[test]
fn repeated_port_transfers_leak_no_descriptors_or_mappings() {
    common::isolated(
        "repeated_port_transfers_leak_no_descriptors_or_mappings",
        repeated_port_transfers,
    );
}

fn repeated_port_transfers() {
    let carrier = MessageChannel::new().unwrap();
    let pair = MessageChannel::new().unwrap();
    let mut port = pair.port2;
    // Warm up, then count.
    for _ in 0..10 {
        carrier.port1.post_message(&0u8, [port.into()]).unwrap();
        port = carrier.port2.recv::<u8>().unwrap().ports.pop().unwrap();
    }
    let (fds, maps) = (common::open_fds(), common::shmport_mappings());
    for i in 0..1000u32 {
        pair.port1.post_message(&i, []).unwrap();
        carrier.port1.post_message(&0u8, [port.into()]).unwrap();
        port = carrier.port2.recv::<u8>().unwrap().ports.pop().unwrap();
        assert_eq!(port.recv::<u32>().unwrap().data, i);
    }
    assert_eq!(common::open_fds(), fds);
    assert_eq!(common::shmport_mappings(), maps);
}

#[test]
fn repeated_large_buffer_transfers_leave_shared_memory_where_it_started() {
    common::isolated(
        "repeated_large_buffer_transfers_leave_shared_memory_where_it_started",
        || {
            let ch = MessageChannel::new().unwrap();
            // This process's resident shared memory: every region it still maps. A region
            // no process maps or holds a descriptor of is freed by the kernel, and the
            // descriptor and mapping counts below cover the rest.
            let shmem = || {
                let status = std::fs::read_to_string("/proc/self/status").unwrap();
                let line = status.lines().find(|l| l.starts_with("RssShmem:")).unwrap();
                line.split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            };
            // Warm up: the channel's socket pair is created by its first transfer, and the
            // pool's heap of 16 MiB slots by the first buffer of that size (its slot then
            // stays resident for reuse: that is the pool's point).
            for len in [1, 16 << 20] {
                let mut buf = ArrayBuffer::new(len).unwrap();
                buf.fill(1);
                ch.port1.post_message(&0u32, [buf.into()]).unwrap();
                ch.port2.recv::<u32>().unwrap();
            }
            let (fds, maps, before) = (common::open_fds(), common::shmport_mappings(), shmem());
            for i in 0..200u32 {
                let mut buf = ArrayBuffer::new(16 << 20).unwrap();
                buf.fill(i as u8); // resident, so a leak would show in Shmem
                ch.port1.post_message(&i, [buf.into()]).unwrap();
                let ev = ch.port2.recv::<u32>().unwrap();
                assert_eq!(ev.buffers[0][(16 << 20) - 1], i as u8);
            }
            assert_eq!(common::open_fds(), fds);
            assert_eq!(common::shmport_mappings(), maps);
            // One leaked 16 MiB buffer would show; allow 1 MiB for the channel's own pages.
            assert!(shmem() - before < 1024, "shared memory grew");
        },
    );
}

#[test]
fn small_buffers_are_recycled_without_new_mappings_or_descriptors() {
    common::isolated(
        "small_buffers_are_recycled_without_new_mappings_or_descriptors",
        || {
            drop(ArrayBuffer::new(4096).unwrap()); // the first heap of the class
            let (fds, maps) = (common::open_fds(), common::shmport_mappings());
            for i in 0..10_000u32 {
                let mut b = ArrayBuffer::new(4096).unwrap();
                assert!(b.iter().all(|&x| x == 0), "recycled slots are zeroed");
                b.fill(i as u8);
            }
            assert_eq!(
                (common::open_fds(), common::shmport_mappings()),
                (fds, maps)
            );
        },
    );
}

#[test]
fn pooled_buffers_posted_and_dropped_go_back_to_the_pool() {
    common::isolated(
        "pooled_buffers_posted_and_dropped_go_back_to_the_pool",
        || {
            let ch = MessageChannel::new().unwrap();
            let round = |i: u32| {
                let mut b = ArrayBuffer::new(16 << 10).unwrap();
                b[0] = i as u8;
                ch.port1.post_message(&i, [b.into()]).unwrap();
                let ev = ch.port2.recv::<u32>().unwrap();
                assert_eq!(ev.buffers[0][0], i as u8);
            };
            round(0);
            let (fds, maps) = (common::open_fds(), common::shmport_mappings());
            for i in 1..5000 {
                round(i);
            }
            assert_eq!(
                (common::open_fds(), common::shmport_mappings()),
                (fds, maps)
            );
        },
    );
}

#[test]
fn an_allocation_the_system_cannot_satisfy_is_an_error_not_a_panic() {
    let err = ArrayBuffer::new(1 << 62).unwrap_err();
    assert!(matches!(err, shmport::Error::Os { .. }), "{err}");
}

#[test]
fn buffers_queued_for_a_spawned_port_arrive_by_heap_index() {
    common::as_child(|port| {
        let ev = port.recv::<u64>().unwrap();
        assert!(ev.buffers[0].iter().all(|&b| b == 2));
        port.post_message(&ev.data, []).unwrap();
    });
    let ch = MessageChannel::new().unwrap();
    for fill in [1u8, 2] {
        let mut buf = ArrayBuffer::new_unzeroed(4096).unwrap();
        buf.fill(fill);
        ch.port1
            .post_message(&u64::from(fill), [buf.into()])
            .unwrap();
        if fill == 1 {
            // Received here: the heap is in port2's table, and the second buffer names it
            // by index only.
            ch.port2.recv::<u64>().unwrap();
        }
    }
    let child = common::spawn_test_child(
        "buffers_queued_for_a_spawned_port_arrive_by_heap_index",
        ch.port2,
    );
    assert_eq!(ch.port1.recv::<u64>().unwrap().data, 2);
    assert!(child.wait().success());
}

#[test]
fn a_heap_whose_descriptor_was_lost_is_sent_again_and_the_channel_recovers() {
    common::as_child(|port| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        // No descriptor can be installed here: every number below the limit is taken.
        let lowest_free = std::fs::File::open("/dev/null").unwrap();
        let limit = std::os::fd::AsRawFd::as_raw_fd(&lowest_free) as u64;
        drop(lowest_free);
        let saved = getrlimit(Resource::Nofile);
        let mut low = saved;
        low.current = Some(limit);
        setrlimit(Resource::Nofile, low).unwrap();
        port.post_message(&0u8, []).unwrap(); // ready
        let lost = port.recv::<u64>(); // the heap's first buffer: its descriptor is cut off
        setrlimit(Resource::Nofile, saved).unwrap();
        assert!(matches!(
            lost,
            Err(RecvError::MessageError(MessageError::Transfer(_)))
        ));
        port.post_message(&1u8, []).unwrap(); // descriptors are free again
        for fill in 2..10u8 {
            let ev = port.recv::<u64>().unwrap();
            assert!(ev.buffers[0].iter().all(|&b| b == fill));
        }
        port.post_message(&2u8, []).unwrap();
    });
    let ch = MessageChannel::new().unwrap();
    let child = common::spawn_test_child(
        "a_heap_whose_descriptor_was_lost_is_sent_again_and_the_channel_recovers",
        ch.port2,
    );
    let post = |fill: u8| {
        let mut buf = ArrayBuffer::new_unzeroed(4096).unwrap();
        buf.fill(fill);
        ch.port1
            .post_message(&u64::from(fill), [buf.into()])
            .unwrap();
    };
    assert_eq!(ch.port1.recv::<u8>().unwrap().data, 0);
    post(1);
    assert_eq!(ch.port1.recv::<u8>().unwrap().data, 1);
    for fill in 2..10 {
        post(fill);
    }
    assert_eq!(ch.port1.recv::<u8>().unwrap().data, 2);
    assert!(child.wait().success());
}

#[test]
fn large_and_small_messages_in_turn_arrive_whole_and_in_order() {
    let ch = MessageChannel::builder()
        .capacity(64 * 1024)
        .build()
        .unwrap();
    // Sizes that grow, shrink below the ring's limit and grow past the last large one.
    let sizes = [
        1 << 20,
        10,
        1 << 20,
        (1 << 20) + 4096,
        100,
        3 << 20,
        1 << 20,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        ch.port1.post_message(&vec![i as u8; n], []).unwrap();
    }
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, vec![i as u8; n]);
    }
}
