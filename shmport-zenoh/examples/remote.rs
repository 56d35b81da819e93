//! Two shells, one machine or two: a MessagePort across hosts.
//!
//! ```sh
//! cargo run --release -p shmport-zenoh --example remote -- listen 127.0.0.1:7447
//! cargo run --release -p shmport-zenoh --example remote -- connect 127.0.0.1:7447
//! ```
//!
//! The connecting side measures a round trip and a throughput figure, transfers a
//! 16 MiB `ArrayBuffer` and a `MessagePort` across, and checks what comes back. The
//! listening side serves one connection after another until interrupted.

use std::time::{Duration, Instant};

use shmport::{ArrayBuffer, MessageChannel, MessagePort};
use shmport_zenoh::{Bridge, BridgeConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("listen"), Some(addr)) => listen(addr),
        (Some("connect"), Some(addr)) => connect(addr),
        _ => {
            eprintln!("usage: remote listen HOST:PORT | remote connect HOST:PORT");
            std::process::exit(2);
        }
    }
}

fn listen(addr: &str) -> Result<()> {
    let bridge = Bridge::open(BridgeConfig::new().listen(addr))?;
    let listener = bridge.bind("remote")?;
    println!("listening on {addr} (bridge {})", bridge.id());
    loop {
        let port = listener.accept()?;
        println!("a peer connected");
        if let Err(e) = serve(&port) {
            println!("the peer left: {e}");
        }
    }
}

/// Answers the commands of one connection until it says `bye` or goes.
fn serve(port: &MessagePort) -> Result<()> {
    loop {
        let mut cmd = port.recv::<String>()?;
        let words: Vec<String> = cmd.data.split_whitespace().map(str::to_owned).collect();
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["rtt", n] => {
                for _ in 0..n.parse::<u64>()? {
                    let ev = port.recv::<Vec<u8>>()?;
                    port.post_message(&ev.data, [])?;
                }
            }
            ["throughput", n] => {
                let mut bytes = 0u64;
                for _ in 0..n.parse::<u64>()? {
                    bytes += port.recv::<Vec<u8>>()?.data.len() as u64;
                }
                port.post_message(&bytes, [])?;
            }
            ["buffer"] => {
                // The buffer came with the command.
                let buf = cmd.buffers.remove(0);
                let sum = checksum(&buf);
                println!(
                    "received a {} MiB buffer, checksum {sum:#x}",
                    buf.len() >> 20
                );
                port.post_message(&sum, [buf.into()])?;
            }
            ["port"] => {
                let theirs = cmd.ports.remove(0);
                theirs.post_message(&String::from("hello through a transferred port"), [])?;
                println!("answered on a transferred port");
            }
            ["bye"] => return Ok(()),
            _ => println!("unknown command {:?}", cmd.data),
        }
    }
}

fn connect(addr: &str) -> Result<()> {
    let bridge = Bridge::open(BridgeConfig::new().connect(addr))?;
    let port = bridge.connect("remote", Duration::from_secs(30))?;
    println!("connected to {addr}");

    // Round trips of 64-byte messages.
    let n = 2_000;
    let msg = vec![7u8; 64];
    port.post_message(&format!("rtt {n}"), [])?;
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        port.post_message(&msg, [])?;
        port.recv::<Vec<u8>>()?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    println!(
        "round trip, 64 B: p50 {:?}, p99 {:?}",
        rtts[n / 2],
        rtts[n * 99 / 100]
    );

    // One-way throughput.
    for (size, count) in [(64usize, 100_000u64), (1 << 20, 500)] {
        let msg = vec![1u8; size];
        port.post_message(&format!("throughput {count}"), [])?;
        let t = Instant::now();
        for _ in 0..count {
            port.post_message(&msg, [])?;
        }
        let bytes = port.recv::<u64>()?.data;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(bytes, size as u64 * count);
        println!(
            "throughput, {size} B: {:.0} msgs/s, {:.2} GB/s",
            count as f64 / secs,
            bytes as f64 / secs / 1e9
        );
    }

    // A buffer there and back: moved, not shared.
    let mut buf = ArrayBuffer::new_unzeroed(16 << 20)?;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let sum = checksum(&buf);
    let t = Instant::now();
    port.post_message(&String::from("buffer"), [buf.into()])?;
    let mut ev = port.recv::<u64>()?;
    let back = ev.buffers.remove(0);
    assert_eq!((ev.data, checksum(&back)), (sum, sum));
    println!(
        "a 16 MiB ArrayBuffer went there and back in {:?}, contents intact",
        t.elapsed()
    );

    // A port across: the far side answers on it.
    let ch = MessageChannel::new()?;
    port.post_message(&String::from("port"), [ch.port2.into()])?;
    println!(
        "on the transferred port: {:?}",
        ch.port1.recv::<String>()?.data
    );

    port.post_message(&String::from("bye"), [])?;
    drop((port, ch.port1));
    bridge.close(Duration::from_secs(5));
    Ok(())
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
