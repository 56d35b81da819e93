//! `MessagePort::into_sink`: a `futures_sink::Sink` that owns its port and posts as
//! `post_message_async` does.

mod common;

use futures_util::{SinkExt, stream};
use shmport::{ArrayBuffer, MessageChannel, PostErrorKind, Transferable};

use common::{as_child, block_on, spawn_test_child, tokio_rt as rt};

#[test]
fn send_all_carries_5000_messages_through_a_small_ring_to_another_process_in_order() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    as_child(|port| {
        let got: Vec<u64> = port
            .iter::<(u64, [u8; 100])>()
            .map(|r| r.unwrap().data.0)
            .collect();
        assert_eq!(got, (0..5000).collect::<Vec<_>>());
    });
    let child = spawn_test_child(
        "send_all_carries_5000_messages_through_a_small_ring_to_another_process_in_order",
        ch.port2,
    );
    let mut sink = ch.port1.into_sink::<(u64, [u8; 100])>();
    let mut messages = stream::iter((0..5000u64).map(|i| Ok((i, [0u8; 100]))));
    block_on(sink.send_all(&mut messages)).unwrap();
    drop(sink); // drops the port: the child's iteration ends
    assert!(child.wait().success());
}

#[test]
fn feed_holds_a_message_until_a_flush_or_the_next_feed_posts_it() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let mut sink = port1.into_sink::<u32>();
    block_on(sink.feed(1)).unwrap();
    assert_eq!(port2.len(), 0, "fed, not posted");
    block_on(sink.feed(2)).unwrap();
    assert_eq!(port2.len(), 1, "the second feed posted the first message");
    block_on(sink.flush()).unwrap();
    assert_eq!(port2.len(), 2);
    let got: Vec<u32> = port2.try_iter::<u32>().map(|r| r.unwrap().data).collect();
    assert_eq!(got, [1, 2]);
}

#[test]
fn close_flushes_and_leaves_the_port_open_until_the_sink_is_dropped() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let mut sink = port1.into_sink::<u32>();
    block_on(sink.feed(3)).unwrap();
    block_on(sink.close()).unwrap();
    assert!(!port2.is_peer_gone());
    assert_eq!(port2.recv::<u32>().unwrap().data, 3);
    drop(sink);
    assert!(port2.is_peer_gone());
}

#[test]
fn a_message_still_held_when_the_sink_is_dropped_is_not_posted() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let mut sink = port1.into_sink::<u32>();
    block_on(sink.feed(4)).unwrap();
    drop(sink);
    assert!(port2.recv::<u32>().is_err(), "disconnected, nothing queued");
}

#[test]
fn a_send_after_the_reader_closed_fails_with_disconnected_and_an_empty_transfer_list() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let mut sink = port1.into_sink::<u32>();
    block_on(sink.send(1)).unwrap();
    drop(port2);
    let e = block_on(sink.send(2)).unwrap_err();
    assert!(matches!(e.kind(), PostErrorKind::Disconnected));
    assert!(e.into_inner().is_empty());
    // The failed message was dropped; the sink goes on, and says so again.
    let again = block_on(sink.send(3)).unwrap_err();
    assert!(matches!(again.kind(), PostErrorKind::Disconnected));
}

#[test]
fn a_send_waiting_for_room_fails_when_the_reader_closes() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    while ch.port1.try_post_message(&[1u8; 200], []).is_ok() {}
    let MessageChannel { port1, port2, .. } = ch;
    let rt = rt();
    // A spawned task: the sink is `Send`.
    let pending = rt.spawn(async move {
        let mut sink = port1.into_sink::<[u8; 200]>();
        sink.send([2u8; 200])
            .await
            .map_err(|e| matches!(e.kind(), PostErrorKind::Disconnected))
    });
    drop(port2);
    assert_eq!(rt.block_on(pending).unwrap(), Err(true));
}

#[test]
fn into_inner_gives_back_a_port_that_still_posts_and_receives() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let mut sink = port1.into_sink::<u32>();
    block_on(sink.send(5)).unwrap();
    let port1 = sink.into_inner();
    port1.post_message(&6u32, []).unwrap();
    let got: Vec<u32> = port2.try_iter::<u32>().map(|r| r.unwrap().data).collect();
    assert_eq!(got, [5, 6]);
    port2.post_message(&7u32, []).unwrap();
    assert_eq!(port1.recv::<u32>().unwrap().data, 7);
    // And it makes another sink.
    let mut sink = port1.into_sink::<u32>();
    block_on(sink.send(8)).unwrap();
    assert_eq!(port2.recv::<u32>().unwrap().data, 8);
}

#[test]
fn a_transfer_sink_moves_a_buffer_with_each_message_to_another_process_in_order() {
    // A 4 KiB ring holds a few dozen transfer records: the sink waits for room, its
    // message's transfer list kept across the waits.
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    as_child(|port| {
        let mut n = 0u32;
        for event in port.iter::<u32>() {
            let event = event.unwrap();
            assert_eq!(event.data, n);
            assert_eq!(event.buffers.len(), 1);
            assert!(event.buffers[0].iter().all(|&b| b == n as u8));
            n += 1;
        }
        assert_eq!(n, 500);
    });
    let child = spawn_test_child(
        "a_transfer_sink_moves_a_buffer_with_each_message_to_another_process_in_order",
        ch.port2,
    );
    let mut sink = ch.port1.into_transfer_sink::<u32>();
    let frames = (0..500u32).map(|i| {
        let mut frame = ArrayBuffer::new_unzeroed(8192).unwrap();
        frame.fill(i as u8);
        Ok((i, vec![frame.into()]))
    });
    block_on(sink.send_all(&mut stream::iter(frames))).unwrap();
    drop(sink); // drops the port: the child's iteration ends
    assert!(child.wait().success());
}

#[test]
fn a_port_sent_through_a_transfer_sink_keeps_working_at_its_new_owner() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let inner = MessageChannel::new().unwrap();
    let mut sink = port1.into_transfer_sink::<u8>();
    block_on(sink.send((1, vec![inner.port2.into()]))).unwrap();
    let mut event = port2.recv::<u8>().unwrap();
    let moved = event.ports.pop().expect("the port arrived");
    inner.port1.post_message(&9u32, []).unwrap();
    assert_eq!(moved.recv::<u32>().unwrap().data, 9);
}

#[test]
fn a_transfer_sink_send_that_fails_hands_its_transfer_list_back() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    drop(port2);
    let mut sink = port1.into_transfer_sink::<u8>();
    let mut frame = ArrayBuffer::new(64).unwrap();
    frame[0] = 7;
    let e = block_on(sink.send((1, vec![frame.into()]))).unwrap_err();
    assert!(matches!(e.kind(), PostErrorKind::Disconnected));
    let list = e.into_inner();
    assert!(matches!(&list[..], [Transferable::Buffer(b)] if b[0] == 7));
}
