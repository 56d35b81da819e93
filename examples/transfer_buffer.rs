//! A 256 MiB frame goes parent -> child -> parent by transfer, not by copy.
//!
//! The parent fills a 256 MiB `ArrayBuffer`, posts it with the buffer in the transfer list;
//! the child checks a few bytes, marks a few others and transfers it back; the parent checks
//! the marks. That round is repeated, and in the same run the same 256 MiB is copied twice
//! for comparison: a `memcpy` inside the parent, and a write through a Unix socket to the
//! child. A transfer moves a descriptor and maps it; a copy moves every byte.
//!
//! ```text
//! cargo run --release --example transfer_buffer
//! cargo run --release --example transfer_buffer -- --busy-poll   # needs two idle cores
//! cargo run --release --example transfer_buffer -- --json        # the figures as one JSON object
//! ```
//!
//! Shared machines are noisy: read the ratios, not the absolute times.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{ArrayBuffer, MessageChannel, MessagePort, WaitStrategy};

const FRAME_LEN: usize = 256 << 20;
/// Round trips by transfer; the median is reported, so one slow round does not decide it.
const ROUNDS: u32 = 11;
/// Copies of the 256 MiB for each baseline (each takes tens to hundreds of milliseconds).
const COPIES: u32 = 3;

/// Where the child finds the parent's Unix socket for the copy baseline.
const SOCKET_ENV: &str = "SHMPORT_TRANSFER_BUFFER_SOCKET";

/// Offsets both sides look at: the edges of the frame and of its pages, spread over all of
/// it, so a frame that arrived shifted, truncated or half-copied fails somewhere.
const PROBES: [usize; 8] = [
    0,
    1,
    4095,
    4096,
    FRAME_LEN / 3,
    FRAME_LEN / 2,
    FRAME_LEN - 4097,
    FRAME_LEN - 1,
];
/// Offsets the child overwrites and the parent checks and restores.
const MARKS: [usize; 3] = [7, FRAME_LEN / 2 + 1, FRAME_LEN - 2];

#[derive(Archive, Serialize, Deserialize, Debug)]
enum ToChild {
    /// Busy-poll (true) or go back to the adaptive default (false); acknowledged with 0.
    BusyPoll(bool),
    /// The frame is the one buffer in the transfer list. `sent_at` is the parent's wall
    /// clock just before posting.
    Frame {
        round: u32,
        sent_at: u64,
    },
    /// Read `len` bytes from the Unix socket `times` times, acknowledging each.
    SocketCopy {
        len: u64,
        times: u32,
    },
    Exit,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct FrameBack {
    round: u32,
    /// Child's wall clock when the frame had arrived (mapped, ready to read).
    received_at: u64,
    /// Child's wall clock just before posting the frame back.
    sent_at: u64,
}

/// The byte the frame holds at offset `i` (251 is prime, so the pattern never lines up
/// with a page and a shifted frame is caught).
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn mark(round: u32) -> u8 {
    (round as u8) ^ 0xA5
}

/// Nanoseconds of the wall clock. `Instant` cannot cross a process boundary; the realtime
/// clock is one clock for every process on the machine, so the two ends of a hop can be
/// timed by different processes.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let (mut busy, mut json) = (false, false);
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--busy-poll" => busy = true,
            "--json" => json = true,
            a => return Err(format!("unknown argument {a}; use --busy-poll, --json").into()),
        }
    }
    // The narrative goes to stderr with `--json`, so stdout is one JSON object.
    macro_rules! say {
        ($($t:tt)*) => {
            if json { eprintln!($($t)*) } else { println!($($t)*) }
        };
    }
    let dir = std::env::temp_dir().join(format!("shmport-transfer-buffer-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock_path = dir.join("copy.sock");
    let listener = UnixListener::bind(&sock_path)?;

    let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(SOCKET_ENV, &sock_path);
    let mut child = shmport::spawn(&mut cmd, port2)?;
    say!(
        "transfer_buffer: parent pid {} <-> child pid {}, one {} MiB ArrayBuffer, {} ports",
        std::process::id(),
        child.id(),
        FRAME_LEN >> 20,
        if busy { "busy-polling" } else { "adaptive" }
    );

    let t = Instant::now();
    let mut frame = ArrayBuffer::new(FRAME_LEN)?;
    for (i, b) in frame.iter_mut().enumerate() {
        *b = pattern(i);
    }
    say!(
        "filled the frame in shared memory in {:.0} ms (every page now resident)",
        ms(t.elapsed())
    );

    let (frame, hops) = transfer_rounds(&port1, frame, busy)?;
    say!(
        "{ROUNDS} round trips by transfer: every probe matched on both sides, every mark came back"
    );

    let memcpy = median(memcpy_copies(&frame));
    let socket = median(socket_copies(&port1, &listener, &frame)?);
    say!("{COPIES} copies each by memcpy and through a Unix socket: the child's probes matched\n");

    port1.post_message(&ToChild::Exit, [])?;
    let status = child.wait()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(format!("child failed: {status}").into());
    }

    let to_child = median(hops.iter().map(|h| h.to_child).collect());
    let to_parent = median(hops.iter().map(|h| h.to_parent).collect());
    let round_trip = median(hops.iter().map(|h| h.round_trip).collect());
    let first = &hops[0];
    say!(
        "{:<44} {:>12} {:>14}",
        format!("256 MiB ({ROUNDS} transfer runs, {COPIES} copies)"),
        "median",
        "first run"
    );
    let row = |name: &str, med: Duration, first: Option<Duration>| {
        say!(
            "{:<44} {:>12} {:>14}",
            name,
            fmt(med),
            first.map_or(String::from("-"), fmt)
        );
    };
    row(
        "transfer, parent -> child (one hop)",
        to_child,
        Some(first.to_child),
    );
    row(
        "transfer, child -> parent (one hop)",
        to_parent,
        Some(first.to_parent),
    );
    row(
        "transfer, round trip (parent's clock)",
        round_trip,
        Some(first.round_trip),
    );
    row("copy, memcpy inside the parent", memcpy, None);
    row("copy, Unix socket parent -> child (+ ack)", socket, None);
    say!("");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let ratios = [
        (
            "memcpy_over_hop",
            ratio(memcpy, to_child),
            "a memcpy of the 256 MiB",
        ),
        (
            "socket_copy_over_hop",
            ratio(socket, to_child),
            "a copy through a Unix socket",
        ),
    ];
    for (_, r, what) in ratios {
        say!("one transfer hop: {r:.0}x faster than {what}");
    }
    say!(
        "a transfer round trip: {:.0}x faster than a copy through a Unix socket",
        ratio(socket, round_trip)
    );
    if json {
        let ns = |d: Duration| d.as_nanos();
        println!(
            "{{\"frame_bytes\": {FRAME_LEN}, \"hop_to_child_ns\": {}, \"hop_to_parent_ns\": {}, \"round_trip_ns\": {}, \"memcpy_ns\": {}, \"socket_copy_ns\": {}, \"memcpy_over_hop\": {:.1}, \"socket_copy_over_hop\": {:.1}, \"socket_copy_over_round_trip\": {:.1}}}",
            ns(to_child),
            ns(to_parent),
            ns(round_trip),
            ns(memcpy),
            ns(socket),
            ratios[0].1,
            ratios[1].1,
            ratio(socket, round_trip)
        );
    }
    say!(
        "(first run: the parent filled the frame, so posting it also unmaps a fully resident \
         256 MiB mapping before the parent can receive; later runs touch only the probed pages)"
    );
    Ok(())
}

struct Hops {
    to_child: Duration,
    to_parent: Duration,
    round_trip: Duration,
}

/// Bounces the frame `ROUNDS` times, checking the child's marks and restoring the pattern
/// under them so the child's probes hold on the next round.
fn transfer_rounds(
    port: &MessagePort,
    mut frame: ArrayBuffer,
    busy: bool,
) -> Result<(ArrayBuffer, Vec<Hops>), Box<dyn std::error::Error>> {
    // Adaptive by default: it spins long enough (up to 100 us) to catch a hop, then yields
    // the core. Busy-polling on both sides takes the futex wake-up out of a hop, but only
    // helps with a free core for each side: with other work on the cores, a spinning
    // receiver waits for the scheduler's next tick (4 ms here) instead.
    if busy {
        busy_poll(port, true)?;
    }
    let mut hops = Vec::new();
    for round in 0..ROUNDS {
        let start = Instant::now();
        let sent_at = wall_ns();
        port.post_message(&ToChild::Frame { round, sent_at }, [frame.into()])?;
        let ev = port.recv::<FrameBack>()?;
        let round_trip = start.elapsed();
        let arrived_at = wall_ns();
        let back = ev.data;
        frame = ev
            .buffers
            .into_iter()
            .next()
            .ok_or("the child's reply carried no buffer")?;
        if back.round != round || frame.len() != FRAME_LEN {
            return Err(format!("round {round}: got round {} back", back.round).into());
        }
        for &m in &MARKS {
            if frame[m] != mark(round) {
                return Err(format!("round {round}: the child's mark at {m} is missing").into());
            }
            frame[m] = pattern(m);
        }
        hops.push(Hops {
            to_child: Duration::from_nanos(back.received_at.saturating_sub(sent_at)),
            to_parent: Duration::from_nanos(arrived_at.saturating_sub(back.sent_at)),
            round_trip,
        });
    }
    if busy {
        // Stop spinning: the copies below need the CPU.
        busy_poll(port, false)?;
    }
    Ok((frame, hops))
}

fn busy_poll(port: &MessagePort, on: bool) -> Result<(), Box<dyn std::error::Error>> {
    port.set_wait_strategy(if on {
        WaitStrategy::BusyPoll
    } else {
        WaitStrategy::Adaptive
    });
    port.post_message(&ToChild::BusyPoll(on), [])?;
    port.recv::<u32>()?;
    Ok(())
}

/// Copies the frame into a private buffer in this process, `COPIES` times.
fn memcpy_copies(frame: &ArrayBuffer) -> Vec<Duration> {
    // Both sides resident before timing: this measures copying, not page faults.
    let mut dst = vec![1u8; FRAME_LEN];
    dst.copy_from_slice(frame);
    (0..COPIES)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(frame));
            std::hint::black_box(&mut dst);
            t.elapsed()
        })
        .collect()
}

/// Writes the frame through a Unix socket to the child, `COPIES` times; each copy ends
/// when the child has read all of it and acknowledged.
fn socket_copies(
    port: &MessagePort,
    listener: &UnixListener,
    frame: &ArrayBuffer,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    port.post_message(
        &ToChild::SocketCopy {
            len: FRAME_LEN as u64,
            times: COPIES,
        },
        [],
    )?;
    let (mut stream, _) = listener.accept()?;
    // The child says when its receive buffer is resident, so that is not timed.
    let mut ack = [0u8; 8];
    stream.read_exact(&mut ack)?;
    let mut times = Vec::new();
    for _ in 0..COPIES {
        let t = Instant::now();
        stream.write_all(frame)?;
        stream.read_exact(&mut ack)?;
        times.push(t.elapsed());
        if u64::from_le_bytes(ack) != FRAME_LEN as u64 {
            return Err("the child read a different length".into());
        }
    }
    Ok(times)
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let port = shmport::parent_port()?;
    let mut frames = 0u32;
    loop {
        let ev = port.recv::<ToChild>()?;
        match ev.data {
            ToChild::BusyPoll(on) => {
                port.set_wait_strategy(if on {
                    WaitStrategy::BusyPoll
                } else {
                    WaitStrategy::Adaptive
                });
                port.post_message(&0u32, [])?;
            }
            ToChild::Frame { round, .. } => {
                let received_at = wall_ns();
                let mut frame = ev
                    .buffers
                    .into_iter()
                    .next()
                    .ok_or("the frame message carried no buffer")?;
                check(&frame, round)?;
                for &m in &MARKS {
                    frame[m] = mark(round);
                }
                let back = FrameBack {
                    round,
                    received_at,
                    sent_at: wall_ns(),
                };
                port.post_message(&back, [frame.into()])?;
                frames += 1;
            }
            ToChild::SocketCopy { len, times } => {
                let path = std::env::var_os(SOCKET_ENV).ok_or("no socket path")?;
                let mut s = UnixStream::connect(path)?;
                let mut buf = vec![1u8; len as usize];
                s.write_all(&0u64.to_le_bytes())?;
                for _ in 0..times {
                    s.read_exact(&mut buf)?;
                    if PROBES.iter().any(|&i| buf[i] != pattern(i)) {
                        return Err("the socket copy differs from the frame".into());
                    }
                    s.write_all(&len.to_le_bytes())?;
                }
            }
            ToChild::Exit => {
                eprintln!(
                    "child  {}: received the frame {frames} times, probes matched every time",
                    std::process::id()
                );
                return Ok(());
            }
        }
    }
}

fn check(frame: &ArrayBuffer, round: u32) -> Result<(), String> {
    if frame.len() != FRAME_LEN {
        return Err(format!("round {round}: frame of {} bytes", frame.len()));
    }
    for &i in PROBES.iter().chain(&MARKS) {
        if frame[i] != pattern(i) {
            return Err(format!("round {round}: byte {i} is {}", frame[i]));
        }
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
