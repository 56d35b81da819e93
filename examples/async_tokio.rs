//! Async receive under tokio, across two processes: `recv_async().await`, the `messages()`
//! stream, and a receive raced by `tokio::select!` against a timer (cancel-safe: the
//! losing receive loses no message).
//!
//! ```text
//! cargo run --release --example async_tokio
//! ```
//!
//! The child is a plain blocking echo worker; the parent's tasks wait without blocking a
//! runtime thread and without polling: a post rings the port's socket and a reactor wakes
//! the task: shmport's reactor thread, or with `--features tokio` tokio's own (one thread
//! wake-up per message instead of two):
//!
//! ```text
//! cargo run --release --features tokio --example async_tokio
//! cargo run --release --features tokio --example async_tokio -- --json   # one JSON object
//! cargo run --release --features tokio --example async_tokio -- --current-thread
//! ```
//!
//! The runtime is multi-threaded with two workers, or single-threaded with
//! `--current-thread` (on a machine with few cores, a second worker woken to look for work
//! competes with the child for a core).
//!
//! The round trips alternate, 500 at a time, with the same round trips made by a blocking
//! receive (a futex wait) to a second child, so both kinds are measured over the same
//! seconds; it prints the ratio of the two and its spread over the chunks (`CHUNKS=1` in
//! the environment prints each chunk's round trips). Pin it to one CPU (`taskset -c 0`) to
//! compare the two software paths without the scheduler's placement of each wake-up.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shmport::{MessageChannel, WaitStrategy};

const ROUND_TRIPS: u32 = 20_000;
/// Round trips of one kind before the other kind's turn.
const CHUNK: u32 = 500;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let json = std::env::args().any(|a| a == "--json");
    // The narrative goes to stderr with `--json`, so stdout is one JSON object.
    macro_rules! say {
        ($($t:tt)*) => {
            if json { eprintln!($($t)*) } else { println!($($t)*) }
        };
    }
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::new()?;
    let mut child = shmport::spawn(&mut Command::new(std::env::current_exe()?), port2)?;
    let rt = if std::env::args().any(|a| a == "--current-thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    };
    // A second channel to a second child, whose round trips block on the futex: the
    // baseline. The two kinds alternate, CHUNK round trips at a time, over the same seconds,
    // so a noisy machine slows both alike (measured one after the other, the ratio swung
    // from 0.97x to 1.62x between runs).
    let MessageChannel {
        port1: blocking,
        port2,
        ..
    } = MessageChannel::new()?;
    let mut child2 = shmport::spawn(&mut Command::new(std::env::current_exe()?), port2)?;
    blocking.set_wait_strategy(WaitStrategy::Block);
    let (mut async_total, mut blocking_total) = (Duration::ZERO, Duration::ZERO);
    let mut chunk_ratios = Vec::new();
    for chunk in 0..ROUND_TRIPS / CHUNK {
        let first = chunk * CHUNK;
        // 1. Round trips with recv_async, in a task on a runtime thread (which also runs
        //    tokio's reactor).
        let (back, async_time) = rt.block_on(rt.spawn(async move {
            let start = Instant::now();
            for i in first..first + CHUNK {
                port1.post_message(&i, [])?;
                let back = port1.recv_async::<u32>().await?.data;
                assert_eq!(back, i);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((port1, start.elapsed()))
        }))??;
        port1 = back;
        // The same round trips, blocking (same processes, same channel kind): what the
        // async wake-up path costs.
        let start = Instant::now();
        for i in first..first + CHUNK {
            blocking.post_message(&i, [])?;
            assert_eq!(blocking.recv::<u32>()?.data, i);
        }
        let blocking_time = start.elapsed();
        async_total += async_time;
        blocking_total += blocking_time;
        chunk_ratios.push(async_time.as_secs_f64() / blocking_time.as_secs_f64());
        if std::env::var_os("CHUNKS").is_some() {
            eprintln!("{:?} {:?}", async_time / CHUNK, blocking_time / CHUNK);
        }
    }
    let async_rtt = async_total / ROUND_TRIPS;
    let blocking_rtt = blocking_total / ROUND_TRIPS;
    let reactor = if cfg!(feature = "tokio") {
        "tokio's reactor"
    } else {
        "shmport's reactor thread"
    };
    say!("parent: {ROUND_TRIPS} async round trips woken by {reactor}, {async_rtt:?} each");
    say!("parent: {ROUND_TRIPS} blocking (futex) round trips, {blocking_rtt:?} each");
    chunk_ratios.sort_by(f64::total_cmp);
    let ratio = async_rtt.as_secs_f64() / blocking_rtt.as_secs_f64();
    let (low, median, high) = (
        chunk_ratios[0],
        chunk_ratios[chunk_ratios.len() / 2],
        chunk_ratios[chunk_ratios.len() - 1],
    );
    say!(
        "async round trip: {ratio:.2}x the blocking receive's (alternated {CHUNK} at a time; \
         per chunk: median {median:.2}x, {low:.2}x to {high:.2}x)"
    );
    rt.block_on(async {
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
        say!(
            "parent: select! took {timeouts} timer wins before the late answer {answer} \
             (cancelled receives lose nothing)"
        );

        // 3. A stream of events, ended by the child closing its port.
        port1.post_message(&(u32::MAX - 1), [])?; // "send five events, then leave"
        let mut events = port1.messages::<String>();
        while let Some(ev) = events.next().await {
            say!("parent: stream item {:?}", ev?.data);
        }
        say!("parent: stream ended: the child closed its port");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;

    if json {
        println!(
            "{{\"round_trips\": {ROUND_TRIPS}, \"async_rtt_ns\": {}, \"blocking_rtt_ns\": {}, \"async_over_blocking\": {ratio:.3}, \"chunk_median\": {median:.3}, \"chunk_min\": {low:.3}, \"chunk_max\": {high:.3}, \"reactor\": \"{}\"}}",
            async_rtt.as_nanos(),
            blocking_rtt.as_nanos(),
            if cfg!(feature = "tokio") {
                "tokio"
            } else {
                "shmport"
            }
        );
    }
    drop(port1);
    drop(blocking);
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
