//! Async receive under tokio, across two processes: `recv_async().await`, the `messages()`
//! stream, and a receive raced by `tokio::select!` against a timer (cancel-safe: the
//! losing receive loses no message).
//!
//! ```text
//! cargo run --release --example async_tokio
//! ```
//!
//! The child is a plain blocking echo worker; the parent's tasks wait without blocking a
//! runtime thread and without polling: a post rings the port's socket and shmport's
//! reactor thread wakes the task.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shmport::{MessageChannel, WaitStrategy};

const ROUND_TRIPS: u32 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::new()?;
    let mut child = shmport::spawn(&mut Command::new(std::env::current_exe()?), port2)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    rt.block_on(async {
        // 1. Round trips with recv_async.
        let start = Instant::now();
        for i in 0..ROUND_TRIPS {
            port1.post_message(&i, [])?;
            let back = port1.recv_async::<u32>().await?.data;
            assert_eq!(back, i);
        }
        let async_rtt = start.elapsed() / ROUND_TRIPS;
        println!("parent: {ROUND_TRIPS} async round trips, {async_rtt:?} each");

        // 2. A receive raced by a timer: the timer wins while the child is slow, and the
        //    message that arrives later is received by the next receive, not lost.
        port1.post_message(&u32::MAX, [])?; // "answer after a pause"
        let mut timeouts = 0;
        let answer = loop {
            tokio::select! {
                got = port1.recv_async::<u32>() => break got?.data,
                _ = tokio::time::sleep(Duration::from_millis(2)) => timeouts += 1,
            }
        };
        println!(
            "parent: select! took {timeouts} timer wins before the late answer {answer} \
             (cancelled receives lose nothing)"
        );

        // 3. A stream of events, ended by the child closing its port.
        port1.post_message(&(u32::MAX - 1), [])?; // "send five events, then leave"
        let mut events = port1.messages::<String>();
        while let Some(ev) = events.next().await {
            println!("parent: stream item {:?}", ev?.data);
        }
        println!("parent: stream ended: the child closed its port");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;

    // The same round trips, blocking, for comparison (same processes, same channel
    // kind): what the async wake-up path costs.
    let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    let mut child2 = shmport::spawn(&mut Command::new(std::env::current_exe()?), port2)?;
    port1.set_wait_strategy(WaitStrategy::Block);
    let start = Instant::now();
    for i in 0..ROUND_TRIPS {
        port1.post_message(&i, [])?;
        assert_eq!(port1.recv::<u32>()?.data, i);
    }
    let blocking_rtt = start.elapsed() / ROUND_TRIPS;
    println!("parent: {ROUND_TRIPS} blocking (futex) round trips, {blocking_rtt:?} each");
    drop(port1);
    child.wait()?;
    child2.wait()?;
    Ok(())
}

/// Echoes numbers; `u32::MAX` means "answer after a pause", `u32::MAX - 1` "send five
/// events and leave".
fn child() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let port = shmport::parent_port()?;
    port.set_wait_strategy(WaitStrategy::Block);
    while let Ok(ev) = port.recv::<u32>() {
        match ev.data {
            u32::MAX => {
                std::thread::sleep(Duration::from_millis(15)); // a slow answer, on purpose
                port.post_message(&7u32, [])?;
            }
            n if n == u32::MAX - 1 => {
                for i in 1..=5 {
                    port.post_message(&format!("event {i} from pid {}", std::process::id()), [])?;
                }
                return Ok(()); // closing the port ends the parent's stream
            }
            n => port.post_message(&n, [])?,
        }
    }
    Ok(())
}
