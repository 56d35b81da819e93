//! Async receive on a BroadcastChannel: `recv_async`, `messages`, `into_messages` (issue 12).

mod common;

use std::pin::pin;
use std::task::{Context, Poll};

use common::{as_child, block_on, isolated, spawn_test_child, tokio_rt, unpark_waker};
use futures_util::StreamExt;
use shmport::{BroadcastChannel, RecvError};

/// A name no other test (or test run) uses at the same time.
fn unique(tag: &str) -> String {
    format!("t{}-async-{tag}", std::process::id())
}

/// How many threads this process runs (a thread shows in /proc as soon as it is made; its
/// name only once it ran).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The thread count once it is `n`, or what it is after 10 s. A joined thread leaves /proc
/// a moment after `join` returns (the kernel wakes the joiner before it releases the task).
fn threads_once(n: usize) -> usize {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while threads() != n && std::time::Instant::now() < give_up {
        std::thread::yield_now();
    }
    threads()
}

/// Polls a fresh `recv_async` of `bc` once and asserts that it waits.
fn assert_a_receive_waits(bc: &mut BroadcastChannel) {
    let waker = unpark_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(pin!(bc.recv_async::<u32>()).poll(&mut cx).is_pending());
}

#[test]
fn a_queued_message_is_ready_at_the_first_poll() {
    let name = unique("ready");
    let mut rx = BroadcastChannel::new(&name).unwrap();
    let mut tx = BroadcastChannel::new(&name).unwrap();
    tx.post_message(&5u32).unwrap();
    let waker = unpark_waker();
    let mut cx = Context::from_waker(&waker);
    match pin!(rx.recv_async::<u32>()).poll(&mut cx) {
        Poll::Ready(got) => assert_eq!(got.unwrap().data, 5),
        Poll::Pending => panic!("a queued message made the receive wait"),
    }
}

#[test]
fn a_pending_recv_async_is_woken_by_a_post_from_another_process() {
    const TEST: &str = "a_pending_recv_async_is_woken_by_a_post_from_another_process";
    let ch = shmport::MessageChannel::new().unwrap();
    as_child(|port| {
        let name = port.recv::<String>().unwrap().data;
        let mut bc = BroadcastChannel::new(&name).unwrap();
        port.post_message(&0u8, []).unwrap(); // joined
        for i in 0..100u32 {
            port.recv::<u8>().unwrap(); // the parent's receive waits
            bc.post_message(&i).unwrap();
        }
        port.recv::<u8>().unwrap(); // open until the parent heard everything
    });
    let name = unique("woken");
    let mut bc = BroadcastChannel::new(&name).unwrap();
    let child = spawn_test_child(TEST, ch.port2);
    let port = ch.port1;
    port.post_message(&name, []).unwrap();
    port.recv::<u8>().unwrap();
    let waker = unpark_waker();
    let mut cx = Context::from_waker(&waker);
    for i in 0..100u32 {
        let mut fut = pin!(bc.recv_async::<u32>());
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "nothing posted yet"
        );
        port.post_message(&1u8, []).unwrap(); // go
        let got = loop {
            std::thread::park();
            if let Poll::Ready(got) = fut.as_mut().poll(&mut cx) {
                break got;
            }
        };
        assert_eq!(got.unwrap().data, i);
    }
    port.post_message(&1u8, []).unwrap();
    assert!(child.wait().success());
}

/// A waker that sends on a channel each time it is woken.
fn signalling_waker() -> (std::task::Waker, std::sync::mpsc::Receiver<()>) {
    struct Signal(std::sync::mpsc::Sender<()>);
    impl std::task::Wake for Signal {
        fn wake(self: std::sync::Arc<Self>) {
            let _ = self.0.send(());
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    (std::sync::Arc::new(Signal(tx)).into(), rx)
}

#[test]
fn a_receive_left_waiting_is_woken_by_its_nap_to_look_again_and_waits_on() {
    let name = unique("nap");
    let mut rx = BroadcastChannel::new(&name).unwrap();
    let mut tx = BroadcastChannel::new(&name).unwrap();
    let (waker, woken) = signalling_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(rx.recv_async::<u32>());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // Nobody posts: only the nap's end (the guard against a writer that died before
    // ringing) wakes the task; it looks, finds nothing, and waits again.
    woken.recv().unwrap();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    tx.post_message(&3u32).unwrap();
    let got = loop {
        woken.recv().unwrap();
        if let Poll::Ready(got) = fut.as_mut().poll(&mut cx) {
            break got;
        }
    };
    assert_eq!(got.unwrap().data, 3);
}

#[test]
fn a_thousand_receives_dropped_while_pending_lose_no_message_and_keep_order() {
    let name = unique("cancel");
    let mut rx = BroadcastChannel::new(&name).unwrap();
    let mut tx = BroadcastChannel::new(&name).unwrap();
    let (go, go_rx) = std::sync::mpsc::channel::<u32>();
    let sender = std::thread::spawn(move || {
        for i in go_rx {
            tx.post_message(&i).unwrap();
            tx.post_message(&(i + 1)).unwrap();
        }
    });
    for i in (0..2_000u32).step_by(2) {
        // Pending (the sender waits for `go`), announced to the bell, then dropped.
        assert_a_receive_waits(&mut rx);
        go.send(i).unwrap();
        for want in [i, i + 1] {
            assert_eq!(block_on(rx.recv_async::<u32>()).unwrap().data, want);
        }
    }
    drop(go);
    sender.join().unwrap();
}

#[test]
fn receives_raced_by_select_in_tokio_lose_no_message_and_keep_order() {
    const N: u32 = 20_000;
    let name = unique("select");
    let mut rx = BroadcastChannel::new(&name).unwrap();
    let mut tx = BroadcastChannel::new(&name).unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            tx.post_message(&i).unwrap();
        }
        tx // open until the receiver is done
    });
    let next = tokio_rt().block_on(async move {
        let mut next = 0u32;
        while next < N {
            tokio::select! {
                got = rx.recv_async::<u32>() => {
                    assert_eq!(got.unwrap().data, next, "lost or reordered");
                    next += 1;
                }
                _ = tokio::task::yield_now() => {}
            }
        }
        next
    });
    drop(sender.join().unwrap());
    assert_eq!(next, N);
}

#[test]
fn a_receive_that_loses_to_a_ready_future_leaves_the_message_for_the_next() {
    let name = unique("lose");
    let mut rx = BroadcastChannel::new(&name).unwrap();
    let mut tx = BroadcastChannel::new(&name).unwrap();
    let waker = unpark_waker();
    let mut cx = Context::from_waker(&waker);
    for i in 0..1_000u32 {
        {
            let mut fut = pin!(rx.recv_async::<u32>());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            tx.post_message(&i).unwrap();
            // A select! whose other branch is ready: that branch wins, and this one is
            // dropped without another poll although its message is there.
            let raced = futures_util::future::select(std::future::ready(()), fut.as_mut());
            assert!(matches!(
                block_on(raced),
                futures_util::future::Either::Left(_)
            ));
        }
        assert_eq!(block_on(rx.recv_async::<u32>()).unwrap().data, i);
    }
}

#[test]
fn the_receive_future_is_send_so_tokio_can_spawn_it() {
    let name = unique("send");
    let mut rx = BroadcastChannel::new(&name).unwrap();
    let mut tx = BroadcastChannel::new(&name).unwrap();
    let rt = tokio_rt();
    let task = rt.spawn(async move { rx.recv_async::<u16>().await.unwrap().data });
    tx.post_message(&16u16).unwrap();
    assert_eq!(rt.block_on(task).unwrap(), 16);
}

#[test]
fn recv_async_after_close_is_disconnected() {
    let mut bc = BroadcastChannel::new(&unique("closed")).unwrap();
    bc.close();
    assert!(matches!(
        block_on(bc.recv_async::<u8>()),
        Err(RecvError::Disconnected)
    ));
    assert!(block_on(bc.messages::<u8>().next()).is_none());
}

#[test]
fn the_owned_stream_ends_when_its_channel_is_closed() {
    let name = unique("stream-end");
    let mut tx = BroadcastChannel::new(&name).unwrap();
    let mut stream = BroadcastChannel::new(&name).unwrap().into_messages::<u32>();
    tx.post_message(&1u32).unwrap();
    tx.post_message(&2u32).unwrap();
    assert_eq!(block_on(stream.next()).unwrap().unwrap().data, 1);
    stream.get_mut().close();
    assert!(
        block_on(stream.next()).is_none(),
        "closed: the second is not received"
    );
    assert!(block_on(stream.next()).is_none());
}

#[test]
fn the_stream_reports_a_messageerror_and_goes_on() {
    let name = unique("stream-error");
    let mut rx = BroadcastChannel::new(&name).unwrap();
    let mut tx = BroadcastChannel::new(&name).unwrap();
    tx.post_message(&String::from("not a u64")).unwrap();
    tx.post_message(&7u64).unwrap();
    let mut stream = rx.messages::<u64>();
    assert!(matches!(
        block_on(stream.next()),
        Some(Err(RecvError::MessageError(_)))
    ));
    assert_eq!(block_on(stream.next()).unwrap().unwrap().data, 7);
}

#[test]
fn an_owned_stream_runs_in_a_spawned_task_and_gives_the_channel_back() {
    let name = unique("owned");
    let mut tx = BroadcastChannel::new(&name).unwrap();
    let rx = BroadcastChannel::new(&name).unwrap();
    let rt = tokio_rt();
    let task = rt.spawn(async move {
        let mut stream = rx.into_messages::<u32>();
        let first = stream.next().await.unwrap().unwrap().data;
        (first, stream.into_inner())
    });
    tx.post_message(&1u32).unwrap();
    tx.post_message(&2u32).unwrap();
    let (first, mut rx) = rt.block_on(task).unwrap();
    assert_eq!(first, 1);
    assert_eq!(
        rx.recv::<u32>().unwrap().data,
        2,
        "the second is still queued"
    );
}

#[test]
fn a_hundred_thousand_messages_from_two_processes_stream_in_each_senders_order() {
    const TEST: &str =
        "a_hundred_thousand_messages_from_two_processes_stream_in_each_senders_order";
    const EACH: u32 = 50_000;
    as_child(|port| {
        let (name, id) = port.recv::<(String, u32)>().unwrap().data;
        let mut bc = BroadcastChannel::new(&name).unwrap();
        port.post_message(&0u8, []).unwrap(); // joined
        port.recv::<u8>().unwrap(); // go
        for seq in 0..EACH {
            bc.post_message(&(id, seq)).unwrap();
        }
        // Every member reads every other's ring: take the other child's, so that it is
        // not held back by a reader that never reads.
        for _ in 0..EACH {
            bc.recv::<(u32, u32)>().unwrap();
        }
        port.recv::<u8>().unwrap(); // open until the parent heard everything
    });
    let name = unique("many");
    let rx = BroadcastChannel::new(&name).unwrap();
    let chans = [(); 2].map(|_| shmport::MessageChannel::new().unwrap());
    let mut ports = Vec::new();
    let mut kids = Vec::new();
    for (id, ch) in chans.into_iter().enumerate() {
        kids.push(spawn_test_child(TEST, ch.port2));
        ch.port1
            .post_message(&(name.clone(), id as u32), [])
            .unwrap();
        ch.port1.recv::<u8>().unwrap();
        ports.push(ch.port1);
    }
    for p in &ports {
        p.post_message(&1u8, []).unwrap();
    }
    let next = tokio_rt().block_on(async move {
        let mut stream = rx.into_messages::<(u32, u32)>();
        let mut next = [0u32; 2];
        while next.iter().sum::<u32>() < 2 * EACH {
            let (id, seq) = stream.next().await.unwrap().unwrap().data;
            assert_eq!(seq, next[id as usize], "sender {id} out of order");
            next[id as usize] += 1;
        }
        next
    });
    assert_eq!(next, [EACH; 2]);
    for p in &ports {
        p.post_message(&1u8, []).unwrap();
    }
    for k in kids {
        assert!(k.wait().success());
    }
}

#[test]
fn the_bell_thread_starts_with_the_first_wait_and_ends_with_its_channel() {
    isolated(
        "the_bell_thread_starts_with_the_first_wait_and_ends_with_its_channel",
        || {
            let name = unique("thread");
            let mut a = BroadcastChannel::new(&name).unwrap();
            let mut b = BroadcastChannel::new(&name).unwrap();
            let mut tx = BroadcastChannel::new(&name).unwrap();
            tx.post_message(&1u32).unwrap();
            assert_eq!(block_on(a.recv_async::<u32>()).unwrap().data, 1);
            block_on(b.recv_async::<u32>()).unwrap();
            let before = threads();
            assert_a_receive_waits(&mut a);
            assert_eq!(threads(), before + 1, "a receive waited: a thread");
            assert_a_receive_waits(&mut a);
            assert_eq!(
                threads(),
                before + 1,
                "one thread per channel, not per wait"
            );
            assert_a_receive_waits(&mut b);
            assert_eq!(threads(), before + 2);
            a.close();
            assert_eq!(
                threads_once(before + 1),
                before + 1,
                "closing ends its thread"
            );
            drop(b);
            assert_eq!(threads_once(before), before, "dropping ends its thread");
        },
    );
}
