//! With the `tokio` feature, async receives and posts inside a tokio runtime wait through
//! tokio's reactor: shmport starts no reactor thread of its own.
//! (`cargo test --release --features tokio --test tokio_reactor`)
#![cfg(feature = "tokio")]

use shmport::{Message, MessageChannel, MessagePort};

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A thread that answers each `T` received on `port` with `answer(&it)` until the port
/// closes.
fn echo<T: Message, A: Message>(
    port: MessagePort,
    answer: impl Fn(&T) -> A + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while let Ok(ev) = port.recv::<T>() {
            if port.post_message(&answer(&ev.data), []).is_err() {
                break;
            }
        }
    })
}

fn reactor_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim() == "shmport-reactor")
        .count()
}

#[test]
fn async_receives_and_posts_in_tokio_start_no_reactor_thread() {
    let rt = current_thread_runtime();
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::builder().capacity(4096).build().unwrap();
    let echo = echo(port2, |m: &(u32, [u8; 300])| m.0);
    rt.block_on(async {
        for round in 0..100u32 {
            // Twenty 300-byte messages through a 4 KiB ring: posts wait for room too.
            for i in 0..20 {
                port1
                    .post_message_async(&(round * 20 + i, [0u8; 300]), [])
                    .await
                    .unwrap();
            }
            for i in 0..20 {
                let got = port1.recv_async::<u32>().await.unwrap().data;
                assert_eq!(got, round * 20 + i);
            }
        }
    });
    assert_eq!(reactor_threads(), 0);
    drop(port1);
    echo.join().unwrap();
}

#[test]
fn every_wait_is_woken_while_older_doorbells_sit_unread() {
    // Under tokio the doorbells are drained only every few waits (its readiness is
    // edge-triggered): each of these round trips waits, and each must still be woken.
    let rt = current_thread_runtime();
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::new().unwrap();
    port2.set_wait_strategy(shmport::WaitStrategy::Block);
    let echo = echo(port2, |n: &u32| *n);
    rt.block_on(async {
        for i in 0..5_000u32 {
            port1.post_message(&i, []).unwrap();
            assert_eq!(port1.recv_async::<u32>().await.unwrap().data, i);
        }
    });
    drop(port1);
    echo.join().unwrap();
}
