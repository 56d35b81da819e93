//! Async receive: `recv_async` and `messages` (issue 5, item 2).

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use common::{as_child, spawn_test_child};
use futures_util::StreamExt;
use shmport::{MessageChannel, RecvError};

/// A waker that counts its wakes and unparks the thread that made it.
struct Counting {
    wakes: AtomicUsize,
    thread: std::thread::Thread,
}

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn counting_waker() -> (Arc<Counting>, Waker) {
    let c = Arc::new(Counting {
        wakes: AtomicUsize::new(0),
        thread: std::thread::current(),
    });
    (c.clone(), Waker::from(c))
}

/// Polls `f` to completion on this thread, parking between polls; returns the result and
/// how many times it was polled.
fn block_on<F: Future>(f: F) -> (F::Output, usize) {
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return (v, polls);
        }
        std::thread::park();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_queued_message_is_ready_at_the_first_poll() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    port1.post_message(&9u8, []).unwrap();
    let (got, polls) = block_on(port2.recv_async::<u8>());
    assert_eq!((got.unwrap().data, polls), (9, 1));
}

#[test]
fn a_pending_receive_is_woken_once_by_the_post_that_answers_it() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(port2.recv_async::<u32>());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(count.wakes.load(Ordering::SeqCst), 0);
    let t = std::thread::spawn(move || {
        port1.post_message(&5u32, []).unwrap();
        port1
    });
    // Parked until the reactor wakes us: no polling in between.
    while count.wakes.load(Ordering::SeqCst) == 0 {
        std::thread::park();
    }
    let Poll::Ready(got) = fut.as_mut().poll(&mut cx) else {
        panic!("woken but not ready");
    };
    assert_eq!(got.unwrap().data, 5);
    assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
    drop(t.join().unwrap());
}

#[test]
fn a_receive_dropped_while_pending_loses_no_message() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = pin!(port2.recv_async::<u32>());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    } // cancelled here, armed and registered
    for i in 0..3u32 {
        port1.post_message(&i, []).unwrap();
    }
    for i in 0..3u32 {
        assert_eq!(block_on(port2.recv_async::<u32>()).0.unwrap().data, i);
    }
}

#[test]
fn a_thousand_receives_cancelled_while_armed_lose_no_message_and_keep_order() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    let (go, go_rx) = std::sync::mpsc::channel::<u32>();
    let sender = std::thread::spawn(move || {
        for i in go_rx {
            port1.post_message(&i, []).unwrap();
            port1.post_message(&(i + 1), []).unwrap();
        }
    });
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    for i in (0..2_000u32).step_by(2) {
        // Pending (nothing posted yet: the sender waits for `go`), then dropped.
        assert!(pin!(port2.recv_async::<u32>()).poll(&mut cx).is_pending());
        go.send(i).unwrap();
        for want in [i, i + 1] {
            assert_eq!(block_on(port2.recv_async::<u32>()).0.unwrap().data, want);
        }
    }
    drop(go);
    sender.join().unwrap();
}

#[test]
fn receives_raced_by_select_in_tokio_lose_no_message_and_keep_order() {
    const N: u32 = 20_000;
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            port1.post_message(&i, []).unwrap();
        }
    });
    let (next, cancelled) = rt().block_on(async move {
        let mut next = 0u32;
        let mut cancelled = 0u32;
        while next < N {
            tokio::select! {
                got = port2.recv_async::<u32>() => {
                    assert_eq!(got.unwrap().data, next, "lost or reordered");
                    next += 1;
                }
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        (next, cancelled)
    });
    sender.join().unwrap();
    assert_eq!(next, N);
    println!("{cancelled} receives lost the race and were dropped, no message lost");
}

#[test]
fn the_stream_yields_every_message_in_order_then_ends_when_the_peer_is_gone() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..1_000u32 {
            port1.post_message(&i, []).unwrap();
        }
    });
    let got: Vec<u32> = rt().block_on(async move {
        port2
            .messages::<u32>()
            .map(|r| r.unwrap().data)
            .collect()
            .await
    });
    sender.join().unwrap();
    assert_eq!(got, (0..1_000).collect::<Vec<_>>());
}

#[test]
fn the_stream_reports_a_messageerror_and_goes_on() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    port1.post_message(&String::from("not a u64"), []).unwrap();
    port1.post_message(&7u64, []).unwrap();
    drop(port1);
    let items: Vec<_> = rt().block_on(async move { port2.messages::<u64>().collect().await });
    assert!(matches!(items[0], Err(RecvError::MessageError(_))));
    assert_eq!(items[1].as_ref().unwrap().data, 7);
    assert_eq!(items.len(), 2);
}

#[test]
fn a_pending_receive_ends_with_disconnected_when_the_peer_closes() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    let t = std::thread::spawn(move || port1.close());
    let (got, _) = block_on(port2.recv_async::<u8>());
    assert!(matches!(got, Err(RecvError::Disconnected)));
    t.join().unwrap();
}

#[test]
fn the_receive_future_is_send_so_tokio_can_spawn_it() {
    let MessageChannel {
        port1, mut port2, ..
    } = MessageChannel::new().unwrap();
    let rt = rt();
    let task = rt.spawn(async move { port2.recv_async::<u16>().await.unwrap().data });
    port1.post_message(&16u16, []).unwrap();
    assert_eq!(rt.block_on(task).unwrap(), 16);
}

#[test]
fn an_async_receive_is_woken_by_a_post_from_another_process() {
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        for i in 0..100u32 {
            port.post_message(&i, []).unwrap();
            assert_eq!(port.recv::<u32>().unwrap().data, i + 1);
        }
    });
    let child = spawn_test_child(
        "an_async_receive_is_woken_by_a_post_from_another_process",
        ch.port2,
    );
    let mut port = ch.port1;
    rt().block_on(async {
        for i in 0..100u32 {
            let got = port.recv_async::<u32>().await.unwrap().data;
            assert_eq!(got, i);
            port.post_message(&(i + 1), []).unwrap();
        }
    });
    assert!(child.wait().success());
}

#[test]
fn an_async_receive_ends_with_disconnected_when_the_peer_process_is_killed() {
    let ch = MessageChannel::new().unwrap();
    as_child(common::post_one_then_park);
    let child = spawn_test_child(
        "an_async_receive_ends_with_disconnected_when_the_peer_process_is_killed",
        ch.port2,
    );
    let mut port = ch.port1;
    let rt = rt();
    assert_eq!(rt.block_on(port.recv_async::<u8>()).unwrap().data, 1);
    let pending = rt.spawn(async move { port.recv_async::<u8>().await.map(|e| e.data) });
    child.kill();
    assert!(matches!(
        rt.block_on(pending).unwrap(),
        Err(RecvError::Disconnected)
    ));
}

#[test]
fn an_owned_stream_runs_in_a_spawned_task_and_gives_the_port_back() {
    let ch = MessageChannel::new().unwrap();
    let rt = rt();
    let task = rt.spawn(async move {
        let mut stream = ch.port2.into_messages::<u32>();
        let first = stream.next().await.unwrap().unwrap().data;
        (first, stream.into_inner())
    });
    ch.port1.post_message(&1u32, []).unwrap();
    ch.port1.post_message(&2u32, []).unwrap();
    let (first, port) = rt.block_on(task).unwrap();
    assert_eq!(first, 1);
    assert_eq!(
        port.recv::<u32>().unwrap().data,
        2,
        "the second is still queued"
    );
}
