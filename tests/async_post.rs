//! Async post: `post_message_async` waits for room without blocking the thread.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use common::{as_child, spawn_test_child};
use shmport::{MessageChannel, PostErrorKind};

use common::{block_on, tokio_rt as rt, unpark_waker as waker};

/// A channel whose ring from port1 to port2 is full.
fn full_channel() -> MessageChannel {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    while ch.port1.try_post_message(&[1u8; 200], []).is_ok() {}
    ch
}

#[test]
fn an_async_post_with_room_completes_at_the_first_poll() {
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::new().unwrap();
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(port1.post_message_async(&5u32, []));
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(port2.recv::<u32>().unwrap().data, 5);
}

#[test]
fn an_async_post_on_a_full_ring_is_pending_until_the_reader_frees_room() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let mut queued = 0usize;
    while ch.port1.try_post_message(&[1u8; 200], []).is_ok() {
        queued += 1;
    }
    let MessageChannel {
        mut port1, port2, ..
    } = ch;
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    let reader;
    {
        let mut fut = pin!(port1.post_message_async(&[2u8; 200], []));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        reader = std::thread::spawn(move || {
            let got: Vec<u8> = port2
                .iter::<[u8; 200]>()
                .map(|r| r.unwrap().data[0])
                .collect();
            got
        });
        // The reader's release rings our socket; the reactor wakes this thread.
        loop {
            if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                r.unwrap();
                break;
            }
            std::thread::park();
        }
    }
    drop(port1);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), queued + 1);
    assert_eq!(got.last(), Some(&2));
}

#[test]
fn a_thousand_async_posts_through_a_small_ring_arrive_in_order() {
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::builder().capacity(4096).build().unwrap();
    let reader = std::thread::spawn(move || {
        port2
            .iter::<(u32, [u8; 100])>()
            .map(|r| r.unwrap().data.0)
            .collect::<Vec<_>>()
    });
    block_on(async {
        for i in 0..1000u32 {
            port1
                .post_message_async(&(i, [0u8; 100]), [])
                .await
                .unwrap();
        }
    });
    drop(port1);
    assert_eq!(reader.join().unwrap(), (0..1000).collect::<Vec<_>>());
}

#[test]
fn a_cancelled_async_post_sends_nothing_and_hands_back_its_transfer_list() {
    let MessageChannel {
        mut port1, port2, ..
    } = full_channel();
    let other = MessageChannel::new().unwrap();
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = port1.post_message_async(&[3u8; 200], [other.port1.into()]);
    assert!(std::pin::Pin::new(&mut fut).poll(&mut cx).is_pending());
    let back = fut.cancel();
    let port = back.into_iter().next().unwrap().into_port().unwrap();
    port.post_message(&1u8, []).unwrap();
    assert_eq!(other.port2.recv::<u8>().unwrap().data, 1);
    // Only what was queued before is there: the cancelled post sent nothing.
    let queued = port2.try_iter::<[u8; 200]>().map(|r| r.unwrap().data[0]);
    assert!(queued.into_iter().all(|b| b == 1));
}

#[test]
fn an_async_post_ends_with_disconnected_when_the_reader_closes() {
    let MessageChannel {
        mut port1, port2, ..
    } = full_channel();
    let rt = rt();
    let pending = rt.spawn(async move {
        port1
            .post_message_async(&[4u8; 200], [])
            .await
            .map_err(|e| matches!(e.kind(), PostErrorKind::Disconnected))
    });
    drop(port2);
    assert_eq!(rt.block_on(pending).unwrap(), Err(true));
}

#[test]
fn the_post_future_is_send_so_tokio_can_spawn_it() {
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::new().unwrap();
    let rt = rt();
    let task = rt.spawn(async move { port1.post_message_async(&16u32, []).await.is_ok() });
    assert!(rt.block_on(task).unwrap());
    assert_eq!(port2.recv::<u32>().unwrap().data, 16);
}

#[test]
fn async_posts_to_another_process_wait_for_its_reads() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    as_child(|port| {
        let got: Vec<u64> = port
            .iter::<(u64, [u8; 100])>()
            .map(|r| r.unwrap().data.0)
            .collect();
        assert_eq!(got, (0..5000).collect::<Vec<_>>());
    });
    let child = spawn_test_child(
        "async_posts_to_another_process_wait_for_its_reads",
        ch.port2,
    );
    let mut port = ch.port1;
    let rt = rt();
    rt.block_on(async move {
        for i in 0..5000u64 {
            port.post_message_async(&(i, [0u8; 100]), []).await.unwrap();
        }
        // Dropping the port ends the child's iteration.
    });
    assert!(child.wait().success());
}
