//! A port handed along a chain of three processes while messages keep flowing into it.
//!
//! The parent creates channel X and keeps posting numbered messages on `X.port1`, never
//! pausing. `X.port2` goes to child A with `spawn`. A receives the first part, reports what
//! it saw back on `X.port2`, then transfers `X.port2` to grandchild B (which A spawned
//! with a channel Y of its own) in the transfer list of a message on Y. B receives the rest,
//! including everything that was queued while the port was in flight, and reports what it
//! saw. The parent checks that A's part followed by B's part is exactly `0..N`: in order,
//! no gap, no duplicate.
//!
//! ```text
//! cargo run --release --example relay
//! cargo run --release --example relay -- --messages 1000000
//! ```

use std::process::Command;
use std::time::Instant;

use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{MessageChannel, MessagePort, TryRecvError};

/// Which link of the chain this process is: "a" or "b". `BOOTSTRAP_ENV` only says that a
/// process was spawned with a port; A and B both are, and do different things.
const ROLE_ENV: &str = "SHMPORT_RELAY_ROLE";
/// How many messages A receives before it hands the port on.
const A_TAKES_ENV: &str = "SHMPORT_RELAY_A_TAKES";

/// Parent -> whoever holds `X.port2`.
#[derive(Archive, Serialize, Deserialize, Debug)]
enum Relay {
    Seq(u64),
    End,
}

/// Whoever holds `X.port2` -> parent: the numbers it received, in the order received.
#[derive(Archive, Serialize, Deserialize, Debug)]
struct Report {
    role: String,
    pid: u32,
    seen: Vec<u64>,
}

/// A -> B on channel Y; `X.port2` is the one port in the transfer list.
#[derive(Archive, Serialize, Deserialize, Debug)]
struct Handoff {
    from_pid: u32,
    a_received: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return match std::env::var(ROLE_ENV).as_deref() {
            Ok("a") => child_a(),
            Ok("b") => grandchild_b(),
            other => Err(format!("spawned without a known role: {other:?}").into()),
        };
    }
    let mut n = 200_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--messages", Some(v)) => n = v.parse()?,
            _ => return Err(format!("unknown argument {a}; use --messages N").into()),
        }
    }
    let a_takes = n / 3;

    let x = MessageChannel::new()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "a").env(A_TAKES_ENV, a_takes.to_string());
    let start = Instant::now();
    let mut child_a = shmport::spawn(&mut cmd, x.port2)?;
    println!(
        "relay: parent {} posts {n} numbered messages on X.port1 without pausing",
        std::process::id()
    );
    println!(
        "  hop 1: X.port2 parent {} -> child A {} (spawn)",
        std::process::id(),
        child_a.id()
    );

    // While posting, look now and then for A's report: when it arrives says how far the
    // parent had got when A let go of the port.
    let mut a_report = None;
    let mut posted_when_a_reported = 0;
    for i in 0..n {
        x.port1.post_message(&Relay::Seq(i), [])?;
        if a_report.is_none() && i % 1024 == 0 {
            match x.port1.try_recv::<Report>() {
                Ok(ev) => {
                    a_report = Some(ev.data);
                    posted_when_a_reported = i + 1;
                }
                Err(TryRecvError::Empty) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    x.port1.post_message(&Relay::End, [])?;
    let posting = start.elapsed();
    let a_report = match a_report {
        Some(r) => r,
        None => {
            posted_when_a_reported = n;
            x.port1.recv::<Report>()?.data
        }
    };
    let b_report = x.port1.recv::<Report>()?.data;
    if (a_report.role.as_str(), b_report.role.as_str()) != ("A", "B") {
        return Err(format!(
            "reports out of order: {} then {}",
            a_report.role, b_report.role
        )
        .into());
    }
    let elapsed = start.elapsed();
    let status = child_a.wait()?;
    if !status.success() {
        return Err(format!("child A failed: {status}").into());
    }

    println!(
        "  hop 2: X.port2 child A {} -> grandchild B {} (transfer list of a message on A's channel Y)",
        a_report.pid, b_report.pid
    );
    let (a_seen, b_seen) = (&a_report.seen, &b_report.seen);
    println!(
        "  A received {} ({}), B received {} ({})",
        a_seen.len(),
        span(a_seen),
        b_seen.len(),
        span(b_seen)
    );
    println!(
        "  A's report reached the parent after it had posted {posted_when_a_reported}: \
         up to {} messages were queued and travelled with the port",
        posted_when_a_reported.saturating_sub(a_seen.len() as u64)
    );
    println!(
        "  {n} messages through 2 hops in {:.1} ms ({:.2} M msgs/s; posting took {:.1} ms)",
        elapsed.as_secs_f64() * 1e3,
        n as f64 / elapsed.as_secs_f64() / 1e6,
        posting.as_secs_f64() * 1e3
    );

    let whole: Vec<u64> = a_seen.iter().chain(b_seen).copied().collect();
    if let Some(at) = (0..n as usize).find(|&i| whole.get(i) != Some(&(i as u64))) {
        return Err(format!(
            "sequence broken at position {at}: got {:?}, expected {at} ({} received in all)",
            whole.get(at),
            whole.len()
        )
        .into());
    }
    if whole.len() as u64 != n {
        return Err(format!("{} messages received, {n} posted", whole.len()).into());
    }
    println!(
        "check: A's part + B's part = 0..{n} exactly, in order, no gap, no duplicate ({} messages)",
        whole.len()
    );
    Ok(())
}

fn span(seen: &[u64]) -> String {
    match (seen.first(), seen.last()) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => String::from("none"),
    }
}

fn child_a() -> Result<(), Box<dyn std::error::Error>> {
    let x = shmport::parent_port()?;
    let takes: u64 = std::env::var(A_TAKES_ENV)?.parse()?;
    // B starts first, so the port spends as little time as possible in flight.
    let y = MessageChannel::new()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "b");
    let mut b = shmport::spawn(&mut cmd, y.port2)?;

    let seen = receive(&x, Some(takes))?;
    let a_received = seen.len() as u64;
    let report = Report {
        role: String::from("A"),
        pid: std::process::id(),
        seen,
    };
    // The report is posted on X.port2 itself: it reaches the parent before anything B posts
    // on the same port after the handoff.
    x.post_message(&report, [])?;
    y.port1.post_message(
        &Handoff {
            from_pid: std::process::id(),
            a_received,
        },
        [x.into()],
    )?;
    let status = b.wait()?;
    if !status.success() {
        return Err(format!("grandchild B failed: {status}").into());
    }
    Ok(())
}

fn grandchild_b() -> Result<(), Box<dyn std::error::Error>> {
    let y = shmport::parent_port()?;
    let ev = y.recv::<Handoff>()?;
    let handoff = ev.data;
    let x = ev
        .ports
        .into_iter()
        .next()
        .ok_or("the handoff carried no port")?;
    let seen = receive(&x, None)?;
    if seen.first() != Some(&handoff.a_received) {
        eprintln!(
            "grandchild B: A ({}) said it received {}, but B's first message is {:?}",
            handoff.from_pid,
            handoff.a_received,
            seen.first()
        );
    }
    let report = Report {
        role: String::from("B"),
        pid: std::process::id(),
        seen,
    };
    x.post_message(&report, [])?;
    Ok(())
}

/// Receives numbers until `limit` of them, or until `End`; an early `End` is an error only
/// when a limit was set.
fn receive(x: &MessagePort, limit: Option<u64>) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let mut seen = Vec::new();
    while limit.is_none_or(|l| (seen.len() as u64) < l) {
        match x.recv::<Relay>()?.data {
            Relay::Seq(i) => seen.push(i),
            Relay::End if limit.is_none() => break,
            Relay::End => return Err("End arrived before A's share".into()),
        }
    }
    Ok(seen)
}
