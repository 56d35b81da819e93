//! BroadcastChannel at scale (issue 15): mutual floods, a member killed mid-stream,
//! join/leave churn.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{as_child, isolated, open_fds, shmport_mappings, spawn_test_child};
use shmport::{BroadcastChannel, MessageChannel, TryRecvError};

fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// Bytes of shared memory the broadcast segments this process maps hold (the kernel's
/// count of allocated blocks, so released pages do not count).
fn broadcast_memory() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            target
                .to_string_lossy()
                .contains("memfd:shmport-broadcast (")
                .then(|| std::fs::metadata(&path).ok().map(|m| m.blocks() * 512))?
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn two_members_each_posting_100000_to_the_other_before_receiving_both_finish() {
    const N: u32 = 100_000;
    let name = unique("mutual");
    let a = BroadcastChannel::new(&name).unwrap();
    let b = BroadcastChannel::new(&name).unwrap();
    let run = |mut me: BroadcastChannel, id: u32| {
        std::thread::spawn(move || {
            for i in 0..N {
                me.post_message(&(id, i)).unwrap();
            }
            for i in 0..N {
                assert_eq!(me.recv::<(u32, u32)>().unwrap().data, (1 - id, i));
            }
            me
        })
    };
    let (ta, tb) = (run(a, 0), run(b, 1));
    drop((ta.join().unwrap(), tb.join().unwrap()));
}

#[test]
fn a_member_killed_mid_stream_is_forgotten_its_ring_reclaimed_and_the_others_go_on() {
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        let name = port.recv::<String>().unwrap().data;
        let mut bc = BroadcastChannel::new(&name).unwrap();
        port.post_message(&1u8, []).unwrap(); // joined
        for seq in 0u64.. {
            bc.post_message(&seq).unwrap(); // until killed
        }
    });
    // Its own process: the segment's memory is measured for the whole process.
    isolated(
        "a_member_killed_mid_stream_is_forgotten_its_ring_reclaimed_and_the_others_go_on",
        move || {
            let name = unique("killed-mid-stream");
            let mut a = BroadcastChannel::new(&name).unwrap();
            let mut b = BroadcastChannel::new(&name).unwrap();
            a.post_message(&u64::MAX).unwrap();
            assert_eq!(b.recv::<u64>().unwrap().data, u64::MAX);
            let before = broadcast_memory();
            let child = spawn_test_child(
                "a_member_killed_mid_stream_is_forgotten_its_ring_reclaimed_and_the_others_go_on",
                ch.port2,
            );
            ch.port1.post_message(&name, []).unwrap();
            ch.port1.recv::<u8>().unwrap();
            // Mid-stream: both have taken some of it, and its ring has been around at least once.
            for want in 0..20_000u64 {
                assert_eq!(a.recv::<u64>().unwrap().data, want);
                assert_eq!(b.recv::<u64>().unwrap().data, want);
            }
            assert!(
                broadcast_memory() >= before + 64 * 1024,
                "its ring is in use"
            );
            child.kill();
            // Each finds it dead (its slot name is free) and forgets it...
            assert_eq!(a.peers(), 1, "the dead member was not forgotten");
            assert_eq!(b.peers(), 1);
            // ...but what it published whole before it died is still delivered, in order,
            // with no gap; then nothing more.
            let drain = |bc: &mut BroadcastChannel| {
                let mut next = 20_000u64;
                loop {
                    match bc.try_recv::<u64>() {
                        Ok(ev) => {
                            assert_eq!(ev.data, next);
                            next += 1;
                        }
                        Err(TryRecvError::Empty) => return next,
                        Err(e) => panic!("{e}"),
                    }
                }
            };
            let (got_a, got_b) = (drain(&mut a), drain(&mut b));
            assert_eq!(got_a, got_b, "both received the same whole messages");
            assert!(
                broadcast_memory() <= before + 16 * 1024,
                "its ring's pages were not handed back ({} bytes before, {} after)",
                before,
                broadcast_memory()
            );
            a.post_message(&7u64).unwrap();
            assert_eq!(b.recv::<u64>().unwrap().data, 7);
            b.post_message(&8u64).unwrap();
            assert_eq!(a.recv::<u64>().unwrap().data, 8);
        },
    );
}

#[test]
fn join_leave_churn_of_1000_members_keeps_descriptors_mappings_and_memory_flat() {
    isolated(
        "join_leave_churn_of_1000_members_keeps_descriptors_mappings_and_memory_flat",
        || {
            let name = unique("churn");
            let mut anchor = BroadcastChannel::new(&name).unwrap();
            let mut cycle = |i: u32| {
                let mut member = BroadcastChannel::new(&name).unwrap();
                anchor.post_message(&i).unwrap();
                assert_eq!(member.recv::<u32>().unwrap().data, i);
                member.post_message(&(i + 1)).unwrap();
                drop(member);
                // What a member posted just before it left is still delivered.
                assert_eq!(anchor.recv::<u32>().unwrap().data, i + 1);
            };
            for i in 0..10 {
                cycle(i);
            }
            let (fds, maps, memory) = (open_fds(), shmport_mappings(), broadcast_memory());
            for i in 10..1_000 {
                cycle(i);
            }
            assert_eq!(open_fds(), fds, "descriptors grew");
            assert_eq!(shmport_mappings(), maps, "mappings grew");
            // The anchor's own ring fills its pages as it goes round (512 KiB at most);
            // the members' rings are handed back as they leave.
            assert!(
                broadcast_memory() <= memory + (512 + 16) * 1024,
                "shared memory grew from {memory} to {} bytes",
                broadcast_memory()
            );
            assert_eq!(anchor.peers(), 0);
        },
    );
}
