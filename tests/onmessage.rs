//! `on_message`: event-style receive on a dispatch thread.

use std::sync::mpsc;

use shmport::{MessageChannel, MessageError, MessageEvent};

#[test]
fn messages_queued_before_the_handler_is_set_are_dispatched_first_in_order() {
    let ch = MessageChannel::new().unwrap();
    for i in 0..100u32 {
        ch.port1.post_message(&i, []).unwrap();
    }
    let (tx, rx) = mpsc::channel();
    let handler = ch
        .port2
        .on_message(
            move |ev: MessageEvent<u32>| tx.send(ev.data).unwrap(),
            |_| {},
        )
        .unwrap();
    for i in 100..200u32 {
        ch.port1.post_message(&i, []).unwrap();
    }
    let got: Vec<u32> = (0..200).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    handler.stop().unwrap();
}

#[test]
fn the_handler_runs_on_its_own_named_thread() {
    let ch = MessageChannel::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let _handler = ch
        .port2
        .on_message(
            move |_: MessageEvent<u8>| {
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap()
            },
            |_| {},
        )
        .unwrap();
    ch.port1.post_message(&0u8, []).unwrap();
    assert_eq!(rx.recv().unwrap().as_deref(), Some("shmport-onmessage"));
}

#[test]
fn stopping_hands_the_port_back_with_undispatched_messages_still_queued() {
    let ch = MessageChannel::new().unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let handler = ch
        .port2
        .on_message(
            move |ev: MessageEvent<u32>| {
                seen_tx.send(ev.data).unwrap();
                go_rx.recv().unwrap(); // hold the dispatch inside the first message
            },
            |_| {},
        )
        .unwrap();
    ch.port1.post_message(&1u32, []).unwrap();
    assert_eq!(seen.recv().unwrap(), 1);
    ch.port1.post_message(&2u32, []).unwrap();
    ch.port1.post_message(&3u32, []).unwrap();
    handler.request_stop();
    go.send(()).unwrap();
    let port = handler.stop().unwrap();
    assert_eq!(port.try_recv::<u32>().unwrap().data, 2);
    assert_eq!(port.try_recv::<u32>().unwrap().data, 3);
}

#[test]
fn a_message_that_cannot_be_decoded_goes_to_the_error_handler_and_dispatch_goes_on() {
    let ch = MessageChannel::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let etx = tx.clone();
    let handler = ch
        .port2
        .on_message(
            move |ev: MessageEvent<u64>| tx.send(Ok(ev.data)).unwrap(),
            move |e: MessageError| etx.send(Err(e.to_string())).unwrap(),
        )
        .unwrap();
    ch.port1
        .post_message(&String::from("not a u64"), [])
        .unwrap();
    ch.port1.post_message(&7u64, []).unwrap();
    assert!(rx.recv().unwrap().is_err());
    assert_eq!(rx.recv().unwrap(), Ok(7));
    handler.stop().unwrap();
}

#[test]
fn a_panicking_handler_is_reported_not_silent() {
    let ch = MessageChannel::new().unwrap();
    let handler = ch
        .port2
        .on_message(|_: MessageEvent<u8>| panic!("handler bug"), |_| {})
        .unwrap();
    ch.port1.post_message(&0u8, []).unwrap();
    // The port closes with the dispatch: the peer is told.
    assert!(ch.port1.recv::<u8>().is_err());
    assert!(handler.is_finished());
    assert!(handler.stop().is_err());
}

#[test]
fn dispatch_ends_when_the_peer_is_gone() {
    let ch = MessageChannel::new().unwrap();
    let handler = ch
        .port2
        .on_message(|_: MessageEvent<u8>| {}, |_| {})
        .unwrap();
    drop(ch.port1);
    let port = handler.stop().unwrap();
    assert!(port.try_recv::<u8>().is_err());
}
