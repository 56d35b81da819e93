//! The blocking conveniences std's and crossbeam's receivers have: iterators, deadlines,
//! a post with a timeout, a look at the queue and at the peer that takes nothing.

mod common;

use std::time::{Duration, Instant};

use common::{as_child, spawn_test_child};
use shmport::{MessageChannel, MessageError, PostErrorKind};

#[test]
fn iter_yields_every_message_in_order_then_ends_when_the_peer_is_gone() {
    let ch = MessageChannel::new().unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..1000u32 {
            ch.port1.post_message(&i, []).unwrap();
        }
    });
    let got: Vec<u32> = ch.port2.iter::<u32>().map(|r| r.unwrap().data).collect();
    sender.join().unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn iter_reports_a_messageerror_and_goes_on() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&1u32, []).unwrap();
    ch.port1
        .post_message(&String::from("not a u32"), [])
        .unwrap();
    ch.port1.post_message(&3u32, []).unwrap();
    drop(ch.port1);
    let items: Vec<Result<u32, MessageError>> = ch
        .port2
        .iter::<u32>()
        .map(|r| r.map(|ev| ev.data))
        .collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().ok(), Some(&1));
    assert!(matches!(items[1], Err(MessageError::TypeMismatch { .. })));
    assert_eq!(items[2].as_ref().ok(), Some(&3));
}

#[test]
fn try_iter_takes_what_is_queued_and_never_waits() {
    let ch = MessageChannel::new().unwrap();
    for i in 0..10u8 {
        ch.port1.post_message(&i, []).unwrap();
    }
    let got: Vec<u8> = ch.port2.try_iter::<u8>().map(|r| r.unwrap().data).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    // Nothing queued and the peer alive: an empty iteration, at once.
    assert_eq!(ch.port2.try_iter::<u8>().count(), 0);
    ch.port1.post_message(&10u8, []).unwrap();
    assert_eq!(ch.port2.try_iter::<u8>().count(), 1);
}

#[test]
fn is_empty_looks_without_taking() {
    let ch = MessageChannel::new().unwrap();
    assert!(ch.port2.is_empty());
    ch.port1.post_message(&5u8, []).unwrap();
    assert!(!ch.port2.is_empty());
    assert!(!ch.port2.is_empty(), "looking twice takes nothing");
    assert_eq!(ch.port2.recv::<u8>().unwrap().data, 5);
    assert!(ch.port2.is_empty());
}

#[test]
fn len_counts_the_queued_messages_without_taking_any() {
    let ch = MessageChannel::new().unwrap();
    assert_eq!(ch.port2.len(), 0);
    for i in 0..3u32 {
        ch.port1.post_message(&i, []).unwrap();
    }
    assert_eq!(ch.port2.len(), 3);
    assert_eq!(ch.port2.len(), 3, "counting twice takes nothing");
    assert_eq!(ch.port2.recv::<u32>().unwrap().data, 0);
    assert_eq!(ch.port2.len(), 2);
}

#[test]
fn len_counts_a_transfer_and_a_large_body_as_one_message_each() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let other = MessageChannel::new().unwrap();
    ch.port1.post_message(&1u8, [other.port1.into()]).unwrap();
    ch.port1.post_message(&vec![7u8; 1 << 20], []).unwrap();
    ch.port1
        .post_message(&String::from("a messageerror for u8"), [])
        .unwrap();
    assert_eq!(ch.port2.len(), 3);
    assert_eq!(ch.port2.try_iter::<u8>().count(), 3);
    assert_eq!(ch.port2.len(), 0);
}

#[test]
fn peek_inline_len_gives_only_what_sits_whole_in_the_ring() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let other = MessageChannel::new().unwrap();
    ch.port1.post_message(&vec![3u8; 100], []).unwrap();
    ch.port1.post_message(&1u8, [other.port1.into()]).unwrap();
    ch.port1.post_message(&vec![7u8; 1 << 20], []).unwrap();
    let len = ch
        .port2
        .peek_inline_len()
        .expect("a small message sits in the ring");
    assert_eq!(ch.port2.peek_inline_len(), Some(len)); // it takes nothing
    let lent = ch
        .port2
        .try_recv_raw_with(|archive, _| archive.len())
        .unwrap();
    assert_eq!(lent.data, len);
    assert_eq!(ch.port2.peek_inline_len(), None); // a transfer list
    ch.port2.recv::<u8>().unwrap();
    assert_eq!(ch.port2.peek_inline_len(), None); // a body outside the ring
    ch.port2.recv::<Vec<u8>>().unwrap();
    assert_eq!(ch.port2.peek_inline_len(), None); // nothing
}

#[test]
fn a_small_message_after_a_large_one_travels_in_the_ring() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    ch.port1.post_message(&vec![7u8; 1 << 20], []).unwrap();
    ch.port1.post_message(&vec![3u8; 100], []).unwrap();
    assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data.len(), 1 << 20);
    assert!(ch.port2.peek_inline_len().is_some());
    assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, vec![3u8; 100]);
}

#[test]
fn is_peer_gone_sees_a_dropped_peer_and_leaves_its_messages() {
    let ch = MessageChannel::new().unwrap();
    assert!(!ch.port2.is_peer_gone());
    ch.port1.post_message(&9u8, []).unwrap();
    drop(ch.port1);
    assert!(ch.port2.is_peer_gone());
    assert_eq!(ch.port2.recv::<u8>().unwrap().data, 9);
    assert!(ch.port2.recv::<u8>().unwrap_err().is_disconnected());
}

#[test]
fn is_peer_gone_sees_a_killed_peer_process() {
    let ch = MessageChannel::new().unwrap();
    as_child(common::post_one_then_park);
    let child = spawn_test_child("is_peer_gone_sees_a_killed_peer_process", ch.port2);
    let port = ch.port1;
    assert_eq!(port.recv::<u8>().unwrap().data, 1);
    assert!(!port.is_peer_gone());
    child.kill(); // waits for the process to be reaped
    assert!(port.is_peer_gone());
}

#[test]
fn recv_deadline_returns_a_queued_message_then_times_out() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&1u16, []).unwrap();
    let deadline = Instant::now() + Duration::from_millis(20);
    assert_eq!(ch.port2.recv_deadline::<u16>(deadline).unwrap().data, 1);
    assert!(
        ch.port2
            .recv_deadline::<u16>(deadline)
            .unwrap_err()
            .is_timeout()
    );
}

#[test]
fn recv_deadline_in_the_past_still_takes_a_queued_message() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&2u16, []).unwrap();
    let past = Instant::now();
    assert_eq!(ch.port2.recv_deadline::<u16>(past).unwrap().data, 2);
}

#[test]
fn post_message_timeout_gives_up_on_a_full_ring_and_hands_back_the_transfer_list() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    while ch.port1.try_post_message(&[7u8; 256], []).is_ok() {}
    let other = MessageChannel::new().unwrap();
    let err = ch
        .port1
        .post_message_timeout(&[7u8; 256], [other.port1.into()], Duration::from_millis(5))
        .unwrap_err();
    assert!(matches!(err.kind(), PostErrorKind::Full));
    let mut back = err.into_inner();
    assert_eq!(back.len(), 1, "the port in the transfer list comes back");
    let port = back.remove(0).into_port().expect("a port");
    port.post_message(&1u8, []).unwrap();
    assert_eq!(other.port2.recv::<u8>().unwrap().data, 1);
}

#[test]
fn post_message_timeout_posts_once_the_reader_makes_room() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let mut sent = 0u32;
    while ch.port1.try_post_message(&sent, []).is_ok() {
        sent += 1;
    }
    let reader = std::thread::spawn(move || ch.port2.iter::<u32>().count());
    ch.port1
        .post_message_timeout(&sent, [], Duration::from_secs(60))
        .unwrap();
    drop(ch.port1);
    assert_eq!(reader.join().unwrap(), sent as usize + 1);
}

#[test]
fn stats_count_posts_and_the_waits_that_slept() {
    let ch = MessageChannel::builder()
        .capacity(4096)
        .wait_strategy(shmport::WaitStrategy::Block)
        .build()
        .unwrap();
    let mut posted = 0;
    while ch.port1.try_post_message(&[0u8; 256], []).is_ok() {
        posted += 1;
    }
    assert_eq!(ch.port1.stats().posts, posted);
    // A post that waits for room until its timeout: one wait, asleep (Block never spins).
    assert!(
        ch.port1
            .post_message_timeout(&[0u8; 256], [], Duration::from_millis(2))
            .is_err()
    );
    let s = ch.port1.stats();
    assert_eq!((s.waits_for_room, s.posts), (1, posted));
    assert!(s.sleeps_for_room >= 1);
    // Receives of queued messages do not wait; one on the empty queue does.
    for _ in 0..posted {
        ch.port2.recv::<[u8; 256]>().unwrap();
    }
    assert_eq!(ch.port2.stats().waits_for_messages, 0);
    assert!(
        ch.port2
            .recv_timeout::<u8>(Duration::from_millis(2))
            .is_err()
    );
    let r = ch.port2.stats();
    assert_eq!(r.waits_for_messages, 1);
    assert!(r.sleeps_for_messages >= 1);
}
