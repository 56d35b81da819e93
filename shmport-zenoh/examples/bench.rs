//! The bridge against raw Zenoh pub/sub, same run, same two processes, same session:
//! round trip and one-way throughput of 64-byte and 1 MiB messages.
//!
//! ```sh
//! cargo run --release -p shmport-zenoh --example bench
//! ```
//!
//! `SZ_BENCH_ROUNDS=6` runs six alternating rounds of each figure instead of two, and
//! `SZ_BENCH_ONLY=tput-1m` (a comma-separated list of `rtt-64`, `tput-64`, `rtt-1m`,
//! `tput-1m`) only the figures named: more same-run ratios of one figure on a noisy
//! machine. Within a round trip round the bridge and raw Zenoh alternate twenty times
//! (a chunk of round trips each), and the line gives the ratio of the round's medians and
//! the spread of the per-chunk ratios.
//!
//! The parent listens on a loopback port and spawns itself as the remote side. Raw Zenoh
//! is used the way an application would: a publisher with `CongestionControl::Block`
//! and a subscriber with Zenoh's default FIFO channel, read by an application thread
//! that takes each payload as one contiguous slice (`to_bytes`); the echo side
//! republishes what it reads, as the bridge's echo side reposts the raw archive.

use std::time::{Duration, Instant};

use shmport::MessagePort;
use shmport_zenoh::zenoh::{self, Wait};
use shmport_zenoh::{Bridge, BridgeConfig};
use zenoh::qos::CongestionControl;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    if let Ok(addr) = std::env::var("SZ_BENCH_REMOTE") {
        return remote(&addr);
    }
    let port_no = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port_no}");
    let bridge = Bridge::open(BridgeConfig::new().listen(&addr))?;
    let listener = bridge.bind("bench")?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env("SZ_BENCH_REMOTE", &addr)
        .spawn()?;
    let port = listener.accept()?;
    let raw = Raw::new(bridge.session())?;
    let rounds: usize = std::env::var("SZ_BENCH_ROUNDS").map_or(Ok(2), |r| r.parse())?;
    let only = std::env::var("SZ_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|w| w == name);
    println!("two processes on loopback, {rounds} alternating rounds; figures per round");
    for (size, rtt_n, tput_n) in [(64usize, 5_000usize, 200_000u64), (1 << 20, 200, 1_000)] {
        let msg = vec![3u8; size];
        let unit = if size < 1 << 20 { "64" } else { "1m" };
        for round in (0..rounds).filter(|_| wanted(&format!("rtt-{unit}"))) {
            // The two alternate a chunk at a time within the round (which goes first
            // alternating too), so a machine that changes speed mid-round slows both alike.
            let chunk = (rtt_n / RTT_CHUNKS).max(1);
            let (mut b, mut r, mut chunk_ratios) = (Vec::new(), Vec::new(), Vec::new());
            for c in 0..RTT_CHUNKS {
                let (bc, rc) = if c % 2 == 0 {
                    let bc = bridge_rtt(&port, &msg, chunk)?;
                    (bc, raw.rtt(&msg, chunk)?)
                } else {
                    let rc = raw.rtt(&msg, chunk)?;
                    (bridge_rtt(&port, &msg, chunk)?, rc)
                };
                let (bp, rp) = (percentiles(bc.clone()).0, percentiles(rc.clone()).0);
                chunk_ratios.push(bp.as_secs_f64() / rp.as_secs_f64());
                b.extend(bc);
                r.extend(rc);
            }
            chunk_ratios.sort_by(f64::total_cmp);
            let (b, r) = (percentiles(b), percentiles(r));
            println!(
                "round trip {size:>7} B, round {round}: bridge p50 {:>9.1?} p99 {:>9.1?} | raw zenoh p50 {:>9.1?} p99 {:>9.1?} | ratio {:.2}x (per chunk of {chunk}: median {:.2}x, {:.2}x to {:.2}x)",
                b.0,
                b.1,
                r.0,
                r.1,
                b.0.as_secs_f64() / r.0.as_secs_f64(),
                chunk_ratios[chunk_ratios.len() / 2],
                chunk_ratios[0],
                chunk_ratios[chunk_ratios.len() - 1],
            );
        }
        for round in (0..rounds).filter(|_| wanted(&format!("tput-{unit}"))) {
            let b = bridge_tput(&port, &msg, tput_n)?;
            let r = raw.tput(&msg, tput_n)?;
            println!(
                "throughput {size:>7} B, round {round}: bridge {:>10.0} msgs/s {:>6.2} GB/s | raw zenoh {:>10.0} msgs/s {:>6.2} GB/s | ratio {:.2}x",
                b,
                b * size as f64 / 1e9,
                r,
                r * size as f64 / 1e9,
                b / r
            );
        }
    }
    port.post_message(&String::from("bye"), [])?;
    child.wait()?;
    Ok(())
}

/// Chunks per round trip round: the bridge's and raw Zenoh's alternate this many times.
const RTT_CHUNKS: usize = 20;

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn bridge_rtt(port: &MessagePort, msg: &Vec<u8>, n: usize) -> Result<Vec<Duration>> {
    port.post_message(&format!("rtt {n}"), [])?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        port.post_message(msg, [])?;
        port.recv_archived::<Vec<u8>, _>(|v| v.len())?;
        v.push(t.elapsed());
    }
    Ok(v)
}

fn bridge_tput(port: &MessagePort, msg: &Vec<u8>, n: u64) -> Result<f64> {
    port.post_message(&format!("tput {n}"), [])?;
    let t = Instant::now();
    for _ in 0..n {
        port.post_message(msg, [])?;
    }
    let bytes = port.recv::<u64>()?.data;
    assert_eq!(bytes, n * msg.len() as u64);
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Raw Zenoh: the parent publishes on `echo` or `sink` and reads `back`.
struct Raw {
    echo: zenoh::pubsub::Publisher<'static>,
    sink: zenoh::pubsub::Publisher<'static>,
    back: zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
}

fn publisher(s: &zenoh::Session, key: &str) -> Result<zenoh::pubsub::Publisher<'static>> {
    let p = s
        .declare_publisher(key.to_string())
        .congestion_control(CongestionControl::Block)
        .wait()?;
    // What is published before the subscriber is known is dropped: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.matching_status().wait()?.matching() {
        if Instant::now() > deadline {
            return Err("the remote subscriber never appeared".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(p)
}

impl Raw {
    fn new(s: &zenoh::Session) -> Result<Raw> {
        let back = s.declare_subscriber("sz-bench/raw/back").wait()?;
        Ok(Raw {
            echo: publisher(s, "sz-bench/raw/echo")?,
            sink: publisher(s, "sz-bench/raw/sink")?,
            back,
        })
    }

    fn rtt(&self, msg: &[u8], n: usize) -> Result<Vec<Duration>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.echo.put(msg.to_vec()).wait()?;
            // The bytes in hand, contiguous, as the bridge's receiver has them.
            std::hint::black_box(self.back.recv()?.payload().to_bytes().len());
            v.push(t.elapsed());
        }
        Ok(v)
    }

    fn tput(&self, msg: &[u8], n: u64) -> Result<f64> {
        let t = Instant::now();
        self.sink.put(n.to_le_bytes().to_vec()).wait()?;
        for _ in 0..n {
            self.sink.put(msg.to_vec()).wait()?;
        }
        let reply = self.back.recv()?;
        let bytes = u64::from_le_bytes(reply.payload().to_bytes()[..8].try_into()?);
        assert_eq!(bytes, n * msg.len() as u64);
        Ok(n as f64 / t.elapsed().as_secs_f64())
    }
}

/// The remote side: serves the bridge's commands and echoes or counts raw samples.
fn remote(addr: &str) -> Result<()> {
    let bridge = Bridge::open(BridgeConfig::new().connect(addr))?;
    let port = bridge.connect("bench", Duration::from_secs(30))?;
    let s = bridge.session().clone();
    let echo_in = s.declare_subscriber("sz-bench/raw/echo").wait()?;
    let sink_in = s.declare_subscriber("sz-bench/raw/sink").wait()?;
    let back = std::sync::Arc::new(publisher(&s, "sz-bench/raw/back")?);
    let back2 = back.clone();
    std::thread::spawn(move || {
        while let Ok(sample) = echo_in.recv() {
            if back.put(sample.payload().clone()).wait().is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok(header) = sink_in.recv() {
            let Ok(n) = header.payload().to_bytes()[..8]
                .try_into()
                .map(u64::from_le_bytes)
            else {
                return;
            };
            let mut bytes = 0u64;
            for _ in 0..n {
                match sink_in.recv() {
                    Ok(s) => bytes += s.payload().to_bytes().len() as u64,
                    Err(_) => return,
                }
            }
            if back2.put(bytes.to_le_bytes().to_vec()).wait().is_err() {
                return;
            }
        }
    });
    loop {
        let cmd = port.recv::<String>()?.data;
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words[..] {
            ["rtt", n] => {
                for _ in 0..n.parse::<u64>()? {
                    // Echoed undecoded, as the raw side republishes the sample; a large
                    // archive straight from the buffer it came in.
                    let raw = port.recv_raw_in_place()?;
                    port.post_raw(raw.bytes(), raw.fingerprint, [])?;
                }
            }
            ["tput", n] => {
                let mut bytes = 0u64;
                for _ in 0..n.parse::<u64>()? {
                    bytes += port.recv_archived::<Vec<u8>, _>(|v| v.len() as u64)?.data;
                }
                port.post_message(&bytes, [])?;
            }
            _ => break,
        }
    }
    drop(port);
    bridge.close(Duration::from_secs(5));
    Ok(())
}
