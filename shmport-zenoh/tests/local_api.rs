//! A bridged port is an ordinary local `MessagePort`: a `PortSet`, `recv_async` and
//! `on_message` work on it unchanged.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use common::*;
use shmport::{MessagePort, PortSet};
use shmport_zenoh::{Bridge, BridgeConfig, Listener};

/// A bridged channel between two bridges of this process.
fn bridged(test: &str) -> (Bridge, Bridge, MessagePort, MessagePort) {
    bridged_with(test, BridgeConfig::new)
}

/// A bridged channel between two bridges of this process, each configured by `config`.
fn bridged_with(
    test: &str,
    config: impl Fn() -> BridgeConfig,
) -> (Bridge, Bridge, MessagePort, MessagePort) {
    let realm = realm(test);
    let (a, endpoint) = listening_bridge(&realm, config());
    let listener = a.bind("local").unwrap();
    let b = Bridge::open(config().realm(&realm).connect(&endpoint)).unwrap();
    let (near, far) = channel(&listener, &b);
    (a, b, near, far)
}

/// One more channel: `b` connects to `listener`'s name; (`b`'s end, the listener's).
fn channel(listener: &Listener, b: &Bridge) -> (MessagePort, MessagePort) {
    std::thread::scope(|s| {
        let connecting = s.spawn(|| b.connect("local", PATIENCE).unwrap());
        let far = listener.accept().unwrap();
        (connecting.join().unwrap(), far)
    })
}

#[test]
fn a_bridged_port_wakes_a_port_set() {
    let (_a, _b, near, far) = bridged("portset");
    let mut set = PortSet::new().unwrap();
    let key = set.insert(far).unwrap();
    near.post_message(&String::from("to the set"), []).unwrap();
    let (who, ev) = set.recv::<String>().unwrap();
    assert_eq!((who, ev.unwrap().data.as_str()), (key, "to the set"));
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The smallest executor: poll, park until woken.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn a_bridged_port_completes_recv_async() {
    let (_a, _b, near, mut far) = bridged("async");
    let poster = std::thread::spawn(move || {
        near.post_message(&42u64, []).unwrap();
        near
    });
    let ev = block_on(far.recv_async::<u64>()).unwrap();
    assert_eq!(ev.data, 42);
    drop(poster.join().unwrap());
}

#[test]
fn a_bridged_port_runs_an_on_message_handler() {
    let (_a, _b, near, far) = bridged("onmessage");
    let (tx, rx) = std::sync::mpsc::channel();
    let handler = far
        .on_message::<u32, _, _>(move |ev| tx.send(ev.data).unwrap(), |e| panic!("{e}"))
        .unwrap();
    for i in 0..10u32 {
        near.post_message(&i, []).unwrap();
    }
    let got: Vec<u32> = (0..10).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    handler.stop().unwrap();
}

/// A request answered at once with a small message, then one that transfers a buffer
/// (or, for the first few, a port), then one too large to send from the Zenoh thread, then
/// a small one again: the first leaves from the callback that delivered the request
/// (`pump/answer.rs`), the others from the pump thread, and all four arrive in the order
/// they were posted.
#[test]
fn answers_of_every_kind_arrive_in_order() {
    let from_callbacks = answers_arrive_in_order("answers", BridgeConfig::new);
    assert!(from_callbacks > 0, "no answer left from a callback");
}

/// As above with a window of two messages: the credit runs out in the middle of the
/// answers, which go on when the next credit arrives.
#[test]
fn answers_arrive_in_order_when_the_credit_runs_out_among_them() {
    answers_arrive_in_order("answers-window", || BridgeConfig::new().window(2, 0));
}

/// Runs the exchange; the answers the answering side's callbacks sent themselves.
fn answers_arrive_in_order(test: &str, config: impl Fn() -> BridgeConfig) -> u64 {
    const REQUESTS: u32 = 300;
    const WITH_PORT: u32 = 3;
    let (a, _b, near, far) = bridged_with(test, config);
    let answerer = std::thread::spawn(move || {
        for _ in 0..REQUESTS {
            let i = far.recv::<u32>().unwrap().data;
            far.post_message(&(i, 0u8), []).unwrap();
            if i < WITH_PORT {
                let ch = shmport::MessageChannel::new().unwrap();
                far.post_message(&(i, 1u8), [ch.port2.into()]).unwrap();
                ch.port1.post_message(&i, []).unwrap();
            } else {
                let buffer = shmport::ArrayBuffer::from_slice(&i.to_le_bytes()).unwrap();
                far.post_message(&(i, 1u8), [buffer.into()]).unwrap();
            }
            far.post_message(&vec![i; 10_000], []).unwrap();
            far.post_message(&(i, 3u8), []).unwrap();
        }
    });
    for i in 0..REQUESTS {
        near.post_message(&i, []).unwrap();
        assert_eq!(near.recv::<(u32, u8)>().unwrap().data, (i, 0));
        let mut with_transfer = near.recv::<(u32, u8)>().unwrap();
        assert_eq!(with_transfer.data, (i, 1));
        if i < WITH_PORT {
            let port = with_transfer.ports.pop().expect("a port");
            assert_eq!(port.recv::<u32>().unwrap().data, i);
        } else {
            assert_eq!(&with_transfer.buffers[0][..], &i.to_le_bytes());
        }
        assert_eq!(near.recv::<Vec<u32>>().unwrap().data, vec![i; 10_000]);
        assert_eq!(near.recv::<(u32, u8)>().unwrap().data, (i, 3));
    }
    answerer.join().unwrap();
    a.answers_from_callbacks()
}

/// Two channels of the same two bridges taking turns, a request on one answered, then a
/// request on the other: both are answered in order, and no callback watches for an
/// answer (each sample follows the other channel's), so neither channel's request waits
/// on Zenoh's receiving thread for the other's answer.
#[test]
fn channels_taking_turns_are_answered_without_callback_watches() {
    const ROUNDS: u32 = 200;
    let realm = realm("turns");
    let (a, endpoint) = listening_bridge(&realm, BridgeConfig::new());
    let listener = a.bind("local").unwrap();
    let b = Bridge::open(BridgeConfig::new().realm(&realm).connect(&endpoint)).unwrap();
    let (mut nears, mut answerers) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (near, far) = channel(&listener, &b);
        nears.push(near);
        answerers.push(std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                let i = far.recv::<u32>().unwrap().data;
                far.post_message(&i, []).unwrap();
            }
        }));
    }
    for i in 0..ROUNDS {
        for near in &nears {
            near.post_message(&i, []).unwrap();
            assert_eq!(near.recv::<u32>().unwrap().data, i);
        }
    }
    for answerer in answerers {
        answerer.join().unwrap();
    }
    // A credit frame between two requests of one channel may make one sample follow its
    // own channel's: a few watches at most.
    assert!(
        a.answers_from_callbacks() <= 4,
        "{}",
        a.answers_from_callbacks()
    );
}
