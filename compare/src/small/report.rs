//! The `small` tables, `RESULT` lines and the ratios in a user's words.

use super::rtt::{self, Trips};
use super::tput::Flow;
use super::{Kind, pair};
use crate::json;
use crate::report::{self, Spreads};
use crate::{Options, say};

/// A same-run ratio: `a / b` of two transports' figures, said as
/// "`before`: 2.40x `after`".
struct Ratio {
    key: &'static str,
    a: Kind,
    b: Kind,
    before: &'static str,
    after: &'static str,
}

const fn ratio(
    key: &'static str,
    a: Kind,
    b: Kind,
    before: &'static str,
    after: &'static str,
) -> Ratio {
    Ratio {
        key,
        a,
        b,
        before,
        after,
    }
}

/// Round trips (p50 over p50: lower is better for the first one named).
const ROUND_TRIP_RATIOS: [Ratio; 7] = [
    ratio(
        "rtt_shmport_busy_poll_vs_floor",
        Kind::ShmportBusyPoll,
        Kind::Floor,
        "shmport busy-poll round trip",
        "the hardware floor (a cache line bounced between the two processes)",
    ),
    ratio(
        "rtt_rtrb_threads_vs_floor_threads",
        Kind::RtrbThreads,
        Kind::FloorThreads,
        "rtrb round trip between threads",
        "the floor between threads",
    ),
    ratio(
        "rtt_iceoryx2_poll_vs_shmport_busy_poll",
        Kind::Iceoryx2Poll,
        Kind::ShmportBusyPoll,
        "iceoryx2 busy-poll round trip",
        "shmport busy-poll's",
    ),
    ratio(
        "rtt_shmport_adaptive_vs_busy_poll",
        Kind::ShmportAdaptive,
        Kind::ShmportBusyPoll,
        "shmport default (adaptive) round trip",
        "its busy-poll round trip",
    ),
    ratio(
        "rtt_shmport_block_vs_unix_socket",
        Kind::ShmportBlock,
        Kind::UnixSocket,
        "shmport blocking round trip",
        "a Unix socket's",
    ),
    ratio(
        "rtt_iceoryx2_listener_vs_shmport_block",
        Kind::Iceoryx2Listener,
        Kind::ShmportBlock,
        "iceoryx2 listener (blocking) round trip",
        "shmport blocking's",
    ),
    ratio(
        "rtt_ipc_channel_vs_shmport_adaptive",
        Kind::IpcChannel,
        Kind::ShmportAdaptive,
        "ipc-channel round trip",
        "shmport default's",
    ),
];

/// Throughput (msgs/s over msgs/s: higher is better for the first one named).
const THROUGHPUT_RATIOS: [Ratio; 6] = [
    ratio(
        "tput_shmport_busy_poll_vs_rtrb_threads",
        Kind::ShmportBusyPoll,
        Kind::RtrbThreads,
        "shmport busy-poll throughput between processes",
        "rtrb's between threads",
    ),
    ratio(
        "tput_shmport_adaptive_vs_rtrb_threads",
        Kind::ShmportAdaptive,
        Kind::RtrbThreads,
        "shmport default throughput between processes",
        "rtrb's between threads",
    ),
    ratio(
        "tput_shmport_busy_poll_vs_crossbeam_threads",
        Kind::ShmportBusyPoll,
        Kind::CrossbeamThreads,
        "shmport busy-poll throughput between processes",
        "crossbeam-channel's between threads",
    ),
    ratio(
        "tput_shmport_busy_poll_vs_iceoryx2_poll",
        Kind::ShmportBusyPoll,
        Kind::Iceoryx2Poll,
        "shmport busy-poll throughput",
        "iceoryx2's (busy-poll)",
    ),
    ratio(
        "tput_shmport_adaptive_vs_unix_socket",
        Kind::ShmportAdaptive,
        Kind::UnixSocket,
        "shmport default throughput",
        "a Unix socket's",
    ),
    ratio(
        "tput_shmport_adaptive_vs_ipc_channel",
        Kind::ShmportAdaptive,
        Kind::IpcChannel,
        "shmport default throughput",
        "ipc-channel's",
    ),
];

pub fn intro(opts: &Options) {
    let (warmup, rounds) = rtt::rounds(Kind::ShmportBusyPoll, opts);
    say!(
        "small: {}-byte messages; round trips between the two processes (parent posts, child posts \
         the same bytes back), {rounds} timed after {warmup} warm-up ({} for the transports that \
         sleep in the kernel), each timed on its own (a clock read pair costs {:.0} ns, included);",
        opts.size,
        rtt::rounds(Kind::UnixSocket, opts).1,
        rtt::clock_cost_ns(),
    );
    say!(
        "one-way throughput parent -> child, {} s timed per transport, every byte written and checked. \
         Rows marked 'threads' run between two threads of the parent: the in-process ceilings.",
        opts.timed.as_secs_f64()
    );
    say!(
        "{} CPUs, load average {}. Shared machines are noisy: read the same-run ratios, not the absolute figures.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
}

fn floor_of(kind: Kind) -> Kind {
    if kind.in_process() {
        Kind::FloorThreads
    } else {
        Kind::Floor
    }
}

pub fn round_trips(run: u32, size: usize, rows: &[Trips], spreads: &mut Spreads) {
    let p50 = |k: Kind| rows.iter().find(|t| t.kind == k).map(Trips::p50);
    say!(
        "\n  round trip, {size} B              {:>10} {:>10} {:>10} {:>8} | {:>7} {:>7} | {:>7} {:>7}",
        "p50",
        "p99",
        "mean",
        "x floor",
        "par sys",
        "chl sys",
        "par csw",
        "chl csw"
    );
    for t in rows {
        let floor = p50(floor_of(t.kind));
        print_trip_row(t, floor);
    }
    if rows.iter().any(|t| t.interleaved) {
        say!(
            "  * measured in pairs (each floor with its spinning transport, the Unix socket with shmport blocking):\n    a pair's round trips alternate, {} at a time, over the same seconds (its system calls and switches are counted together)",
            pair::CHUNK
        );
    }
    for t in rows {
        trip_result_line(run, size, t);
    }
    print_ratios(run, size, &ROUND_TRIP_RATIOS, p50, spreads);
}

fn print_trip_row(t: &Trips, floor: Option<f64>) {
    let (p, c) = (t.parent.per_unit(), t.child.map(|c| c.per_unit()));
    let label = format!(
        "{}{}",
        t.kind.label(),
        if t.interleaved { " *" } else { "" }
    );
    let x_floor = floor.map_or("-".to_string(), |f| format!("{:.2}x", t.p50() / f));
    say!(
        "  {:<32} {:>10} {:>10} {:>10} {:>8} | {:>7} {:>7} | {:>7} {:>7}",
        label,
        report::nanos(t.p50()),
        report::nanos(t.percentile(0.99)),
        report::nanos(t.mean()),
        x_floor,
        report::per_opt(p.syscalls),
        report::per_opt(c.and_then(|c| c.syscalls)),
        report::per(p.csw),
        c.map_or("-".to_string(), |c| report::per(c.csw))
    );
}

fn trip_result_line(run: u32, size: usize, t: &Trips) {
    let (p, c) = (t.parent.per_unit(), t.child.map(|c| c.per_unit()));
    json::line(
        "RESULT",
        format!(
            "mode=small run={run} test=round-trip transport={} size={size} rounds={} \
             interleaved_with_floor={} p50_ns={:.0} p99_ns={:.0} mean_ns={:.1} \
             parent_syscalls_per_rt={} child_syscalls_per_rt={} parent_csw_per_rt={:.4} \
             child_csw_per_rt={}",
            t.kind.key(),
            t.sorted_ns.len(),
            t.interleaved,
            t.p50(),
            t.percentile(0.99),
            t.mean(),
            report::raw_opt(p.syscalls),
            report::raw_opt(c.and_then(|c| c.syscalls)),
            p.csw,
            report::raw_opt(c.map(|c| c.csw))
        ),
    );
}

pub fn throughputs(run: u32, size: usize, rows: &[Flow], spreads: &mut Spreads) {
    let rate = |k: Kind| rows.iter().find(|f| f.kind == k).map(Flow::msgs_per_s);
    say!(
        "\n  one-way throughput, {size} B       {:>10} {:>8} | {:>7} {:>7} | {:>7} {:>7}",
        "msgs/s",
        "ns/msg",
        "snd sys",
        "rcv sys",
        "snd csw",
        "rcv csw"
    );
    for f in rows {
        let (s, r) = (f.sender.per_unit(), f.receiver.per_unit());
        say!(
            "  {:<32} {:>10} {:>8.1} | {:>7} {:>7} | {:>7} {:>7}",
            f.kind.label(),
            report::rate(f.msgs_per_s()),
            1e9 / f.msgs_per_s(),
            report::per_opt(s.syscalls),
            report::per_opt(r.syscalls),
            report::per(s.csw),
            report::per(r.csw)
        );
    }
    for f in rows {
        let (s, r) = (f.sender.per_unit(), f.receiver.per_unit());
        json::line(
            "RESULT",
            format!(
                "mode=small run={run} test=throughput transport={} size={size} msgs={} msgs_per_s={:.0} ns_per_msg={:.2} \
             sender_syscalls_per_msg={} receiver_syscalls_per_msg={} sender_csw_per_msg={:.4} receiver_csw_per_msg={:.4}",
                f.kind.key(),
                f.receiver.count,
                f.msgs_per_s(),
                1e9 / f.msgs_per_s(),
                report::raw_opt(s.syscalls),
                report::raw_opt(r.syscalls),
                s.csw,
                r.csw
            ),
        );
    }
    print_ratios(run, size, &THROUGHPUT_RATIOS, rate, spreads);
}

fn print_ratios(
    run: u32,
    size: usize,
    ratios: &[Ratio],
    figure: impl Fn(Kind) -> Option<f64>,
    spreads: &mut Spreads,
) {
    say!("");
    for r in ratios {
        let (Some(a), Some(b)) = (figure(r.a), figure(r.b)) else {
            continue;
        };
        let value = a / b;
        say!("  {}: {value:.2}x {}", r.before, r.after);
        json::line(
            "RATIO",
            format!(
                "mode=small run={run} size={size} ratio={} value={value:.4}",
                r.key
            ),
        );
        spreads.add(
            &format!("{} / {}", r.a.label(), r.b.label()),
            &format!("ratio={} size={size}", r.key),
            value,
        );
    }
}
