//! Round trips: the parent stamps a sequence number into a message, sends it and waits for
//! it to come back; the child receives, checks the number and sends the same bytes back.
//! Every timed round trip is timed on its own (two clock reads, whose cost is measured and
//! printed), so the table has p50 and p99, not only a mean.

use std::time::Instant;

use super::link::Parent;
use super::{Kind, Test, pair, threads};
use crate::stats::{Side, Usage};
use crate::{Options, Result};

/// The parent's half of a round trip transport.
pub trait Pinger {
    /// Sends message `seq` (0, 1, 2, ... in turn) and waits until it is back.
    fn round_trip(&mut self, seq: u64) -> Result<()>;
}

/// The child's half.
pub trait Echoer {
    /// Receives message `seq`, checks it is that one, sends it back.
    fn echo(&mut self, seq: u64) -> Result<()>;
}

impl<T: Pinger + ?Sized> Pinger for Box<T> {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        (**self).round_trip(seq)
    }
}

impl<T: Echoer + ?Sized> Echoer for Box<T> {
    fn echo(&mut self, seq: u64) -> Result<()> {
        (**self).echo(seq)
    }
}

/// Writes `seq` into the first 8 bytes of `msg` (every message is at least 8 bytes long).
pub fn stamp(msg: &mut [u8], seq: u64) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Checks that `msg` is message `seq`.
pub fn expect(msg: &[u8], seq: u64) -> Result<()> {
    let got = msg
        .first_chunk::<8>()
        .map(|b| u64::from_le_bytes(*b))
        .ok_or("a message shorter than 8 bytes")?;
    if got != seq {
        return Err(format!("message {got} arrived where {seq} was due").into());
    }
    Ok(())
}

/// One transport's round trips.
pub struct Trips {
    pub kind: Kind,
    /// Every timed round trip, in nanoseconds, sorted.
    pub sorted_ns: Vec<u64>,
    /// Measured interleaved with its floor (see `pair`).
    pub interleaved: bool,
    /// The parent's stretch (its usage per round trip; a pair's is shared by both rows).
    pub parent: Side,
    /// The child's, for transports between the processes.
    pub child: Option<Side>,
}

impl Trips {
    fn new(
        kind: Kind,
        mut ns: Vec<u64>,
        interleaved: bool,
        parent: Side,
        child: Option<Side>,
    ) -> Trips {
        ns.sort_unstable();
        Trips {
            kind,
            sorted_ns: ns,
            interleaved,
            parent,
            child,
        }
    }

    pub fn percentile(&self, p: f64) -> f64 {
        let i = ((self.sorted_ns.len() - 1) as f64 * p).round() as usize;
        self.sorted_ns[i] as f64
    }

    pub fn p50(&self) -> f64 {
        self.percentile(0.5)
    }

    pub fn mean(&self) -> f64 {
        self.sorted_ns.iter().sum::<u64>() as f64 / self.sorted_ns.len().max(1) as f64
    }
}

/// Warm-up and timed round trips for `kind`.
pub fn rounds(kind: Kind, opts: &Options) -> (u64, u64) {
    let rounds = if kind.sleeps() {
        (opts.rounds / 5).max(1)
    } else {
        opts.rounds
    };
    (rounds / 10 + 1, rounds)
}

/// The transport measured interleaved with `floor`, when both are selected: each
/// spinning kind with its floor, and the blocking receive with the Unix socket (both
/// sleep; a VM's scheduler places their wake-ups differently from one second to the
/// next, 9 or 80 µs a round trip here, so measured one after the other their ratio swung
/// from 0.2x to 2.3x).
fn partner(floor: Kind) -> Option<Kind> {
    match floor {
        Kind::Floor => Some(Kind::ShmportBusyPoll),
        Kind::FloorThreads => Some(Kind::RtrbThreads),
        Kind::UnixSocket => Some(Kind::ShmportBlock),
        _ => None,
    }
}

fn floor_partnered_with(kind: Kind) -> Option<Kind> {
    [Kind::Floor, Kind::FloorThreads, Kind::UnixSocket]
        .into_iter()
        .find(|&f| partner(f) == Some(kind))
}

/// Measures `kind`'s round trips: one row, or two (its floor's and its own) when it is
/// measured interleaved with its floor, or none for a floor measured with its partner.
pub fn measure(links: &Parent<'_>, kind: Kind, opts: &Options) -> Result<Vec<Trips>> {
    if partner(kind).is_some_and(|p| opts.kinds.contains(&p)) {
        return Ok(vec![]);
    }
    let floor = floor_partnered_with(kind).filter(|f| opts.kinds.contains(f));
    let (warmup, mut rounds) = rounds(kind, opts);
    if floor.is_some() {
        rounds *= 2;
    }
    let (ns, parent, child) = if kind.in_process() {
        let (ns, parent) = threads::round_trips(kind, opts.size, warmup, rounds, floor.is_some())?;
        // One system-call counter per process: it cannot tell the two threads apart.
        let usage = Usage {
            syscalls: None,
            ..parent.usage
        };
        (ns, Side { usage, ..parent }, None)
    } else {
        let (ns, parent, child) = across(links, kind, floor, warmup, rounds)?;
        (ns, parent, Some(child))
    };
    Ok(match floor {
        None => vec![Trips::new(kind, ns, false, parent, child)],
        Some(floor) => {
            let (floor_ns, own_ns) = pair::split(&ns, warmup);
            vec![
                Trips::new(floor, floor_ns, true, parent, child),
                Trips::new(kind, own_ns, true, parent, child),
            ]
        }
    })
}

/// Round trips between the processes: the samples, the parent's side, the child's.
fn across(
    links: &Parent<'_>,
    kind: Kind,
    partner: Option<Kind>,
    warmup: u64,
    rounds: u64,
) -> Result<(Vec<u64>, Side, Side)> {
    let test = Test::RoundTrip { warmup, rounds };
    let mut link = links.connect(kind, test, partner)?;
    let (ns, parent) = match time_round_trips(link.as_mut(), warmup, rounds) {
        Ok(timed) => timed,
        Err(e) => {
            drop(link);
            let child = crate::protocol::expect_done(links.ctl).err();
            return Err(format!("{}: {e} (child: {child:?})", kind.label()).into());
        }
    };
    let child =
        crate::protocol::expect_done(links.ctl).map_err(|e| format!("{}: {e}", kind.label()))?;
    Ok((ns, parent, child))
}

/// `warmup` untimed round trips, then `rounds` timed ones: their times in order and the
/// parent's side of the timed stretch.
pub fn time_round_trips<P: Pinger + ?Sized>(
    pinger: &mut P,
    warmup: u64,
    rounds: u64,
) -> Result<(Vec<u64>, Side)> {
    for seq in 0..warmup {
        pinger.round_trip(seq)?;
    }
    let mut ns = Vec::with_capacity(rounds as usize);
    let (before, start) = (Usage::now(), Instant::now());
    for seq in warmup..warmup + rounds {
        let t = Instant::now();
        pinger.round_trip(seq)?;
        ns.push(t.elapsed().as_nanos() as u64);
    }
    let side = Side {
        count: rounds,
        elapsed_ns: start.elapsed().as_nanos() as u64,
        usage: Usage::now().since(before),
    };
    Ok((ns, side))
}

/// The echoing side: `warmup + rounds` echoes, its side of the last `rounds`.
pub fn echo_all<E: Echoer + ?Sized>(echoer: &mut E, warmup: u64, rounds: u64) -> Result<Side> {
    for seq in 0..warmup {
        echoer.echo(seq)?;
    }
    let (before, start) = (Usage::now(), Instant::now());
    for seq in warmup..warmup + rounds {
        echoer.echo(seq)?;
    }
    Ok(Side {
        count: rounds,
        elapsed_ns: start.elapsed().as_nanos() as u64,
        usage: Usage::now().since(before),
    })
}

/// What two back-to-back clock reads cost (each timed round trip includes it), the median
/// of many.
pub fn clock_cost_ns() -> f64 {
    let mut ns: Vec<u64> = (0..10_001)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    ns[ns.len() / 2] as f64
}
