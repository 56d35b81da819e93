//! `pipeline`: frames from the parent (sender) to the child (receiver) over each transport
//! in turn, size by size, in one run.

use std::time::Duration;

use shmport::MessagePort;

use crate::frame::{self, FrameSink, FrameSource, Plan};
use crate::protocol::{FromChild, ToChild, Transport, expect_done, expect_ready};
use crate::report::{self, Spreads};
use crate::stats::Side;
use crate::{Options, Result, iceoryx, shmport_tx, socket};

/// Bytes in flight at most per transport (divided into frames, within the bounds below).
const BYTES_IN_FLIGHT: usize = 128 << 20;
const MIN_WINDOW: usize = 4;
const MAX_WINDOW: usize = 64;

/// How many frames may be in flight (sent, not yet consumed) for frames of `frame_len`.
pub fn window(frame_len: usize) -> u64 {
    (BYTES_IN_FLIGHT / frame_len).clamp(MIN_WINDOW, MAX_WINDOW) as u64
}

/// The credit window a transport runs with: every one but iceoryx2, whose subscriber queue
/// of `window` samples bounds it instead.
pub fn credits(transport: Transport, window: u64) -> Option<u64> {
    (transport != Transport::Iceoryx2).then_some(window)
}

/// One transport at one frame length.
#[derive(Clone)]
struct Measurement {
    transport: Transport,
    frame_len: usize,
    sender: Side,
    receiver: Side,
}

impl Measurement {
    /// Frames per second, as the receiver saw them arrive.
    fn frames_per_s(&self) -> f64 {
        self.receiver.per_second()
    }

    /// Decimal gigabytes per second.
    fn gbps(&self) -> f64 {
        self.frames_per_s() * self.frame_len as f64 / 1e9
    }
}

pub fn run(ctl: &MessagePort, opts: &Options) -> Result<()> {
    let listener = socket::Listener::bind()?;
    print_intro(opts);
    let mut spreads = Spreads::default();
    for run in 1..=opts.repeat {
        for &frame_len in &opts.sizes {
            let (rows, per_slice) = measure_sliced(ctl, &listener, frame_len, opts)?;
            print_table(run, opts.repeat, frame_len, &rows);
            print_ratios(run, frame_len, &rows, &per_slice, &mut spreads);
        }
    }
    if opts.repeat > 1 {
        spreads.print(opts.repeat);
    }
    Ok(())
}

/// Every transport at one frame length, in `opts.slices` slices: slice `s` measures the
/// transports in turn, starting `s` places further along the list, so that each transport
/// runs in each position and the memory bandwidth of a shared machine, which drifts over
/// seconds, weighs on all of them alike. Returns each transport's slices added up (in
/// table order) and each slice's rows.
fn measure_sliced(
    ctl: &MessagePort,
    listener: &socket::Listener,
    frame_len: usize,
    opts: &Options,
) -> Result<(Vec<Measurement>, Vec<Vec<Measurement>>)> {
    let n = opts.transports.len();
    let mut total: Vec<Option<Measurement>> = (0..n).map(|_| None).collect();
    let mut per_slice = Vec::with_capacity(opts.slices as usize);
    for slice in 0..opts.slices as usize {
        let mut rows: Vec<Option<Measurement>> = (0..n).map(|_| None).collect();
        for k in 0..n {
            let i = (slice + k) % n;
            let m = measure(ctl, listener, opts.transports[i], frame_len, opts)?;
            match &mut total[i] {
                Some(t) => {
                    t.sender.absorb(m.sender);
                    t.receiver.absorb(m.receiver);
                }
                none => *none = Some(m.clone()),
            }
            rows[i] = Some(m);
        }
        per_slice.push(rows.into_iter().flatten().collect());
    }
    Ok((total.into_iter().flatten().collect(), per_slice))
}

fn plan(opts: &Options, transport: Transport, frame_len: usize) -> Plan {
    Plan {
        warmup: if opts.quick {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(300)
        },
        timed: opts.timed / opts.slices,
        credits: credits(transport, window(frame_len)),
        clock_every: ((256 << 10) / frame_len.max(1) + 1) as u64,
    }
}

fn measure(
    ctl: &MessagePort,
    listener: &socket::Listener,
    transport: Transport,
    frame_len: usize,
    opts: &Options,
) -> Result<Measurement> {
    let plan = plan(opts, transport, frame_len);
    let service = iceoryx::service_name(frame_len);
    let cmd = ToChild::Receive {
        transport,
        frame_len: frame_len as u64,
        window: window(frame_len),
        busy_poll: opts.busy_poll,
        service: service.clone(),
        socket: listener.path().to_string_lossy().into_owned(),
    };
    let mut sink: Box<dyn FrameSink> = match transport {
        Transport::ShmportBuffer | Transport::ShmportPlain => {
            let ch = shmport_tx::data_channel(opts.busy_poll)?;
            ctl.post_message(&cmd, [ch.port2.into()])?;
            expect_ready(ctl)?;
            shmport_tx::sink(transport, ch.port1, frame_len)
        }
        Transport::Iceoryx2 => {
            let publishing = iceoryx::Publishing::create(&service, frame_len, window(frame_len))?;
            ctl.post_message(&cmd, [])?;
            expect_ready(ctl)?;
            publishing.connect()?
        }
        Transport::UnixSocket => {
            ctl.post_message(&cmd, [])?;
            expect_ready(ctl)?;
            listener.accept(frame_len)?
        }
    };
    let label = transport.label();
    let sender = match frame::send_frames(sink.as_mut(), &plan) {
        Ok(sender) => sender,
        Err(e) => {
            // Closing our end unblocks the child, which then says what it saw.
            drop(sink);
            let child = expect_done(ctl).err();
            return Err(format!("{label}: sending failed: {e} (child: {child:?})").into());
        }
    };
    // The sending end stays open until the child has checked the last frame.
    let receiver = expect_done(ctl).map_err(|e| format!("{label}: {e}"))?;
    drop(sink);
    Ok(Measurement {
        transport,
        frame_len,
        sender,
        receiver,
    })
}

/// The child's side of one measurement: set up, say ready, receive until the last frame.
pub fn receive(ctl: &MessagePort, cmd: ToChild, mut ports: Vec<MessagePort>) -> FromChild {
    let ToChild::Receive {
        transport,
        frame_len,
        window,
        busy_poll,
        service,
        socket,
    } = cmd
    else {
        return FromChild::Failed("not a Receive command".into());
    };
    let frame_len = frame_len as usize;
    let source: Result<Box<dyn FrameSource>> = match transport {
        Transport::ShmportBuffer | Transport::ShmportPlain => match ports.pop() {
            Some(port) => {
                port.set_wait_strategy(shmport_tx::wait_strategy(busy_poll));
                Ok(shmport_tx::source(transport, port))
            }
            None => Err("no data port in the transfer list".into()),
        },
        Transport::Iceoryx2 => iceoryx::Subscribing::open(&service, window),
        Transport::UnixSocket => socket::connect(&socket, frame_len),
    };
    let outcome = source.and_then(|mut source| {
        ctl.post_message(&FromChild::Ready, [])?;
        frame::receive_frames(source.as_mut(), credits(transport, window))
    });
    match outcome {
        Ok(side) => FromChild::Done(side),
        Err(e) => FromChild::Failed(e.to_string()),
    }
}

fn print_intro(opts: &Options) {
    crate::say!(
        "pipeline: the parent (sender) allocates a fresh frame, writes every byte and sends it;"
    );
    crate::say!("the child (receiver) checks every byte and the order, then drops it.");
    crate::say!(
        "{} s timed per transport and size, in {} slice(s) alternated between the transports, each after {} warm-up;",
        opts.timed.as_secs_f64(),
        opts.slices,
        if opts.quick { "50 ms" } else { "300 ms" },
    );
    crate::say!(
        "shmport ports {}; iceoryx2 subscriber busy-polls.",
        if opts.busy_poll {
            "busy-poll (--busy-poll)"
        } else {
            "adaptive (the default)"
        }
    );
    crate::say!(
        "Per frame: minor page faults (flt), context switches (csw), system calls (sys) of the \
         sender (snd) and receiver (rcv)."
    );
    crate::say!("Shared machines are noisy: read the same-run ratios, not the absolute figures.");
}

fn print_table(run: u32, runs: u32, frame_len: usize, rows: &[Measurement]) {
    let len = report::len(frame_len);
    let window = window(frame_len);
    crate::say!("\nrun {run}/{runs}, frames of {len} (at most {window} frames in flight)");
    crate::say!(
        "  {:<20} {:>10} {:>7} | {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7}",
        "transport",
        "frames/s",
        "GB/s",
        "snd flt",
        "rcv flt",
        "snd csw",
        "rcv csw",
        "snd sys",
        "rcv sys"
    );
    for m in rows {
        let (s, r) = (m.sender.per_unit(), m.receiver.per_unit());
        crate::say!(
            "  {:<20} {:>10} {:>7.2} | {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7}",
            m.transport.label(),
            report::rate(m.frames_per_s()),
            m.gbps(),
            report::per(s.minflt),
            report::per(r.minflt),
            report::per(s.csw),
            report::per(r.csw),
            report::per_opt(s.syscalls),
            report::per_opt(r.syscalls),
        );
    }
    for m in rows {
        print_result_line(run, m);
    }
}

fn print_result_line(run: u32, m: &Measurement) {
    let (s, r) = (m.sender.per_unit(), m.receiver.per_unit());
    crate::json::line(
        "RESULT",
        format!(
            "mode=pipeline run={run} transport={} size={} frames={} frames_per_s={:.1} \
         gbps={:.4} sender_minflt_per_frame={:.4} receiver_minflt_per_frame={:.4} \
         sender_csw_per_frame={:.4} receiver_csw_per_frame={:.4} \
         sender_syscalls_per_frame={} receiver_syscalls_per_frame={}",
            m.transport.key(),
            m.frame_len,
            m.receiver.count,
            m.frames_per_s(),
            m.gbps(),
            s.minflt,
            r.minflt,
            s.csw,
            r.csw,
            report::raw_opt(s.syscalls),
            report::raw_opt(r.syscalls),
        ),
    );
}

/// The GB/s of `transport` among `rows`.
fn gbps_of(rows: &[Measurement], transport: Transport) -> Option<f64> {
    rows.iter()
        .find(|m| m.transport == transport)
        .map(Measurement::gbps)
}

/// The two same-run ratios the buffers issue sets goals for, over the whole run and, when
/// the run was sliced, their spread over the slices.
fn print_ratios(
    run: u32,
    frame_len: usize,
    rows: &[Measurement],
    per_slice: &[Vec<Measurement>],
    spreads: &mut Spreads,
) {
    let len = report::len(frame_len);
    let ratios = [
        (
            "ArrayBuffer / iceoryx2",
            "arraybuffer_vs_iceoryx2",
            Transport::ShmportBuffer,
            Transport::Iceoryx2,
            "goal: at least 1x",
        ),
        (
            "Vec<u8> / Unix socket",
            "plain_vec_vs_unix_socket",
            Transport::ShmportPlain,
            Transport::UnixSocket,
            "goal: at least 1.5x at 1 MiB and 16 MiB",
        ),
    ];
    for (label, key, ours, theirs, target) in ratios {
        let ratio_of = |rows: &[Measurement]| Some(gbps_of(rows, ours)? / gbps_of(rows, theirs)?);
        let Some(ratio) = ratio_of(rows) else {
            continue;
        };
        let slices: Vec<f64> = per_slice.iter().filter_map(|r| ratio_of(r)).collect();
        let (lo, hi, median) = report::min_max_median(&slices);
        let spread = if slices.len() > 1 {
            format!("; per slice {lo:.2}x - {hi:.2}x, median {median:.2}x")
        } else {
            String::new()
        };
        crate::say!("  ratio {label}: {ratio:.2}x  ({target}{spread})");
        crate::json::line(
            "RATIO",
            format!(
                "mode=pipeline run={run} size={frame_len} ratio={key} value={ratio:.4} \
                 slices={} slice_min={:.4} slice_max={:.4}",
                slices.len(),
                lo,
                hi,
            ),
        );
        spreads.add(
            &format!("{label}, {len}"),
            &format!("ratio={key} size={frame_len}"),
            ratio,
        );
    }
}
