//! Events (issue 5): async round trip against blocking ones, `PortSet` wake-up with 1 and
//! 1,000 ports, `BroadcastChannel` fan-out to 1, 4 and 16 receivers, and the cost of
//! joining a name with 0 and 16 members.
//!
//! ```text
//! cargo bench --bench events
//! ```
//!
//! Peers are threads of this process (the shared-memory path is the same as between
//! processes); compare the lines of one group with each other, from one run.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmport::{BroadcastChannel, MessageChannel, MessagePort, PortSet, WaitStrategy};

/// The smallest executor: poll, park until woken.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A thread that echoes `u64`s on `port` until its peer leaves.
fn echo(port: MessagePort, strategy: WaitStrategy) -> std::thread::JoinHandle<()> {
    port.set_wait_strategy(strategy);
    std::thread::spawn(move || {
        while let Ok(ev) = port.recv::<u64>() {
            if port.post_message(&ev.data, []).is_err() {
                break;
            }
        }
    })
}

fn async_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip");
    g.throughput(Throughput::Elements(1));
    for (label, strategy) in [
        ("blocking_adaptive", WaitStrategy::Adaptive),
        ("blocking_futex", WaitStrategy::Block),
    ] {
        let ch = MessageChannel::new().unwrap();
        let t = echo(ch.port2, strategy);
        ch.port1.set_wait_strategy(strategy);
        g.bench_function(label, |b| {
            b.iter(|| {
                ch.port1.post_message(&1u64, []).unwrap();
                ch.port1.recv::<u64>().unwrap().data
            })
        });
        drop(ch.port1);
        t.join().unwrap();
    }
    let MessageChannel {
        mut port1, port2, ..
    } = MessageChannel::new().unwrap();
    let t = echo(port2, WaitStrategy::Block);
    g.bench_function("async_block_on", |b| {
        b.iter(|| {
            port1.post_message(&1u64, []).unwrap();
            block_on(port1.recv_async::<u64>()).unwrap().data
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("async_tokio_current_thread", |b| {
        b.iter(|| {
            port1.post_message(&1u64, []).unwrap();
            rt.block_on(port1.recv_async::<u64>()).unwrap().data
        })
    });
    drop(port1);
    t.join().unwrap();
    g.finish();
}

fn portset_wakeup(c: &mut Criterion) {
    let mut g = c.benchmark_group("portset_wakeup");
    g.throughput(Throughput::Elements(1));
    for (n, strategy) in [
        (1usize, WaitStrategy::Block),
        (1000, WaitStrategy::Block),
        (1, WaitStrategy::Adaptive),
        (1000, WaitStrategy::Adaptive),
    ] {
        let mut set = PortSet::new().unwrap();
        set.set_wait_strategy(strategy);
        let mut senders = Vec::new();
        for _ in 0..n {
            let ch = MessageChannel::new().unwrap();
            set.insert(ch.port2).unwrap();
            senders.push(ch.port1);
        }
        // The poster thread posts on member `k` when asked on `ctl`.
        let ctl = MessageChannel::new().unwrap();
        ctl.port2.set_wait_strategy(WaitStrategy::Block);
        let ctl_rx = ctl.port2;
        let poster = std::thread::spawn(move || {
            while let Ok(ev) = ctl_rx.recv::<u64>() {
                senders[ev.data as usize]
                    .post_message(&ev.data, [])
                    .unwrap();
            }
        });
        let mut k = 0u64;
        let label = if strategy == WaitStrategy::Block {
            "sleep"
        } else {
            "adaptive"
        };
        g.bench_function(format!("{n}_ports_{label}"), |b| {
            b.iter(|| {
                k = (k * 7 + 13) % n as u64; // a different member each time
                ctl.port1.post_message(&k, []).unwrap();
                let (_, ev) = set.recv::<u64>().unwrap();
                assert_eq!(ev.unwrap().data, k);
            })
        });
        drop(ctl.port1);
        poster.join().unwrap();
    }
    g.finish();
}

/// The wake-up path without a thread hop: post to a sleeping (armed) member, whose writer
/// rings the doorbell; the set's `recv` (epoll reports it, the set looks at it, drains the
/// doorbell, receives); the member armed again. What a wake-up costs, free of the
/// scheduler's noise.
fn portset_wakeup_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("portset_wakeup_path");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 1000] {
        let mut set = PortSet::new().unwrap();
        set.set_wait_strategy(WaitStrategy::Block);
        let mut senders = Vec::new();
        for _ in 0..n {
            let ch = MessageChannel::new().unwrap();
            set.insert(ch.port2).unwrap();
            senders.push(ch.port1);
        }
        let mut k = 0usize;
        g.bench_function(format!("{n}_ports"), |b| {
            b.iter(|| {
                k = (k * 7 + 13) % n;
                senders[k].post_message(&(k as u64), []).unwrap();
                let (_, ev) = set.recv::<u64>().unwrap();
                assert_eq!(ev.unwrap().data, k as u64);
                // Arm the member again, so that the next post finds every member asleep.
                assert_eq!(set.try_wait().unwrap(), None);
            })
        });
    }
    g.finish();
}

fn broadcast_fanout(c: &mut Criterion) {
    const BATCH: u64 = 1_000;
    let mut g = c.benchmark_group("broadcast_fanout");
    g.throughput(Throughput::Elements(BATCH));
    for receivers in [1usize, 4, 16] {
        let name = format!("bench-fanout-{}-{receivers}", std::process::id());
        let mut tx = BroadcastChannel::new(&name).unwrap();
        let mut acks = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..receivers {
            let mut rx = BroadcastChannel::new(&name).unwrap();
            let ack = MessageChannel::new().unwrap();
            let ack_tx = ack.port2;
            threads.push(std::thread::spawn(move || {
                // u64::MAX ends the thread; every BATCH-th message is acknowledged.
                while let Ok(ev) = rx.recv::<u64>() {
                    if ev.data == u64::MAX {
                        break;
                    }
                    if ev.data % BATCH == BATCH - 1 {
                        ack_tx.post_message(&ev.data, []).unwrap();
                    }
                }
            }));
            acks.push(ack.port1);
        }
        assert_eq!(tx.peers(), receivers);
        let mut next = 0u64;
        g.bench_function(format!("{receivers}_receivers"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BATCH {
                        tx.post_message(&next).unwrap();
                        next += 1;
                    }
                    for a in &acks {
                        a.recv::<u64>().unwrap();
                    }
                }
                start.elapsed()
            })
        });
        tx.post_message(&u64::MAX).unwrap();
        for t in threads {
            t.join().unwrap();
        }
    }
    g.finish();
}

fn broadcast_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("broadcast_join");
    for members in [0usize, 16] {
        let name = format!("bench-join-{}-{members}", std::process::id());
        // Members wait in `recv`, as live members do, and accept joiners as they come.
        let threads: Vec<_> = (0..members)
            .map(|_| {
                let mut m = BroadcastChannel::new(&name).unwrap();
                std::thread::spawn(move || while !matches!(m.recv::<u8>(), Ok(e) if e.data == 1) {})
            })
            .collect();
        g.bench_function(format!("{members}_members"), |b| {
            b.iter(|| BroadcastChannel::new(&name).unwrap())
        });
        let mut stop = BroadcastChannel::new(&name).unwrap();
        stop.post_message(&1u8).unwrap();
        for t in threads {
            t.join().unwrap();
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = async_round_trip, portset_wakeup, portset_wakeup_path, broadcast_fanout, broadcast_join
}
criterion_main!(benches);
