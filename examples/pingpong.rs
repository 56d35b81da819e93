//! shmport's demonstration: round trip and one-way throughput of 64-byte messages between
//! two processes, beside a Unix domain socket and a cache-line ping-pong between two
//! threads measured in the same run.
//!
//! ```text
//! cargo run --release --example pingpong            # about 15 s
//! cargo run --release --example pingpong -- --quick # about 3 s
//! cargo run --release --example pingpong -- --json  # the figures as JSON
//! ```
//!
//! Shared machines are noisy: read the ratios, not the absolute times.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmport::{MessageChannel, MessagePort, WaitStrategy};

/// One 64-byte message; byte 0 says what the child should do with it.
type Msg = [u8; 64];

const ECHO: u8 = 0;
const COUNT: u8 = 1;
const REPORT: u8 = 2;
const STRATEGY: u8 = 3;
const UNIX: u8 = 4;
const EXIT: u8 = 5;

const UNIX_PATH_ENV: &str = "SHMPORT_PINGPONG_SOCKET";

struct Plan {
    rtt_busy: usize,
    rtt_blocking: usize,
    throughput: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let json = std::env::args().any(|a| a == "--json");
    let plan = if quick {
        Plan {
            rtt_busy: 20_000,
            rtt_blocking: 5_000,
            throughput: 500_000,
        }
    } else {
        Plan {
            rtt_busy: 200_000,
            rtt_blocking: 30_000,
            throughput: 5_000_000,
        }
    };

    let dir = std::env::temp_dir().join(format!("shmport-pingpong-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock_path = dir.join("unix.sock");
    let listener = UnixListener::bind(&sock_path)?;

    let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(UNIX_PATH_ENV, &sock_path);
    let mut child = shmport::spawn(&mut cmd, port2)?;
    if !json {
        println!(
            "pingpong: parent pid {} <-> child pid {}, 64-byte messages over one shmport channel",
            std::process::id(),
            child.id()
        );
        println!("(ratios are the evidence; absolute times on a shared machine are not)\n");
    }

    let mut rows = Vec::new();

    eprint!("measuring cache-line ping-pong between two threads... ");
    let cacheline = cache_line_pingpong(plan.rtt_busy);
    eprintln!("done");
    rows.push(Row::rtt("cache-line ping-pong, 2 threads", cacheline));

    let (busy, busy_tput) = measure_shmport(
        &port1,
        &mut rows,
        ("shmport, busy-poll", WaitStrategy::BusyPoll),
        plan.rtt_busy,
        plan.throughput,
    )?;
    let (adaptive, _) = measure_shmport(
        &port1,
        &mut rows,
        ("shmport, adaptive (default)", WaitStrategy::Adaptive),
        plan.rtt_busy,
        plan.throughput,
    )?;
    let (blocking, _) = measure_shmport(
        &port1,
        &mut rows,
        ("shmport, blocking (futex)", WaitStrategy::Block),
        plan.rtt_blocking,
        plan.throughput / 4,
    )?;

    eprint!("measuring Unix domain socket... ");
    let mut cmd_msg = [0u8; 64];
    cmd_msg[0] = UNIX;
    cmd_msg[1..9].copy_from_slice(&(plan.rtt_blocking as u64).to_le_bytes());
    cmd_msg[9..17].copy_from_slice(&(plan.throughput / 4).to_le_bytes());
    port1.post_message(&cmd_msg, [])?;
    let (mut stream, _) = listener.accept()?;
    let unix = unix_round_trips(&mut stream, plan.rtt_blocking)?;
    let unix_tput = unix_throughput(&mut stream, plan.throughput / 4)?;
    eprintln!("done\n");
    rows.push(Row {
        name: "Unix socket, blocking",
        rtt: Some(unix),
        tput: Some(unix_tput),
    });

    let mut exit = [0u8; 64];
    exit[0] = EXIT;
    port1.post_message(&exit, [])?;
    child.wait()?;
    let _ = std::fs::remove_dir_all(&dir);

    let ratios = [
        (
            "busy_poll_rtt_over_floor",
            busy.p50 / cacheline.p50,
            "shmport busy-poll round trip",
            "the hardware floor (a cache line bounced between two cores)",
        ),
        (
            "busy_poll_throughput_over_unix_socket",
            busy_tput / unix_tput,
            "shmport busy-poll throughput",
            "a Unix socket's",
        ),
        (
            "adaptive_rtt_over_busy_poll",
            adaptive.p50 / busy.p50,
            "shmport default (adaptive) round trip",
            "busy-poll's",
        ),
        (
            "blocking_rtt_over_unix_socket",
            blocking.p50 / unix.p50,
            "shmport blocking (futex) round trip",
            "a Unix socket's",
        ),
    ];
    if json {
        print_json(&rows, &ratios);
    } else {
        print_table(&rows, &ratios);
    }
    Ok(())
}

/// A ratio: its JSON key, its value, what is compared, and with what.
type Ratio = (&'static str, f64, &'static str, &'static str);

fn print_table(rows: &[Row], ratios: &[Ratio]) {
    println!(
        "{:<34} {:>12} {:>12} {:>16}",
        "64-byte messages", "RTT p50", "RTT p99", "one-way msgs/s"
    );
    for r in rows {
        let (p50, p99) = r.rtt.map_or((String::from("-"), String::from("-")), |s| {
            (fmt_ns(s.p50), fmt_ns(s.p99))
        });
        let tput = r
            .tput
            .map_or(String::from("-"), |t| format!("{:.2} M", t / 1e6));
        println!("{:<34} {:>12} {:>12} {:>16}", r.name, p50, p99, tput);
    }
    println!();
    for (_, value, what, than) in ratios {
        println!("{what}: {value:.2}x {than}");
    }
}

/// The same figures as one JSON object (`--json`): rows in nanoseconds and messages per
/// second, then the ratios.
fn print_json(rows: &[Row], ratios: &[Ratio]) {
    let num = |v: Option<f64>| v.map_or(String::from("null"), |v| format!("{v:.1}"));
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"name\": \"{}\", \"rtt_p50_ns\": {}, \"rtt_p99_ns\": {}, \"msgs_per_s\": {}}}",
                r.name,
                num(r.rtt.map(|s| s.p50)),
                num(r.rtt.map(|s| s.p99)),
                num(r.tput)
            )
        })
        .collect();
    let ratios: Vec<String> = ratios
        .iter()
        .map(|(key, value, _, _)| format!("\"{key}\": {value:.3}"))
        .collect();
    println!(
        "{{\"message_bytes\": 64, \"rows\": [{}], \"ratios\": {{{}}}}}",
        rows.join(", "),
        ratios.join(", ")
    );
}

/// Round trips and one-way throughput of shmport with both ends waiting as `strategy`;
/// adds a row to the table.
fn measure_shmport(
    port: &MessagePort,
    rows: &mut Vec<Row>,
    (name, strategy): (&'static str, WaitStrategy),
    round_trips: usize,
    messages: u64,
) -> Result<(Stats, f64), Box<dyn std::error::Error>> {
    eprint!("measuring {name}... ");
    set_strategy(port, strategy)?;
    let rtt = shm_round_trips(port, round_trips)?;
    let tput = shm_throughput(port, messages)?;
    eprintln!("done");
    rows.push(Row {
        name,
        rtt: Some(rtt),
        tput: Some(tput),
    });
    Ok((rtt, tput))
}

#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
}

struct Row {
    name: &'static str,
    rtt: Option<Stats>,
    tput: Option<f64>,
}

impl Row {
    fn rtt(name: &'static str, s: Stats) -> Row {
        Row {
            name,
            rtt: Some(s),
            tput: None,
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} us", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn stats(mut samples: Vec<u64>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64;
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Times `n` round trips, each on its own, after a warm-up of a tenth as many.
fn time_round_trips(
    n: usize,
    mut one: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<Stats> {
    for _ in 0..n / 10 {
        one()?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        one()?;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    Ok(stats(samples))
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

fn set_strategy(
    port: &MessagePort,
    strategy: WaitStrategy,
) -> Result<(), Box<dyn std::error::Error>> {
    port.set_wait_strategy(strategy);
    let mut m = [0u8; 64];
    m[0] = STRATEGY;
    m[1] = match strategy {
        WaitStrategy::BusyPoll => 1,
        WaitStrategy::Block => 2,
        _ => 0,
    };
    port.post_message(&m, [])?;
    port.recv::<Msg>()?; // acknowledged
    Ok(())
}

fn shm_round_trips(port: &MessagePort, n: usize) -> std::io::Result<Stats> {
    let mut m = [0u8; 64];
    m[0] = ECHO;
    time_round_trips(n, || {
        port.post_message(&m, []).map_err(io_err)?;
        port.recv::<Msg>().map_err(io_err)?;
        Ok(())
    })
}

/// One-way: post `n` messages as fast as the ring takes them, then ask the child how
/// many it received; messages per second over the whole span.
fn shm_throughput(port: &MessagePort, n: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let mut m = [0u8; 64];
    m[0] = COUNT;
    let start = Instant::now();
    for i in 0..n {
        m[1..9].copy_from_slice(&i.to_le_bytes());
        port.post_message(&m, [])?;
    }
    m[0] = REPORT;
    port.post_message(&m, [])?;
    let reply = port.recv::<Msg>()?.data;
    let elapsed = start.elapsed();
    let got = u64::from_le_bytes(reply[1..9].try_into()?);
    assert_eq!(got, n, "the child counted every message, in order");
    Ok(n as f64 / elapsed.as_secs_f64())
}

fn unix_round_trips(s: &mut UnixStream, n: usize) -> std::io::Result<Stats> {
    let mut m = [0u8; 64];
    time_round_trips(n, || {
        s.write_all(&m)?;
        s.read_exact(&mut m)
    })
}

fn unix_throughput(s: &mut UnixStream, n: u64) -> std::io::Result<f64> {
    let m = [1u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        s.write_all(&m)?;
    }
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    let elapsed = start.elapsed();
    assert_eq!(u64::from_le_bytes(ack), n);
    Ok(n as f64 / elapsed.as_secs_f64())
}

fn cache_line_pingpong(n: usize) -> Stats {
    #[repr(align(128))]
    struct Line(AtomicU64);
    let line = Arc::new(Line(AtomicU64::new(0)));
    let total = (n + n / 10) as u64;
    let other = Arc::clone(&line);
    let t = std::thread::spawn(move || {
        for i in 0..total {
            while other.0.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            other.0.store(2 * i + 2, Ordering::Release);
        }
    });
    let mut i = 0u64;
    let stats = time_round_trips(n, || {
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
        i += 1;
        Ok(())
    })
    .expect("no I/O");
    t.join().unwrap();
    stats
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let port = shmport::parent_port()?;
    let mut counted = 0u64;
    loop {
        let mut m = port.recv::<Msg>()?.data;
        match m[0] {
            ECHO => port.post_message(&m, [])?,
            COUNT => {
                let seq = u64::from_le_bytes(m[1..9].try_into()?);
                if seq == counted {
                    counted += 1;
                }
            }
            REPORT => {
                m[1..9].copy_from_slice(&counted.to_le_bytes());
                counted = 0;
                port.post_message(&m, [])?;
            }
            STRATEGY => {
                port.set_wait_strategy(match m[1] {
                    1 => WaitStrategy::BusyPoll,
                    2 => WaitStrategy::Block,
                    _ => WaitStrategy::Adaptive,
                });
                port.post_message(&m, [])?;
            }
            UNIX => {
                let rtt = u64::from_le_bytes(m[1..9].try_into()?);
                let tput = u64::from_le_bytes(m[9..17].try_into()?);
                let path = std::env::var_os(UNIX_PATH_ENV).ok_or("no socket path")?;
                let mut s = UnixStream::connect(path)?;
                let mut buf = [0u8; 64];
                for _ in 0..rtt + rtt / 10 {
                    s.read_exact(&mut buf)?;
                    s.write_all(&buf)?;
                }
                for _ in 0..tput {
                    s.read_exact(&mut buf)?;
                }
                s.write_all(&tput.to_le_bytes())?;
            }
            EXIT => return Ok(()),
            other => return Err(format!("unknown command {other}").into()),
        }
        let _ = Duration::ZERO;
    }
}
