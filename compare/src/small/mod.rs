//! `small`: small messages (64 bytes unless `--size` says otherwise), shmport beside what a
//! user would otherwise pick, in one run:
//!
//! - **round trip** between the two processes (the parent posts, the child posts the same
//!   bytes back; every round trip timed on its own): the cache-line floor, shmport with each
//!   wait strategy, iceoryx2 (busy-polling, and blocking on its listener), ipc-channel and a
//!   Unix socket; and, for reference, the floor, rtrb and crossbeam-channel between threads;
//! - **one-way throughput** from the parent to the child (every byte written and checked, as
//!   in `pipeline`): shmport, iceoryx2, ipc-channel, a Unix socket; and between two threads
//!   rtrb and crossbeam-channel, the in-process ceilings.
//!
//! Each transport lives in a file of its own; [`link`] sets them up.

mod floor;
mod ice;
mod ipc;
mod link;
mod pair;
mod report;
mod rtt;
mod shm;
mod sock;
mod spin;
mod threads;
mod tput;

use shmport::MessagePort;
use shmport::rkyv::{Archive, Deserialize, Serialize};

use crate::protocol::{FromChild, ToChild};
use crate::report::Spreads;
use crate::{Options, Result};

pub use floor::SharedLine;

/// The message lengths `--size` accepts: shmport, rtrb and crossbeam-channel carry a
/// `[u8; N]`, as a user with a fixed-size message would, and N is a compile-time constant.
pub const SIZES: [usize; 10] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A transport of the small-message comparison.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = shmport::rkyv)]
pub enum Kind {
    /// One cache line bounced between the two processes: the hardware floor.
    Floor,
    ShmportBusyPoll,
    ShmportAdaptive,
    ShmportBlock,
    /// iceoryx2 publish-subscribe, the receiver busy-polling `receive()`.
    Iceoryx2Poll,
    /// iceoryx2 publish-subscribe plus an event service, the receiver blocking on its
    /// `Listener`.
    Iceoryx2Listener,
    IpcChannel,
    UnixSocket,
    /// One cache line bounced between two threads.
    FloorThreads,
    RtrbThreads,
    CrossbeamThreads,
}

impl Kind {
    /// Round trips, in table order (each floor just before what is compared with it).
    pub const ROUND_TRIP: [Kind; 11] = [
        Kind::Floor,
        Kind::ShmportBusyPoll,
        Kind::ShmportAdaptive,
        Kind::ShmportBlock,
        Kind::Iceoryx2Poll,
        Kind::Iceoryx2Listener,
        Kind::IpcChannel,
        Kind::UnixSocket,
        Kind::FloorThreads,
        Kind::RtrbThreads,
        Kind::CrossbeamThreads,
    ];

    /// One-way throughput, in table order.
    pub const THROUGHPUT: [Kind; 8] = [
        Kind::ShmportBusyPoll,
        Kind::ShmportAdaptive,
        Kind::ShmportBlock,
        Kind::Iceoryx2Poll,
        Kind::IpcChannel,
        Kind::UnixSocket,
        Kind::RtrbThreads,
        Kind::CrossbeamThreads,
    ];

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Floor => "cache-line floor",
            Kind::ShmportBusyPoll => "shmport busy-poll",
            Kind::ShmportAdaptive => "shmport default (adaptive)",
            Kind::ShmportBlock => "shmport blocking (futex)",
            Kind::Iceoryx2Poll => "iceoryx2 busy-poll",
            Kind::Iceoryx2Listener => "iceoryx2 listener (blocking)",
            Kind::IpcChannel => "ipc-channel",
            Kind::UnixSocket => "Unix socket (blocking)",
            Kind::FloorThreads => "cache-line floor, threads",
            Kind::RtrbThreads => "rtrb, threads",
            Kind::CrossbeamThreads => "crossbeam-channel, threads",
        }
    }

    /// The name in `RESULT` lines and in `--transports`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::ShmportBusyPoll => "shmport-busy-poll",
            Kind::ShmportAdaptive => "shmport-adaptive",
            Kind::ShmportBlock => "shmport-block",
            Kind::Iceoryx2Poll => "iceoryx2-poll",
            Kind::Iceoryx2Listener => "iceoryx2-listener",
            Kind::IpcChannel => "ipc-channel",
            Kind::UnixSocket => "unix-socket",
            Kind::FloorThreads => "floor-threads",
            Kind::RtrbThreads => "rtrb-threads",
            Kind::CrossbeamThreads => "crossbeam-threads",
        }
    }

    /// Between two threads of the parent, not between the two processes.
    pub fn in_process(self) -> bool {
        matches!(
            self,
            Kind::FloorThreads | Kind::RtrbThreads | Kind::CrossbeamThreads
        )
    }

    /// Whether the receiver sleeps in the kernel rather than spinning: such round trips
    /// take tens of microseconds, so they get a fifth of the rounds.
    pub fn sleeps(self) -> bool {
        matches!(
            self,
            Kind::ShmportBlock | Kind::Iceoryx2Listener | Kind::IpcChannel | Kind::UnixSocket
        )
    }
}

/// Parses `--transports` of the `small` mode: keys of [`Kind`].
pub fn parse_kinds(list: &str) -> Result<Vec<Kind>> {
    let mut kinds: Vec<Kind> = list
        .split(',')
        .map(|key| {
            Kind::ROUND_TRIP
                .into_iter()
                .find(|k| k.key() == key.trim())
                .ok_or_else(|| format!("{key:?} is not a small-message transport").into())
        })
        .collect::<Result<_>>()?;
    // Table order (each floor before what it is compared with), whatever the command line says.
    kinds.sort_by_key(|k| Kind::ROUND_TRIP.iter().position(|a| a == k));
    kinds.dedup();
    Ok(kinds)
}

/// What is measured.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = shmport::rkyv)]
pub enum Test {
    /// Echo `warmup + rounds` messages, report the last `rounds`.
    RoundTrip { warmup: u64, rounds: u64 },
    /// Receive frames until the one flagged last (see `frame::receive_frames`).
    Throughput,
}

/// The parent's order for one small-message measurement, with what the child needs to
/// reach the transport: shmport's data port travels in the transfer list; `name` is the
/// iceoryx2 service prefix, the ipc-channel server's name or the Unix socket's path.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
#[rkyv(crate = shmport::rkyv)]
pub struct Order {
    pub kind: Kind,
    pub test: Test,
    pub size: u64,
    pub name: String,
    /// The transport whose round trips alternate with this one's (see `pair`): the
    /// cross-process floor, or the Unix socket for shmport's blocking receive.
    pub partner: Option<Kind>,
}

/// Runs the comparison `opts.repeat` times; `floor` is the memory shared with the child
/// for the cross-process floor.
pub fn run(ctl: &MessagePort, opts: &Options, floor: &SharedLine) -> Result<()> {
    let listener = crate::socket::Listener::bind()?;
    report::intro(opts);
    let mut spreads = Spreads::default();
    for run in 1..=opts.repeat {
        crate::say!("\nrun {run}/{}", opts.repeat);
        let links = link::Parent {
            ctl,
            floor,
            listener: &listener,
            size: opts.size,
        };
        let mut trips = Vec::new();
        for &kind in &opts.kinds {
            trips.extend(rtt::measure(&links, kind, opts)?);
        }
        report::round_trips(run, opts.size, &trips, &mut spreads);
        let flows = Kind::THROUGHPUT
            .iter()
            .filter(|k| opts.kinds.contains(k))
            .map(|&kind| tput::measure(&links, kind, opts))
            .collect::<Result<Vec<_>>>()?;
        report::throughputs(run, opts.size, &flows, &mut spreads);
    }
    if opts.repeat > 1 {
        spreads.print(opts.repeat);
    }
    Ok(())
}

/// The child's side of one measurement: set up, say ready, echo or receive, report.
pub fn serve(ctl: &MessagePort, order: Order, ports: Vec<MessagePort>) -> FromChild {
    let outcome = link::child(&order, ports).and_then(|mut link| {
        ctl.post_message(&FromChild::Ready, [])?;
        match order.test {
            Test::RoundTrip { warmup, rounds } => rtt::echo_all(link.as_mut(), warmup, rounds),
            Test::Throughput => crate::frame::receive_frames(link.as_mut(), None),
        }
    });
    match outcome {
        Ok(side) => FromChild::Done(side),
        Err(e) => FromChild::Failed(format!("{}: {e}", order.kind.label())),
    }
}

/// Sends `order` (with `ports` in the transfer list) and waits for the child to be ready.
fn order_child(ctl: &MessagePort, order: Order, ports: Vec<MessagePort>) -> Result<()> {
    ctl.post_message(
        &ToChild::Small(order),
        ports.into_iter().map(shmport::Transferable::from),
    )?;
    crate::protocol::expect_ready(ctl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_come_in_table_order_once_each() {
        let kinds = parse_kinds("rtrb-threads,floor,shmport-busy-poll,floor").unwrap();
        assert_eq!(
            kinds,
            [Kind::Floor, Kind::ShmportBusyPoll, Kind::RtrbThreads]
        );
        assert!(parse_kinds("carrier-pigeon").is_err());
        assert!(
            Kind::THROUGHPUT
                .iter()
                .all(|k| Kind::ROUND_TRIP.contains(k))
        );
    }
}
