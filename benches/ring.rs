//! In-process costs: the software path of one post + receive on one thread (no cache-line
//! transfer), and one-way throughput between two threads.
//!
//! ```text
//! cargo bench --bench ring
//! ```

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmport::{MessageChannel, WaitStrategy};

fn post_recv_same_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("same_thread_post_recv");
    for size in [8usize, 64, 1024, 4096] {
        let ch = MessageChannel::builder().capacity(1 << 20).build().unwrap();
        let msg = vec![7u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                ch.port1.post_message(&msg, []).unwrap();
                ch.port2.recv::<Vec<u8>>().unwrap().data
            })
        });
    }
    let ch = MessageChannel::new().unwrap();
    g.bench_function("[u8; 64]", |b| {
        b.iter(|| {
            ch.port1.post_message(&[7u8; 64], []).unwrap();
            ch.port2.recv::<[u8; 64]>().unwrap().data
        })
    });
    g.finish();
}

fn two_threads_one_way(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads_one_way");
    g.throughput(Throughput::Elements(1));
    g.bench_function("[u8; 64]", |b| {
        b.iter_custom(|iters| {
            let ch = MessageChannel::builder()
                .wait_strategy(WaitStrategy::BusyPoll)
                .build()
                .unwrap();
            let rx = ch.port2;
            let reader = std::thread::spawn(move || {
                for _ in 0..iters {
                    rx.recv::<[u8; 64]>().unwrap();
                }
            });
            let start = Instant::now();
            for _ in 0..iters {
                ch.port1.post_message(&[1u8; 64], []).unwrap();
            }
            reader.join().unwrap();
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = post_recv_same_thread, two_threads_one_way
}
criterion_main!(benches);
