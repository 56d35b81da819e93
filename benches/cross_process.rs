//! Between two processes: round trip (busy-poll, adaptive and blocking) and one-way
//! throughput of 64-byte and 4 KiB messages. The child process is spawned once (this bench
//! binary re-run with a port) and driven with `iter_custom`.
//!
//! ```text
//! cargo bench --bench cross_process
//! ```

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{MessageChannel, MessagePort, WaitStrategy};

#[derive(Archive, Serialize, Deserialize, Debug)]
enum Cmd {
    /// Set the child's wait strategy: 0 adaptive, 1 busy-poll, 2 block.
    Strategy(u8),
    /// Echo the next `n` 64-byte messages.
    Echo(u64),
    /// Receive `n` messages of `size` bytes, then answer with the count.
    Count {
        n: u64,
        size: u32,
    },
    Exit,
}

fn strategy_code(s: WaitStrategy) -> u8 {
    match s {
        WaitStrategy::BusyPoll => 1,
        WaitStrategy::Block => 2,
        _ => 0,
    }
}

struct Peer {
    port: MessagePort,
    child: Child,
}

impl Peer {
    fn start() -> Peer {
        let ch = MessageChannel::builder().capacity(1 << 20).build().unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        let child = shmport::spawn(&mut cmd, ch.port2).unwrap();
        Peer {
            port: ch.port1,
            child,
        }
    }

    fn strategy(&self, s: WaitStrategy) {
        self.port.set_wait_strategy(s);
        self.port
            .post_message(&Cmd::Strategy(strategy_code(s)), [])
            .unwrap();
        self.port.recv::<u64>().unwrap();
    }

    fn stop(mut self) {
        self.port.post_message(&Cmd::Exit, []).unwrap();
        self.child.wait().unwrap();
    }
}

fn round_trip(c: &mut Criterion, peer: &Peer) {
    let mut g = c.benchmark_group("cross_process_round_trip_64B");
    for (name, s) in [
        ("busy_poll", WaitStrategy::BusyPoll),
        ("adaptive", WaitStrategy::Adaptive),
        ("blocking", WaitStrategy::Block),
    ] {
        peer.strategy(s);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                peer.port.post_message(&Cmd::Echo(iters), []).unwrap();
                let msg = [7u8; 64];
                let start = Instant::now();
                for _ in 0..iters {
                    peer.port.post_message(&msg, []).unwrap();
                    peer.port.recv::<[u8; 64]>().unwrap();
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn one_way<const N: usize>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    peer: &Peer,
    name: &str,
) {
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            peer.port
                .post_message(
                    &Cmd::Count {
                        n: iters,
                        size: N as u32,
                    },
                    [],
                )
                .unwrap();
            let msg = [1u8; N];
            let start = Instant::now();
            for _ in 0..iters {
                peer.port.post_message(&msg, []).unwrap();
            }
            assert_eq!(peer.port.recv::<u64>().unwrap().data, iters);
            start.elapsed()
        })
    });
}

fn throughput(c: &mut Criterion, peer: &Peer) {
    let mut g = c.benchmark_group("cross_process_one_way");
    for (name, s) in [
        ("busy_poll", WaitStrategy::BusyPoll),
        ("blocking", WaitStrategy::Block),
    ] {
        peer.strategy(s);
        one_way::<64>(&mut g, peer, &format!("64B_{name}"));
        one_way::<4096>(&mut g, peer, &format!("4KiB_{name}"));
    }
    g.finish();
}

fn child() {
    let port = shmport::parent_port().unwrap();
    loop {
        match port.recv::<Cmd>().unwrap().data {
            Cmd::Strategy(code) => {
                port.set_wait_strategy(match code {
                    1 => WaitStrategy::BusyPoll,
                    2 => WaitStrategy::Block,
                    _ => WaitStrategy::Adaptive,
                });
                port.post_message(&0u64, []).unwrap();
            }
            Cmd::Echo(n) => {
                for _ in 0..n {
                    let m = port.recv::<[u8; 64]>().unwrap().data;
                    port.post_message(&m, []).unwrap();
                }
            }
            Cmd::Count { n, size } => {
                for _ in 0..n {
                    match size {
                        64 => drop(port.recv::<[u8; 64]>().unwrap()),
                        _ => drop(port.recv::<[u8; 4096]>().unwrap()),
                    }
                }
                port.post_message(&n, []).unwrap();
            }
            Cmd::Exit => return,
        }
    }
}

fn main() {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let peer = Peer::start();
    round_trip(&mut c, &peer);
    throughput(&mut c, &peer);
    peer.stop();
    c.final_summary();
}
