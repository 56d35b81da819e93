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
        block_on(fut.as_mut()).unwrap();
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

#[test]
fn an_async_post_past_the_queued_bytes_bound_is_pending_until_the_reader_takes_a_body() {
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::new().unwrap();
    port1.set_max_queued_bytes(256 << 10);
    let frame = |fill: u8| {
        let mut b = shmport::ArrayBuffer::new(256 << 10).unwrap();
        b.fill(fill);
        b
    };
    port1.post_message(&0u8, [frame(0).into()]).unwrap();
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    let reader;
    {
        let mut fut = pin!(port1.post_message_async(&1u8, [frame(1).into()]));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        reader = std::thread::spawn(move || {
            port2
                .iter::<u8>()
                .map(|r| {
                    let ev = r.unwrap();
                    (ev.data, ev.buffers[0][0])
                })
                .collect::<Vec<_>>()
        });
        // The reader publishes its head after the transfer record (the writer asked for
        // it), which rings our socket; the reactor wakes this thread.
        block_on(fut.as_mut()).unwrap();
    }
    drop(port1);
    assert_eq!(reader.join().unwrap(), [(0, 0), (1, 1)]);
}

#[test]
fn a_transfer_queued_before_its_writer_closed_with_our_doorbells_unread_still_arrives() {
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::builder().capacity(4096).build().unwrap();
    for i in 0..40u64 {
        port1.try_post_message(&i, []).unwrap();
    }
    // A buffer of a heap the channel has not carried: its descriptor goes in a note on
    // the socket, which the reader takes when it reaches the record.
    let mut buf = shmport::ArrayBuffer::new(100).unwrap();
    buf[0] = 9;
    port1.try_post_message(&40u64, [buf.into()]).unwrap();
    while port1.try_post_message(&41u64, []).is_ok() {}
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    {
        // Pending on the full ring: asks the reader for a doorbell when it frees room.
        let mut fut = pin!(port1.post_message_async(&[0u8; 1500], []));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        // Enough receives for the reader to publish its head: it rings port1's socket.
        for i in 0..20u64 {
            assert_eq!(port2.recv::<u64>().unwrap().data, i);
        }
    }
    drop(port1); // closes with that doorbell unread
    for i in 20..40u64 {
        assert_eq!(port2.recv::<u64>().unwrap().data, i);
    }
    let ev = port2.recv::<u64>().unwrap();
    assert_eq!((ev.data, ev.buffers[0][0]), (40, 9));
    while let Ok(ev) = port2.recv::<u64>() {
        assert_eq!(ev.data, 41);
    }
}
