//! Soak: long runs that must end with every resource back at its baseline.

mod common;

use common::{as_child, spawn_test_child};
use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{MessageChannel, WaitStrategy};

#[derive(Archive, Serialize, Deserialize)]
struct Checked {
    seq: u64,
    sum: u64,
    body: Vec<u8>,
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Ten million checksummed messages of random sizes (0 to 255 bytes) from a child process.
const MESSAGES: u64 = 10_000_000;

#[test]
fn ten_million_checksummed_messages_cross_processes_intact_and_in_order() {
    as_child(|port| {
        port.set_wait_strategy(WaitStrategy::BusyPoll);
        let mut rng = 0x853c_49e6_748f_ea9bu64;
        let mut body = Vec::with_capacity(256);
        for seq in 0..MESSAGES {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            body.clear();
            body.extend((0..rng % 256).map(|i| (rng >> (i % 56)) as u8));
            let msg = Checked {
                seq,
                sum: fnv(&body),
                body: std::mem::take(&mut body),
            };
            port.post_message(&msg, []).unwrap();
            body = msg.body;
        }
    });
    common::isolated(
        "ten_million_checksummed_messages_cross_processes_intact_and_in_order",
        || {
            let (fds, maps) = (common::open_fds(), common::shmport_mappings());
            {
                let ch = MessageChannel::builder().capacity(1 << 20).build().unwrap();
                ch.port1.set_wait_strategy(WaitStrategy::BusyPoll);
                let child = spawn_test_child(
                    "ten_million_checksummed_messages_cross_processes_intact_and_in_order",
                    ch.port2,
                );
                for seq in 0..MESSAGES {
                    let ok = ch
                        .port1
                        .recv_archived::<Checked, _>(|m| {
                            m.seq == seq && m.sum == fnv(m.body.as_slice())
                        })
                        .unwrap()
                        .data;
                    assert!(ok, "message {seq} damaged or out of order");
                }
                assert!(child.wait().success());
            }
            assert_eq!(
                (common::open_fds(), common::shmport_mappings()),
                (fds, maps)
            );
        },
    );
}

#[test]
fn a_hundred_thousand_port_transfers_along_a_chain_leave_no_trace() {
    common::isolated(
        "a_hundred_thousand_port_transfers_along_a_chain_leave_no_trace",
        || {
            // A chain of four channels between threads; the travelling port goes round it,
            // carrying the count of hops it has made in its own queue.
            let (fds, maps) = (common::open_fds(), common::shmport_mappings());
            {
                let links: Vec<MessageChannel> =
                    (0..4).map(|_| MessageChannel::new().unwrap()).collect();
                let traveller = MessageChannel::new().unwrap();
                let mut port = traveller.port2;
                for hop in 0..100_000u32 {
                    let link = &links[hop as usize % links.len()];
                    traveller.port1.post_message(&hop, []).unwrap();
                    link.port1.post_message(&hop, [port.into()]).unwrap();
                    let mut ev = link.port2.recv::<u32>().unwrap();
                    assert_eq!(ev.data, hop);
                    port = ev.ports.pop().unwrap();
                    assert_eq!(port.recv::<u32>().unwrap().data, hop);
                }
            }
            assert_eq!(
                (common::open_fds(), common::shmport_mappings()),
                (fds, maps)
            );
        },
    );
}
