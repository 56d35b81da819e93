//! A port bounds the bytes outside its ring (bodies and transferred buffers) that it has
//! queued for its reader: a post past the bound waits, as for room in the ring.

use std::time::Duration;

use shmport::{ArrayBuffer, MessageChannel, PostErrorKind};

const KIB: usize = 1 << 10;

fn frame(len: usize, fill: u8) -> ArrayBuffer {
    let mut b = ArrayBuffer::new(len).unwrap();
    b.fill(fill);
    b
}

#[test]
fn a_try_post_past_the_bound_is_full_and_nothing_is_sent() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.set_max_queued_bytes(256 * KIB);
    ch.port1
        .post_message(&0u8, [frame(256 * KIB, 0).into()])
        .unwrap();
    let err = ch
        .port1
        .try_post_message(&1u8, [frame(4 * KIB, 1).into()])
        .unwrap_err();
    assert!(matches!(err.kind(), PostErrorKind::Full));
    assert_eq!(err.into_inner().len(), 1, "the buffer is handed back");
    assert_eq!(ch.port2.recv::<u8>().unwrap().data, 0);
    assert!(
        ch.port2.try_recv::<u8>().is_err(),
        "the refused post sent nothing"
    );
}

#[test]
fn what_the_reader_has_taken_no_longer_counts() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.set_max_queued_bytes(256 * KIB);
    for i in 0..100u8 {
        ch.port1
            .try_post_message(&i, [frame(256 * KIB, i).into()])
            .unwrap();
        let ev = ch.port2.recv::<u8>().unwrap();
        assert_eq!((ev.data, ev.buffers[0][0]), (i, i));
    }
}

#[test]
fn a_message_larger_than_the_bound_goes_when_nothing_is_queued() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.set_max_queued_bytes(4 * KIB);
    ch.port1
        .try_post_message(&(), [frame(1 << 20, 7).into()])
        .unwrap();
    assert_eq!(ch.port2.recv::<()>().unwrap().buffers[0].len(), 1 << 20);
}

#[test]
fn bodies_of_messages_too_large_for_the_ring_count() {
    let ch = MessageChannel::builder()
        .capacity(64 * KIB)
        .build()
        .unwrap();
    ch.port1.set_max_queued_bytes(512 * KIB);
    let big = vec![3u8; 400 * KIB];
    ch.port1.try_post_message(&big, []).unwrap();
    let err = ch.port1.try_post_message(&big, []).unwrap_err();
    assert!(matches!(err.kind(), PostErrorKind::Full));
    assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, big);
    ch.port1.try_post_message(&big, []).unwrap();
}

#[test]
fn small_messages_are_not_held_back_by_queued_bytes() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.set_max_queued_bytes(4 * KIB);
    ch.port1
        .post_message(&(), [frame(64 * KIB, 0).into()])
        .unwrap();
    for i in 0..100u32 {
        ch.port1.try_post_message(&i, []).unwrap();
    }
}

#[test]
fn a_post_waiting_on_the_bound_is_woken_by_the_readers_receive() {
    const FRAMES: u8 = 200;
    let ch = MessageChannel::new().unwrap();
    let (tx, rx) = (ch.port1, ch.port2);
    let poster = std::thread::spawn(move || {
        tx.set_max_queued_bytes(512 * KIB);
        for i in 0..FRAMES {
            tx.post_message(&i, [frame(256 * KIB, i).into()]).unwrap();
        }
        tx.stats()
    });
    for i in 0..FRAMES {
        let ev = rx.recv::<u8>().unwrap();
        assert_eq!((ev.data, ev.buffers[0][256 * KIB - 1]), (i, i));
    }
    let stats = poster.join().unwrap();
    assert_eq!(stats.posts, u64::from(FRAMES));
}

#[test]
fn the_bound_of_a_new_port_is_256_mib() {
    let ch = MessageChannel::new().unwrap();
    assert_eq!(ch.port1.max_queued_bytes(), 256 << 20);
}

const MIB: usize = 1 << 20;

#[test]
fn a_thread_that_posts_past_the_cache_window_before_it_receives_goes_on() {
    // 16 MiB queued by the thread that will receive them: past the 4 MiB cache window,
    // within the bound. The first post past the window finds the reader taking nothing
    // and goes on; so do the rest.
    let ch = MessageChannel::new().unwrap();
    for i in 0..16u8 {
        ch.port1.post_message(&i, [frame(MIB, i).into()]).unwrap();
    }
    // One wait, by the fifth post; the reader did not move after it, so no other.
    assert_eq!(ch.port1.stats().waits_for_room, 1);
    for i in 0..16u8 {
        let ev = ch.port2.recv::<u8>().unwrap();
        assert_eq!((ev.data, ev.buffers[0][MIB - 1]), (i, i));
    }
}

/// A port with four 1 MiB buffers queued for a reader that takes nothing: a fifth goes past
/// the cache window.
fn past_the_cache_window() -> MessageChannel {
    let ch = MessageChannel::new().unwrap();
    for i in 0..4u8 {
        ch.port1.post_message(&i, [frame(MIB, i).into()]).unwrap();
    }
    ch
}

#[test]
fn a_post_with_a_timeout_past_the_cache_window_is_sent_however_short_the_timeout() {
    for timeout in [Duration::from_millis(1), Duration::from_millis(10)] {
        let ch = past_the_cache_window();
        ch.port1
            .post_message_timeout(&4u8, [frame(MIB, 4).into()], timeout)
            .unwrap();
        assert_eq!(ch.port2.len(), 5, "timeout {timeout:?}");
    }
}

#[test]
fn a_try_post_past_the_cache_window_never_waits_for_it() {
    let ch = past_the_cache_window();
    ch.port1
        .try_post_message(&4u8, [frame(MIB, 4).into()])
        .unwrap();
    assert_eq!(ch.port1.stats().waits_for_room, 0);
}

#[test]
fn a_post_past_the_cache_window_waits_for_a_reader_that_keeps_taking() {
    const FRAMES: u8 = 64;
    let ch = MessageChannel::new().unwrap();
    let (tx, rx) = (ch.port1, ch.port2);
    let reader = std::thread::spawn(move || {
        for i in 0..FRAMES {
            let ev = rx.recv::<u8>().unwrap();
            assert_eq!(ev.data, i);
            // Reads every byte: much slower than the poster, which writes none, so the
            // poster gets more than the window ahead.
            let sum = ev.buffers[0].iter().fold(0u8, |a, &b| a.wrapping_add(b));
            std::hint::black_box(sum);
        }
    });
    for i in 0..FRAMES {
        tx.post_message(&i, [ArrayBuffer::new_unzeroed(MIB).unwrap().into()])
            .unwrap();
    }
    reader.join().unwrap();
    // The ring (124 KiB) holds hundreds of these records and the bound 256 of them: only
    // the window made a post wait.
    assert!(tx.stats().waits_for_room > 0);
}
