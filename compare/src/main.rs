//! shmport side by side with the libraries a user would otherwise pick, in the same run on
//! the same machine. See README.md.
//!
//! ```text
//! cargo run --release -p shmport-compare -- pipeline [--quick] [--sizes 4k,1m,16m] [--seconds S] [--repeat N] [--busy-poll] [--transports LIST]
//! cargo run --release -p shmport-compare -- transfer-latency [--quick] [--rounds N] [--repeat N] [--busy-poll]
//! cargo run --release -p shmport-compare -- small [--quick] [--size 64] [--rounds N] [--seconds S] [--repeat N] [--transports LIST]
//! cargo run --release -p shmport-compare -- fanout [--quick] [--messages M] [--subscribers 1,2,4] [--json]
//! ```
//!
//! `--busy-loops N` (pipeline, transfer-latency, small) runs N spinning processes beside
//! the comparison, for figures on a busy machine.
//!
//! The binary runs itself a second time as the child (`shmport::spawn`); the child knows it
//! is one by `shmport::BOOTSTRAP_ENV` and takes orders on the port it was handed.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod fanout;
mod frame;
mod iceoryx;
mod json;
mod latency;
mod load;
mod pipeline;
mod protocol;
mod report;
mod shmport_tx;
mod small;
mod socket;
mod stats;

use std::process::{Command, ExitCode};
use std::time::Duration;

use shmport::{MessageChannel, MessagePort};

use crate::protocol::{FromChild, ToChild, Transport};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "\
usage: shmport-compare pipeline [--quick] [--sizes 4k,1m,16m] [--seconds S] [--slices K] [--repeat N] [--busy-poll]
                                 [--transports shmport-arraybuffer,shmport-plain-vec,iceoryx2,unix-socket]
       shmport-compare transfer-latency [--quick] [--rounds N] [--repeat N] [--busy-poll]
       shmport-compare small [--quick] [--size 64] [--rounds N] [--seconds S] [--repeat N]
                              [--transports floor,shmport-busy-poll,...] (see README.md)
       shmport-compare fanout [--quick] [--messages M] [--subscribers 1,2,4] [--repeat N] [--shmport-only]
every mode: --json prints one JSON document on stdout (the tables go to stderr)
pipeline, transfer-latency, small: --busy-loops N runs N spinning processes beside the comparison";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pipeline,
    TransferLatency,
    Small,
}

impl Mode {
    fn key(self) -> &'static str {
        match self {
            Mode::Pipeline => "pipeline",
            Mode::TransferLatency => "transfer-latency",
            Mode::Small => "small",
        }
    }
}

/// The command line.
#[derive(Debug)]
pub struct Options {
    mode: Mode,
    pub quick: bool,
    /// Frame lengths of the pipeline.
    pub sizes: Vec<usize>,
    /// Transports of the pipeline, in table order.
    pub transports: Vec<Transport>,
    /// Timed stretch of each pipeline or small-message throughput measurement.
    pub timed: Duration,
    /// The pipeline's timed stretch of each transport, cut into this many slices that
    /// alternate between the transports (so a ratio compares the same seconds).
    pub slices: u32,
    /// Timed round trips of each transfer-latency kind or small-message transport.
    pub rounds: u64,
    /// Message length of the small-message comparison.
    pub size: usize,
    /// Transports of the small-message comparison, in table order.
    pub kinds: Vec<small::Kind>,
    pub repeat: u32,
    /// shmport ports busy-poll instead of the adaptive default.
    pub busy_poll: bool,
    /// Spinning processes run beside the comparison (`--busy-loops`).
    pub busy_loops: u32,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options> {
        let mode = match args.next().as_deref() {
            Some("pipeline") => Mode::Pipeline,
            Some("transfer-latency") => Mode::TransferLatency,
            Some("small") => Mode::Small,
            _ => return Err(USAGE.into()),
        };
        let (mut quick, mut busy_poll, mut repeat) = (false, false, 1);
        let (mut sizes, mut seconds, mut rounds, mut transports) = (None, None, None, None);
        let mut slices = None;
        let mut size = 64;
        let mut busy_loops = 0;
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--quick" => quick = true,
                "--busy-poll" => busy_poll = true,
                "--json" => json::enable(),
                "--size" => size = value()?.parse::<usize>()?,
                "--repeat" => repeat = value()?.parse::<u32>()?.max(1),
                "--sizes" => sizes = Some(parse_sizes(&value()?)?),
                "--transports" => transports = Some(value()?),
                "--seconds" => seconds = Some(value()?.parse::<f64>()?),
                "--slices" => slices = Some(value()?.parse::<u32>()?.max(1)),
                "--rounds" => rounds = Some(value()?.parse::<u64>()?.max(1)),
                "--busy-loops" => busy_loops = value()?.parse::<u32>()?,
                _ => return Err(format!("unknown option {arg}\n{USAGE}").into()),
            }
        }
        if mode == Mode::Small && !small::SIZES.contains(&size) {
            return Err(format!("--size {size} is not one of {:?}", small::SIZES).into());
        }
        let small = mode == Mode::Small;
        let default_seconds = match (small, quick) {
            (false, false) => 1.5,
            (false, true) => 0.25,
            (true, false) => 0.5,
            (true, true) => 0.1,
        };
        let default_rounds = match (small, quick) {
            (false, false) => 20_000,
            (false, true) => 2_000,
            (true, false) => 100_000,
            (true, true) => 10_000,
        };
        let pipeline_transports = match (small, &transports) {
            (false, Some(list)) => parse_transports(list)?,
            _ => Transport::ALL.to_vec(),
        };
        let kinds = match (small, &transports) {
            (true, Some(list)) => small::parse_kinds(list)?,
            _ => small::Kind::ROUND_TRIP.to_vec(),
        };
        Ok(Options {
            mode,
            quick,
            sizes: sizes.unwrap_or_else(|| vec![4 << 10, 1 << 20, 16 << 20]),
            transports: pipeline_transports,
            timed: Duration::try_from_secs_f64(seconds.unwrap_or(default_seconds))?,
            rounds: rounds.unwrap_or(default_rounds),
            slices: slices.unwrap_or(if quick { 1 } else { 4 }),
            size,
            kinds,
            repeat,
            busy_poll,
            busy_loops,
        })
    }
}

fn parse_sizes(list: &str) -> Result<Vec<usize>> {
    list.split(',')
        .map(|s| match report::parse_len(s) {
            Some(n) if n >= frame::MIN_FRAME => Ok(n),
            _ => Err(format!("{s:?} is not a frame length of at least 8 bytes").into()),
        })
        .collect()
}

fn parse_transports(list: &str) -> Result<Vec<Transport>> {
    let mut chosen: Vec<Transport> = list
        .split(',')
        .map(|key| {
            Transport::ALL
                .into_iter()
                .find(|t| t.key() == key.trim())
                .ok_or_else(|| format!("{key:?} is not a transport\n{USAGE}").into())
        })
        .collect::<Result<_>>()?;
    // Table order, whatever the order on the command line.
    chosen.sort_by_key(|t| Transport::ALL.iter().position(|a| a == t));
    chosen.dedup();
    Ok(chosen)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some(load::CHILD_ARG) {
        load::spin();
    }
    let outcome = if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        if first.as_deref() == Some(fanout::CHILD_ARG) {
            fanout::subscriber()
        } else {
            child()
        }
    } else if first.as_deref() == Some("fanout") {
        fanout::FanoutOptions::parse(args)
            .and_then(|opts| fanout::run(&opts))
            .map(|()| json::finish("fanout"))
    } else {
        Options::parse(std::env::args().skip(1)).and_then(|opts| parent(&opts))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmport-compare: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the child, runs the comparison, stops the child.
fn parent(opts: &Options) -> Result<()> {
    stats::calibrate();
    iceoryx::quiet();
    let MessageChannel {
        port1: ctl, port2, ..
    } = MessageChannel::new()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("child");
    // The cross-process floor of `small`: a page the child inherits (see small/floor.rs).
    let floor = match opts.mode {
        Mode::Small => Some(small::SharedLine::create()?),
        _ => None,
    };
    if let Some(floor) = &floor {
        floor.pass_to(&mut cmd);
    }
    let mut child = shmport::spawn(&mut cmd, port2)?;
    if let Some(floor) = &floor {
        floor.spawned()?;
    }
    let _busy_loops = load::BusyLoops::start(opts.busy_loops)?;
    say!(
        "shmport-compare: parent pid {} <-> child pid {}; {} CPUs, {} busy-loop processes beside; system calls {}",
        std::process::id(),
        child.id(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.busy_loops,
        if stats::counts_syscalls() {
            "counted (raw_syscalls:sys_enter perf counter)"
        } else {
            "not counted (no tracefs or no perf permission; see README.md)"
        }
    );
    let outcome = match opts.mode {
        Mode::Pipeline => pipeline::run(&ctl, opts),
        Mode::TransferLatency => latency::run(&ctl, opts),
        Mode::Small => match &floor {
            Some(floor) => small::run(&ctl, opts, floor),
            None => Err("no floor page was made".into()),
        },
    };
    if outcome.is_err() {
        // The child may be stuck in a transport's receive loop.
        let _ = child.kill();
    } else {
        let _ = ctl.post_message(&ToChild::Exit, []);
    }
    drop(ctl);
    child.wait()?;
    if outcome.is_ok() {
        json::finish(opts.mode.key());
    }
    outcome
}

/// Takes orders on the port the parent handed over until told to exit.
fn child() -> Result<()> {
    let ctl = shmport::parent_port()?;
    stats::calibrate();
    iceoryx::quiet();
    loop {
        let ev = match ctl.recv::<ToChild>() {
            Ok(ev) => ev,
            Err(shmport::RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let reply = match ev.data {
            cmd @ ToChild::Receive { .. } => pipeline::receive(&ctl, cmd, ev.ports),
            cmd @ ToChild::Echo { .. } => latency::echo(&ctl, cmd),
            ToChild::Small(order) => small::serve(&ctl, order, ev.ports),
            ToChild::Exit => return Ok(()),
        };
        post_reply(&ctl, &reply)?;
    }
}

fn post_reply(ctl: &MessagePort, reply: &FromChild) -> Result<()> {
    Ok(ctl.post_message(reply, [])?)
}
