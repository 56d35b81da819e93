//! `transfer-latency`: one-way time (round trip / 2) of a plain 64-byte message, a 4 KiB
//! `ArrayBuffer` and a 64 MiB `ArrayBuffer` between the two processes. The child posts each
//! message straight back; a buffer goes back in the transfer list, so the same buffer moves
//! to and fro and no byte of it is copied.

use std::time::Instant;

use shmport::MessagePort;

use crate::protocol::{Carried, FromChild, ToChild, expect_done};
use crate::report::{self, Spreads};
use crate::stats::{Side, Usage};
use crate::{Options, Result, shmport_tx};

const KINDS: [Carried; 3] = [
    Carried::Plain64,
    Carried::Buffer(4 << 10),
    Carried::Buffer(64 << 20),
];

/// One kind of message: one-way times and what a round trip cost each side.
struct Row {
    carried: Carried,
    /// Round trip / 2, sorted.
    one_way_ns: Vec<f64>,
    parent: Side,
    child: Side,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.one_way_ns.len() - 1) as f64 * p).round() as usize;
        self.one_way_ns[i]
    }

    fn p50(&self) -> f64 {
        self.percentile(0.5)
    }
}

pub fn run(ctl: &MessagePort, opts: &Options) -> Result<()> {
    ctl.set_wait_strategy(shmport_tx::wait_strategy(opts.busy_poll));
    print_intro(opts);
    let mut spreads = Spreads::default();
    for run in 1..=opts.repeat {
        let rows = KINDS
            .iter()
            .map(|&carried| measure(ctl, carried, opts))
            .collect::<Result<Vec<_>>>()?;
        print_table(run, opts.repeat, &rows);
        print_ratios(run, &rows, &mut spreads);
    }
    if opts.repeat > 1 {
        spreads.print(opts.repeat);
    }
    Ok(())
}

fn measure(ctl: &MessagePort, carried: Carried, opts: &Options) -> Result<Row> {
    let (warmup, rounds) = (opts.rounds / 10 + 1, opts.rounds);
    ctl.post_message(
        &ToChild::Echo {
            carried,
            warmup,
            rounds,
            busy_poll: opts.busy_poll,
        },
        [],
    )?;
    let mut trip = RoundTrip::new(carried)?;
    for _ in 0..warmup {
        trip.once(ctl)?;
    }
    let mut rtt_ns = Vec::with_capacity(rounds as usize);
    let (before, start) = (Usage::now(), Instant::now());
    for _ in 0..rounds {
        rtt_ns.push(trip.once(ctl)?);
    }
    let parent = Side {
        count: rounds,
        elapsed_ns: start.elapsed().as_nanos() as u64,
        usage: Usage::now().since(before),
    };
    let child = expect_done(ctl)?;
    let mut one_way_ns: Vec<f64> = rtt_ns.iter().map(|&ns| ns as f64 / 2.0).collect();
    one_way_ns.sort_by(f64::total_cmp);
    Ok(Row {
        carried,
        one_way_ns,
        parent,
        child,
    })
}

/// The parent's half of a round trip: what it sends and gets back.
enum RoundTrip {
    Plain([u8; 64], u64),
    Buffer(Option<shmport::ArrayBuffer>, u64),
}

impl RoundTrip {
    fn new(carried: Carried) -> Result<RoundTrip> {
        Ok(match carried {
            Carried::Plain64 => RoundTrip::Plain([0; 64], 0),
            Carried::Buffer(len) => {
                RoundTrip::Buffer(Some(shmport_tx::fresh_frame(len as usize)?), 0)
            }
        })
    }

    /// One round trip; its time in nanoseconds.
    fn once(&mut self, ctl: &MessagePort) -> Result<u64> {
        match self {
            RoundTrip::Plain(msg, n) => {
                *n += 1;
                msg[..8].copy_from_slice(&n.to_le_bytes());
                let start = Instant::now();
                ctl.post_message(msg, [])?;
                let back = ctl.recv::<[u8; 64]>()?.data;
                let ns = start.elapsed().as_nanos() as u64;
                if back != *msg {
                    return Err("the 64-byte message came back changed".into());
                }
                Ok(ns)
            }
            RoundTrip::Buffer(slot, n) => {
                *n += 1;
                let mut buf = slot.take().ok_or("the buffer did not come back")?;
                let len = buf.len();
                buf[0] = *n as u8;
                let start = Instant::now();
                ctl.post_message(n, [buf.into()])?;
                let mut ev = ctl.recv::<u64>()?;
                let ns = start.elapsed().as_nanos() as u64;
                let back = ev.buffers.pop().ok_or("a reply without its buffer")?;
                if ev.data != *n || back.len() != len || back[0] != *n as u8 {
                    return Err("the buffer came back changed".into());
                }
                *slot = Some(back);
                Ok(ns)
            }
        }
    }
}

/// The child's side: echo `warmup + rounds` messages, report the last `rounds`.
pub fn echo(ctl: &MessagePort, cmd: ToChild) -> FromChild {
    let ToChild::Echo {
        carried,
        warmup,
        rounds,
        busy_poll,
    } = cmd
    else {
        return FromChild::Failed("not an Echo command".into());
    };
    ctl.set_wait_strategy(shmport_tx::wait_strategy(busy_poll));
    let once = || -> Result<()> {
        match carried {
            Carried::Plain64 => {
                let msg = ctl.recv::<[u8; 64]>()?.data;
                ctl.post_message(&msg, [])?;
            }
            Carried::Buffer(_) => {
                let mut ev = ctl.recv::<u64>()?;
                let buf = ev.buffers.pop().ok_or("a message without its buffer")?;
                ctl.post_message(&ev.data, [buf.into()])?;
            }
        }
        Ok(())
    };
    let outcome = (|| -> Result<Side> {
        for _ in 0..warmup {
            once()?;
        }
        let (before, start) = (Usage::now(), Instant::now());
        for _ in 0..rounds {
            once()?;
        }
        Ok(Side {
            count: rounds,
            elapsed_ns: start.elapsed().as_nanos() as u64,
            usage: Usage::now().since(before),
        })
    })();
    match outcome {
        Ok(side) => FromChild::Done(side),
        Err(e) => FromChild::Failed(e.to_string()),
    }
}

fn label(carried: Carried) -> String {
    match carried {
        Carried::Plain64 => "plain 64-byte message".to_string(),
        Carried::Buffer(len) => format!("ArrayBuffer {}", report::len(len as usize)),
    }
}

fn key(carried: Carried) -> String {
    match carried {
        Carried::Plain64 => "plain-64b".to_string(),
        Carried::Buffer(len) => format!("arraybuffer-{len}"),
    }
}

fn print_intro(opts: &Options) {
    crate::say!(
        "transfer-latency: one-way = round trip / 2 over {} round trips per kind, after {} warm-up;",
        opts.rounds,
        opts.rounds / 10 + 1
    );
    crate::say!(
        "a buffer moves in the transfer list and comes back the same way; ports {}.",
        if opts.busy_poll {
            "busy-poll (--busy-poll)"
        } else {
            "adaptive (the default)"
        }
    );
    crate::say!("Per round trip: minor page faults, context switches, system calls of each side.");
    crate::say!("Shared machines are noisy: read the same-run ratios, not the absolute figures.");
}

fn print_table(run: u32, runs: u32, rows: &[Row]) {
    crate::say!("\nrun {run}/{runs}");
    crate::say!(
        "  {:<22} {:>10} {:>10} | {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7}",
        "message",
        "one-way p50",
        "p99",
        "par flt",
        "chl flt",
        "par csw",
        "chl csw",
        "par sys",
        "chl sys"
    );
    for row in rows {
        let (p, c) = (row.parent.per_unit(), row.child.per_unit());
        crate::say!(
            "  {:<22} {:>11} {:>10} | {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7}",
            label(row.carried),
            report::nanos(row.p50()),
            report::nanos(row.percentile(0.99)),
            report::per(p.minflt),
            report::per(c.minflt),
            report::per(p.csw),
            report::per(c.csw),
            report::per_opt(p.syscalls),
            report::per_opt(c.syscalls),
        );
    }
    for row in rows {
        let (p, c) = (row.parent.per_unit(), row.child.per_unit());
        crate::json::line(
            "RESULT",
            format!(
                "mode=transfer-latency run={run} kind={} rounds={} oneway_p50_ns={:.0} \
             oneway_p99_ns={:.0} parent_minflt_per_rt={:.4} child_minflt_per_rt={:.4} \
             parent_csw_per_rt={:.4} child_csw_per_rt={:.4} parent_syscalls_per_rt={} \
             child_syscalls_per_rt={}",
                key(row.carried),
                row.parent.count,
                row.p50(),
                row.percentile(0.99),
                p.minflt,
                c.minflt,
                p.csw,
                c.csw,
                report::raw_opt(p.syscalls),
                report::raw_opt(c.syscalls),
            ),
        );
    }
}

/// The ratios SPEC P8 (4 KiB buffer against a 64-byte message) and P4 (64 MiB against
/// 4 KiB) set targets for.
fn print_ratios(run: u32, rows: &[Row], spreads: &mut Spreads) {
    let p50 = |c: Carried| rows.iter().find(|r| r.carried == c).map(Row::p50);
    let ratios = [
        (
            "4 KiB ArrayBuffer / 64-byte message",
            "buffer_4k_vs_plain_64b",
            KINDS[1],
            KINDS[0],
            "goal: at most 3x",
        ),
        (
            "64 MiB ArrayBuffer / 4 KiB ArrayBuffer",
            "buffer_64m_vs_buffer_4k",
            KINDS[2],
            KINDS[1],
            "goal: at most 2x",
        ),
    ];
    for (label, key, a, b, target) in ratios {
        let (Some(a), Some(b)) = (p50(a), p50(b)) else {
            continue;
        };
        let ratio = a / b;
        crate::say!("  ratio {label} (one-way p50): {ratio:.2}x  ({target})");
        crate::json::line(
            "RATIO",
            format!("mode=transfer-latency run={run} ratio={key} value={ratio:.4}"),
        );
        spreads.add(label, &format!("ratio={key}"), ratio);
    }
}
