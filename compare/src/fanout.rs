//! `fanout`: one publisher process, N subscriber processes, 64-byte messages each checked
//! in order by every subscriber on its library's blocking receive; shmport's
//! `BroadcastChannel` beside iceoryx2's publish-subscribe, same run.
//!
//! - shmport: the publisher `post_message`s a `[u64; 8]`; each subscriber `recv`s (spins
//!   briefly, then sleeps on the name's futex bell).
//! - iceoryx2: the publisher loans a 64-byte slice, fills it, sends it, and notifies an
//!   event service (iceoryx2's way to wake a blocked subscriber); each subscriber drains
//!   `receive()`, polls it for up to 50 µs, then blocks in `Listener::timed_wait`. Nothing
//!   may be lost: safe overflow off, `RetryUntilDelivered`, 4,096 samples per subscriber
//!   (shmport's 512 KiB ring holds about 5,950 such messages).
//!
//! Posts/s: messages over the publisher's time from its first post to its last.
//! Deliveries/s: N x messages over the time from the first post to the moment every
//! subscriber reported its last message. Sleeps/s: the subscribers' voluntary context
//! switches (`getrusage`) over their receiving stretch, summed. Publisher CPU per post: the
//! publishing thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) over the posts, per post, and
//! its share of the wall-clock time: with more processes than cores, a post rate that falls
//! while the CPU per post stays flat is the publisher waiting for a core, not a post costing
//! more.

use std::mem::MaybeUninit;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{BroadcastChannel, MessageChannel, MessagePort};

use crate::Result;

/// The child's first argument.
pub const CHILD_ARG: &str = "fanout-sub";

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = shmport::rkyv)]
enum Lib {
    Shmport,
    Iceoryx2,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = shmport::rkyv)]
struct Order {
    lib: Lib,
    name: String,
    messages: u64,
}

/// A subscriber's report: its receiving stretch, its voluntary context switches and its
/// CPU time.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy)]
#[rkyv(crate = shmport::rkyv)]
struct Report {
    nanos: u64,
    sleeps: u64,
    /// The receiving thread's CPU time over the same stretch.
    cpu_nanos: u64,
}

/// The message `seq`: every word derived from it, so a torn or stale one is caught.
fn message(seq: u64) -> [u64; 8] {
    std::array::from_fn(|i| seq ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn check(got: &[u64; 8], seq: u64) -> Result<()> {
    if *got != message(seq) {
        return Err(format!("message {seq} arrived as {got:?}").into());
    }
    Ok(())
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = MaybeUninit::<libc::timespec>::zeroed();
    // SAFETY: clock_gettime writes a whole timespec into the pointer it is given.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, ts.as_mut_ptr()) } == 0;
    // SAFETY: initialised by clock_gettime (or zeroed, which is a valid timespec).
    let ts = unsafe { ts.assume_init() };
    if ok {
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    } else {
        Duration::ZERO
    }
}

fn voluntary_switches() -> u64 {
    let mut ru = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } == 0;
    // SAFETY: initialised by getrusage (or zeroed, which is a valid rusage).
    let ru = unsafe { ru.assume_init() };
    if ok { ru.ru_nvcsw as u64 } else { 0 }
}

pub struct FanoutOptions {
    pub messages: u64,
    pub subscribers: Vec<usize>,
    /// Measure iceoryx2 too (`--shmport-only` leaves it out, for profiling).
    pub iceoryx2: bool,
    /// Whole tables to measure; past one, a summary of medians and spreads.
    pub repeat: u32,
}

impl FanoutOptions {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<FanoutOptions> {
        let mut opts = FanoutOptions {
            messages: 2_000_000,
            subscribers: vec![1, 2, 4],
            iceoryx2: true,
            repeat: 1,
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--messages" => opts.messages = value()?.parse::<u64>()?.max(1),
                "--subscribers" => {
                    opts.subscribers = value()?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<std::result::Result<_, _>>()?
                }
                "--quick" => opts.messages = 200_000,
                "--shmport-only" => opts.iceoryx2 = false,
                "--repeat" => opts.repeat = value()?.parse::<u32>()?.max(1),
                "--json" => crate::json::enable(),
                _ => return Err(format!("unknown fanout option {arg}").into()),
            }
        }
        Ok(opts)
    }
}

/// One measurement.
#[derive(Clone, Copy)]
struct Figures {
    posts_per_s: f64,
    deliveries_per_s: f64,
    sleeps_per_s: f64,
    /// The publishing thread's CPU time per post, and its share of the posting stretch.
    publisher_cpu_ns_per_post: f64,
    publisher_cpu_share: f64,
    /// The subscribers' CPU time per delivery (spinning included): with more processes
    /// than CPUs, what the publisher's share is left after.
    subscriber_cpu_ns_per_delivery: f64,
}

impl Figures {
    const NONE: Figures = Figures {
        posts_per_s: f64::NAN,
        deliveries_per_s: f64::NAN,
        sleeps_per_s: f64::NAN,
        publisher_cpu_ns_per_post: f64::NAN,
        publisher_cpu_share: f64::NAN,
        subscriber_cpu_ns_per_delivery: f64::NAN,
    };
}

pub fn run(opts: &FanoutOptions) -> Result<()> {
    let mut rounds = Vec::new();
    for round in 1..=opts.repeat {
        rounds.push(run_once(opts, round)?);
    }
    if rounds.len() > 1 {
        summarize(opts, &rounds);
    }
    Ok(())
}

/// Picks one figure out of a measurement.
type Pick = fn(&Figures) -> f64;

/// One table: per N, shmport's and iceoryx2's figures.
type Table = Vec<(usize, Figures, Figures)>;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    if v.iter().any(|x| x.is_nan()) {
        return "not measured".into();
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    format!("{lo:.2}-{hi:.2}")
}

fn summarize(opts: &FanoutOptions, rounds: &[Table]) {
    crate::say!(
        "over {} runs, median (min-max): posts/s and deliveries/s in millions",
        rounds.len()
    );
    for &n in &opts.subscribers {
        let pick = |f: &dyn Fn(&Figures, &Figures) -> f64| -> Vec<f64> {
            rounds
                .iter()
                .filter_map(|t| t.iter().find(|r| r.0 == n).map(|r| f(&r.1, &r.2)))
                .collect()
        };
        let sp = pick(&|s, _| s.posts_per_s / 1e6);
        let sd = pick(&|s, _| s.deliveries_per_s / 1e6);
        let ip = pick(&|_, i| i.posts_per_s / 1e6);
        let id = pick(&|_, i| i.deliveries_per_s / 1e6);
        let ratio = pick(&|s, i| s.deliveries_per_s / i.deliveries_per_s);
        crate::say!(
            "N={n}: shmport {:.2} ({}) / {:.2} ({}); iceoryx2 {:.2} ({}) / {:.2} ({}); deliveries ratio {:.2} ({})",
            median(sp.clone()),
            spread(&sp),
            median(sd.clone()),
            spread(&sd),
            median(ip.clone()),
            spread(&ip),
            median(id.clone()),
            spread(&id),
            median(ratio.clone()),
            spread(&ratio)
        );
    }
    // Per run, a figure at N=4 over the same figure at N=1, for shmport (lib 0) or
    // iceoryx2 (lib 1).
    let n4_over_n1 = |lib: usize, f: Pick| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|t| {
                let at = |n: usize| {
                    t.iter()
                        .find(|r| r.0 == n)
                        .map(|r| f(if lib == 0 { &r.1 } else { &r.2 }))
                };
                Some(at(4)? / at(1)?)
            })
            .collect()
    };
    let figures: [(&str, Pick); 3] = [
        ("post rate", |f| f.posts_per_s),
        ("publisher CPU per post", |f| f.publisher_cpu_ns_per_post),
        ("subscriber CPU per delivery", |f| {
            f.subscriber_cpu_ns_per_delivery
        }),
    ];
    for (what, f) in figures {
        let (s, i) = (n4_over_n1(0, f), n4_over_n1(1, f));
        if !s.is_empty() {
            crate::say!(
                "{what} N=4 / N=1 per run: shmport median {:.2}x ({}), iceoryx2 median {:.2}x ({})",
                median(s.clone()),
                spread(&s),
                median(i.clone()),
                spread(&i)
            );
        }
    }
}

fn run_once(opts: &FanoutOptions, round: u32) -> Result<Table> {
    crate::say!(
        "fanout: {} messages of 64 bytes per run, one publisher, N subscribers on blocking receive; {} CPUs",
        opts.messages,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    crate::say!(
        "{:>2} | {:>22} | {:>22} | {:>13} | {:>21} | {:>27} | {:>17}",
        "N",
        "shmport posts/deliv /s",
        "iceoryx2 posts/deliv /s",
        "deliv ratio",
        "sleeps/s shm / ice",
        "publisher CPU/post (share)",
        "sub CPU/delivery"
    );
    let mut by_n = Vec::new();
    let mut table = Vec::new();
    for &n in &opts.subscribers {
        let shm = measure(Lib::Shmport, n, opts.messages, round)?;
        let ice = if opts.iceoryx2 {
            measure(Lib::Iceoryx2, n, opts.messages, round)?
        } else {
            Figures::NONE
        };
        crate::say!(
            "{n:>2} | {:>9.2} M / {:>7.2} M | {:>9.2} M / {:>7.2} M | {:>13.2} | {:>9.0} / {:>9.0} | {:>4.0} ns ({:>3.0}%) / {:>4.0} ns ({:>3.0}%) | {:>4.0} / {:>4.0} ns",
            shm.posts_per_s / 1e6,
            shm.deliveries_per_s / 1e6,
            ice.posts_per_s / 1e6,
            ice.deliveries_per_s / 1e6,
            shm.deliveries_per_s / ice.deliveries_per_s,
            shm.sleeps_per_s,
            ice.sleeps_per_s,
            shm.publisher_cpu_ns_per_post,
            100.0 * shm.publisher_cpu_share,
            ice.publisher_cpu_ns_per_post,
            100.0 * ice.publisher_cpu_share,
            shm.subscriber_cpu_ns_per_delivery,
            ice.subscriber_cpu_ns_per_delivery,
        );
        crate::json::line(
            "RESULT",
            format!(
                "mode=fanout n={n} shmport_posts={:.0} shmport_deliveries={:.0} iceoryx2_posts={:.0} iceoryx2_deliveries={:.0} shmport_sleeps={:.0} iceoryx2_sleeps={:.0} shmport_publisher_cpu_ns_per_post={:.1} iceoryx2_publisher_cpu_ns_per_post={:.1} shmport_publisher_cpu_share={:.3} iceoryx2_publisher_cpu_share={:.3} shmport_subscriber_cpu_ns_per_delivery={:.1} iceoryx2_subscriber_cpu_ns_per_delivery={:.1}",
                shm.posts_per_s,
                shm.deliveries_per_s,
                ice.posts_per_s,
                ice.deliveries_per_s,
                shm.sleeps_per_s,
                ice.sleeps_per_s,
                shm.publisher_cpu_ns_per_post,
                ice.publisher_cpu_ns_per_post,
                shm.publisher_cpu_share,
                ice.publisher_cpu_share,
                shm.subscriber_cpu_ns_per_delivery,
                ice.subscriber_cpu_ns_per_delivery
            ),
        );
        by_n.push((n, shm.posts_per_s, ice.posts_per_s));
        table.push((n, shm, ice));
    }
    let rate = |n: usize, lib: usize| {
        by_n.iter()
            .find(|r| r.0 == n)
            .map(|r| if lib == 0 { r.1 } else { r.2 })
    };
    if let (Some(s1), Some(s4), Some(i1), Some(i4)) =
        (rate(1, 0), rate(4, 0), rate(1, 1), rate(4, 1))
    {
        let (s, i) = (s4 / s1, i4 / i1);
        crate::say!("post rate N=4 / N=1: shmport {s:.2}x, iceoryx2 {i:.2}x");
        let fields = format!("mode=fanout ratio=post_rate_n4_vs_n1 shmport={s:.4} iceoryx2={i:.4}");
        crate::json::line("RATIO", fields);
    }
    Ok(table)
}

fn measure(lib: Lib, n: usize, messages: u64, round: u32) -> Result<Figures> {
    let name = format!("fanout-{}-{round}-{n}-{lib:?}", std::process::id());
    let mut publisher = match lib {
        Lib::Shmport => Publisher::Shmport(Box::new(BroadcastChannel::new(&name)?)),
        Lib::Iceoryx2 => Publisher::Iceoryx2(Box::new(IcePublisher::create(&name, n)?)),
    };
    let mut kids: Vec<(Child, MessagePort)> = Vec::new();
    for _ in 0..n {
        let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(CHILD_ARG);
        let child = shmport::spawn(&mut cmd, port2)?;
        port1.post_message(
            &Order {
                lib,
                name: name.clone(),
                messages,
            },
            [],
        )?;
        kids.push((child, port1));
    }
    for (_, ctl) in &kids {
        ctl.recv::<u8>()?; // subscribed
    }
    publisher.connect(n)?;
    let (start, cpu) = (Instant::now(), thread_cpu_time());
    for seq in 0..messages {
        publisher.post(seq)?;
    }
    let (posted, posting_cpu) = (start.elapsed(), thread_cpu_time() - cpu);
    let (mut sleeps, mut subscriber_cpu) = (0u64, 0u64);
    let mut receiving = Duration::ZERO;
    for (_, ctl) in &kids {
        let r: Report = ctl.recv()?.data;
        sleeps += r.sleeps;
        subscriber_cpu += r.cpu_nanos;
        receiving = receiving.max(Duration::from_nanos(r.nanos));
    }
    let delivered = start.elapsed();
    drop(publisher);
    for (mut child, ctl) in kids {
        drop(ctl);
        child.wait()?;
    }
    Ok(Figures {
        posts_per_s: messages as f64 / posted.as_secs_f64(),
        deliveries_per_s: (n as u64 * messages) as f64 / delivered.as_secs_f64(),
        sleeps_per_s: sleeps as f64 / receiving.as_secs_f64(),
        publisher_cpu_ns_per_post: posting_cpu.as_nanos() as f64 / messages as f64,
        publisher_cpu_share: posting_cpu.as_secs_f64() / posted.as_secs_f64(),
        subscriber_cpu_ns_per_delivery: subscriber_cpu as f64 / (n as u64 * messages) as f64,
    })
}

enum Publisher {
    Shmport(Box<BroadcastChannel>),
    Iceoryx2(Box<IcePublisher>),
}

impl Publisher {
    fn connect(&mut self, n: usize) -> Result<()> {
        match self {
            Publisher::Shmport(bc) => {
                if bc.peers() != n {
                    return Err(format!("{} subscribers joined, not {n}", bc.peers()).into());
                }
                Ok(())
            }
            Publisher::Iceoryx2(p) => p.connect(),
        }
    }

    fn post(&mut self, seq: u64) -> Result<()> {
        match self {
            Publisher::Shmport(bc) => Ok(bc.post_message(&message(seq))?),
            Publisher::Iceoryx2(p) => p.post(seq),
        }
    }
}

type IceService =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;
type IceEvent = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;

fn ice_services(
    node: &Node<ipc::Service>,
    name: &str,
    n: usize,
    create: bool,
) -> Result<(IceService, IceEvent)> {
    let data = node
        .service_builder(&format!("{name}/data").as_str().try_into()?)
        .publish_subscribe::<[u8]>();
    let event = node
        .service_builder(&format!("{name}/event").as_str().try_into()?)
        .event();
    if create {
        let data = data
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(4096)
            .subscriber_max_borrowed_samples(1)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(n)
            .create()?;
        let event = event.max_listeners(n).max_notifiers(1).create()?;
        Ok((data, event))
    } else {
        Ok((data.open()?, event.open()?))
    }
}

struct IcePublisher {
    publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
    notifier: iceoryx2::port::notifier::Notifier<ipc::Service>,
    _services: (IceService, IceEvent),
    _node: Node<ipc::Service>,
}

impl IcePublisher {
    fn create(name: &str, n: usize) -> Result<IcePublisher> {
        let node = NodeBuilder::new().create::<ipc::Service>()?;
        let services = ice_services(&node, name, n, true)?;
        let publisher = services
            .0
            .publisher_builder()
            .initial_max_slice_len(64)
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()?;
        let notifier = services.1.notifier_builder().create()?;
        Ok(IcePublisher {
            publisher,
            notifier,
            _services: services,
            _node: node,
        })
    }

    fn connect(&mut self) -> Result<()> {
        use iceoryx2::port::update_connections::UpdateConnections;
        self.publisher.update_connections()?;
        Ok(())
    }

    fn post(&mut self, seq: u64) -> Result<()> {
        let words = message(seq);
        let mut sample = self.publisher.loan_slice_uninit(64)?;
        for (chunk, w) in sample.payload_mut().chunks_exact_mut(8).zip(words) {
            for (b, v) in chunk.iter_mut().zip(w.to_le_bytes()) {
                *b = MaybeUninit::new(v);
            }
        }
        // SAFETY: the loop above wrote all 64 bytes of the payload.
        let sample = unsafe { sample.assume_init() };
        sample.send()?;
        self.notifier.notify()?;
        Ok(())
    }
}

/// A subscriber process: takes its order, subscribes, says so, receives and checks every
/// message, reports.
pub fn subscriber() -> Result<()> {
    crate::iceoryx::quiet();
    let ctl = shmport::parent_port()?;
    let order: Order = ctl.recv()?.data;
    let report = match order.lib {
        Lib::Shmport => shmport_subscriber(&ctl, &order)?,
        Lib::Iceoryx2 => ice_subscriber(&ctl, &order)?,
    };
    ctl.post_message(&report, [])?;
    let _ = ctl.recv::<u8>(); // until the parent hangs up
    Ok(())
}

fn shmport_subscriber(ctl: &MessagePort, order: &Order) -> Result<Report> {
    let mut bc = BroadcastChannel::new(&order.name)?;
    ctl.post_message(&0u8, [])?;
    let first = bc.recv::<[u64; 8]>()?.data;
    check(&first, 0)?;
    let (start, sleeps, cpu) = (Instant::now(), voluntary_switches(), thread_cpu_time());
    for seq in 1..order.messages {
        check(&bc.recv::<[u64; 8]>()?.data, seq)?;
    }
    Ok(Report {
        nanos: start.elapsed().as_nanos() as u64,
        sleeps: voluntary_switches() - sleeps,
        cpu_nanos: (thread_cpu_time() - cpu).as_nanos() as u64,
    })
}

fn ice_subscriber(ctl: &MessagePort, order: &Order) -> Result<Report> {
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let (data, event) = ice_services(&node, &order.name, 0, false)?;
    let subscriber = data.subscriber_builder().buffer_size(4096).create()?;
    let listener = event.listener_builder().create()?;
    ctl.post_message(&0u8, [])?;
    let mut next = 0u64;
    let mut start = (Instant::now(), 0u64, Duration::ZERO);
    while next < order.messages {
        if let Some(sample) = subscriber.receive()? {
            let bytes = sample.payload();
            let mut got = [0u64; 8];
            for (w, chunk) in got.iter_mut().zip(bytes.chunks_exact(8)) {
                *w = u64::from_le_bytes(chunk.try_into()?);
            }
            check(&got, next)?;
            if next == 0 {
                start = (Instant::now(), voluntary_switches(), thread_cpu_time());
            }
            next += 1;
            continue;
        }
        let spin_until = Instant::now() + Duration::from_micros(50);
        let mut found = false;
        while Instant::now() < spin_until {
            if subscriber.has_samples()? {
                found = true;
                break;
            }
            std::hint::spin_loop();
        }
        if !found {
            listener.timed_wait(|_| {}, Duration::from_millis(50))?;
        }
    }
    Ok(Report {
        nanos: start.0.elapsed().as_nanos() as u64,
        sleeps: voluntary_switches() - start.1,
        cpu_nanos: (thread_cpu_time() - start.2).as_nanos() as u64,
    })
}
