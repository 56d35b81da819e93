//! One channel's pump: the thread that owns the bridge-side port and moves frames between
//! it and Zenoh, with sequence numbers and credit. Here: the channel's keys, what the
//! Zenoh callbacks share with it, and its loop; what comes from the peer is
//! `pump/inbound.rs`, what goes to it `pump/outbound.rs`.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use shmport::MessagePort;
use zenoh::Wait;
use zenoh::bytes::{ZBytes, ZBytesWriter};
use zenoh::matching::MatchingListener;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;

use crate::frame;
use crate::{BridgeError, Core};

mod answer;
mod inbound;
mod outbound;

use answer::AnswerWatch;
use inbound::{Assembly, Ready};
use outbound::Outgoing;

/// The most body bytes one frame carries.
pub(crate) const CHUNK: usize = 2 << 20;

/// A sample is sent when this many frame bytes are batched.
const BATCH: usize = 64 << 10;

/// The bytes a channel's inbox may hold before the peer is known to ignore its credit.
fn inbox_limit(window_bytes: u64) -> usize {
    usize::try_from(window_bytes.saturating_mul(2)).unwrap_or(usize::MAX) + (4 << 20)
}

/// A random 64-bit number (channel and bridge ids): std's per-process random hash keys
/// over a counter.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one((n, std::process::id()))
}

/// What the Zenoh callbacks share with the pump.
pub(crate) struct Shared {
    inbox: Mutex<Inbox>,
    limit: usize,
    /// A wake-up is queued on `bell` and not yet taken.
    notified: AtomicBool,
    /// The pump thread's doorbell: a byte written here ends its wait.
    bell: UnixStream,
    matched: AtomicBool,
    peer_gone: AtomicBool,
    /// The bridge's last sample: which channel's (`Core::last_sample`).
    last_sample: Arc<AtomicUsize>,
    /// The channel's state while its pump runs. The pump thread works on it, then waits
    /// without holding it; a Zenoh callback that finds it free handles its sample on it
    /// at once (no hand-off to the pump thread), else queues the sample in `inbox`.
    pump: Mutex<Option<Pump>>,
}

#[derive(Default)]
struct Inbox {
    samples: VecDeque<ZBytes>,
    bytes: usize,
    overflow: bool,
}

impl Shared {
    fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            // Full (a wake-up is queued already) or gone (the pump has ended): nothing to do.
            let _ = (&self.bell).write(&[0]);
        }
    }

    /// A sample from the peer: handled on the calling (Zenoh) thread when the pump thread
    /// is not working on the channel and nothing queued waits before it, else queued for
    /// the pump thread.
    fn on_sample(&self, payload: ZBytes) {
        // Whether the bridge's last sample was this channel's too: a callback watches for
        // an answer only then (see `pump/answer.rs`).
        let me = std::ptr::from_ref(self) as usize;
        let alone = self.last_sample.swap(me, Ordering::Relaxed) == me;
        if let Ok(mut guard) = self.pump.try_lock() {
            if let Some(direct) = guard.as_mut().and_then(|p| p.try_direct(&payload)) {
                // When the pump thread has work from this sample, it is woken for it at
                // once, and no answer is watched for here (the thread would wait for it).
                let watch = !direct.wake && direct.delivered_whole && alone;
                let wake = direct.wake
                    || (watch && guard.as_mut().is_some_and(|p| p.answer_from_callback()));
                drop(guard);
                if wake {
                    self.wake();
                }
                return;
            }
        }
        self.push(payload);
    }

    fn inbox_empty(&self) -> bool {
        let inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        inbox.samples.is_empty() && !inbox.overflow
    }

    fn push(&self, payload: ZBytes) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if inbox.overflow {
            return;
        }
        inbox.bytes = inbox.bytes.saturating_add(payload.len());
        if inbox.bytes > self.limit {
            inbox.overflow = true;
            inbox.samples.clear();
        } else {
            inbox.samples.push_back(payload);
        }
        drop(inbox);
        self.wake();
    }

    pub(crate) fn peer_gone(&self) {
        self.peer_gone.store(true, Ordering::Release);
        self.wake();
    }
}

/// A channel end whose Zenoh keys are declared, before its pump runs: declared first so
/// that the peer's frames have somewhere to go as soon as it knows the channel.
pub(crate) struct End {
    channel: u64,
    shared: Arc<Shared>,
    bell_rx: UnixStream,
    publisher: Publisher<'static>,
    subscriber: Subscriber<()>,
    matching: MatchingListener<()>,
}

impl End {
    /// Declares the keys of `channel`'s end: `origin` is the end that chose the id.
    pub(crate) fn declare(core: &Core, channel: u64, origin: bool) -> Result<End, BridgeError> {
        let (bell, bell_rx) = UnixStream::pair()
            .and_then(|(a, b)| {
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                Ok((a, b))
            })
            .map_err(BridgeError::Io)?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            limit: inbox_limit(core.window_bytes),
            notified: AtomicBool::new(false),
            bell,
            matched: AtomicBool::new(false),
            peer_gone: AtomicBool::new(false),
            last_sample: core.last_sample.clone(),
            pump: Mutex::new(None),
        });
        let zerr = BridgeError::Zenoh;
        let s = shared.clone();
        let subscriber = core
            .session
            .declare_subscriber(core.channel_key(channel, origin))
            .callback(move |sample| s.on_sample(sample.payload().clone()))
            .wait()
            .map_err(zerr)?;
        let publisher = core
            .session
            .declare_publisher(core.channel_key(channel, !origin))
            .congestion_control(CongestionControl::Block)
            // The pump batches frames itself: no waiting in Zenoh's batcher.
            .express(true)
            .wait()
            .map_err(zerr)?;
        let s = shared.clone();
        let matching = publisher
            .matching_listener()
            .callback(move |status| {
                s.matched.store(status.matching(), Ordering::Release);
                s.wake();
            })
            .wait()
            .map_err(zerr)?;
        if publisher
            .matching_status()
            .wait()
            .is_ok_and(|m| m.matching())
        {
            shared.matched.store(true, Ordering::Release);
        }
        Ok(End {
            channel,
            shared,
            bell_rx,
            publisher,
            subscriber,
            matching,
        })
    }

    /// Gives up on a channel whose handshake was answered: tells the peer's end, which
    /// may already have handed out its port, that nothing will come (a `Close` as the
    /// first frame), so its port sees `Disconnected` instead of waiting forever.
    pub(crate) fn abandon(self) {
        let mut out = Vec::new();
        frame::put_close(&mut out, 0);
        let _ = self.publisher.put(out).wait();
    }

    /// Starts the pump of this end: it owns `port` and talks to `peer`'s bridge.
    pub(crate) fn start(self, core: &Arc<Core>, peer: String, port: MessagePort) {
        core.peers.watch(&peer, &self.shared);
        *core.pumps.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let core = core.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("shmport-zenoh {:016x}", self.channel))
            .spawn({
                let core = core.clone();
                move || {
                    run(core.clone(), self, peer, port);
                    let mut n = core.pumps.lock().unwrap_or_else(|e| e.into_inner());
                    *n -= 1;
                    core.pumps_done.notify_all();
                }
            });
        if spawned.is_err() {
            // No thread: the channel ends (both ports were moved into the closure and
            // dropped with it, so the local side sees `Disconnected`).
            let mut n = core.pumps.lock().unwrap_or_else(|e| e.into_inner());
            *n -= 1;
            core.pumps_done.notify_all();
        }
    }
}

/// Why the peer's direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It sent `Close`.
    Closed,
    /// Its bridge went (liveliness), or sending to it failed.
    Gone,
    /// It broke the protocol (a bad frame, a gap, a duplicate, credit exceeded).
    Violation,
}

struct Pump {
    core: Arc<Core>,
    shared: Arc<Shared>,
    publisher: Publisher<'static>,
    _subscriber: Subscriber<()>,
    _matching: MatchingListener<()>,
    peer: String,
    /// The bridge-side port, `None` once the local user closed.
    port: Option<MessagePort>,
    /// The port's readiness descriptor could not be had: the pump polls it.
    no_fd: bool,
    out: Vec<u8>,
    /// The last message read from the port had a large archive: read the next one as
    /// an owned copy (`try_recv_raw`) rather than lent (`try_recv_raw_with`).
    last_was_large: bool,
    /// Owned bytes appended to the batch without a copy (a large archive), with the
    /// bytes of `out` before them; `None` while the batch is all in `out`.
    out_parts: Option<ZBytesWriter>,
    /// The bytes in `out_parts`.
    out_parts_len: usize,
    /// The peer granted more credit since the pump thread last looked.
    credit_arrived: bool,
    /// A Zenoh callback just posted into the local port: its user may answer at once, so
    /// the pump thread watches the port for a moment instead of sleeping.
    expect_answer: bool,
    answer_watch: AnswerWatch,
    // Outbound direction: what we sent, what the peer granted.
    out_seq: u64,
    sent_msgs: u64,
    sent_bytes: u64,
    granted_msgs: u64,
    granted_bytes: u64,
    outgoing: Option<Outgoing>,
    local_done: bool,
    // Inbound direction: what arrived, what we granted, what left the bridge.
    in_seq: u64,
    recv_msgs: u64,
    recv_bytes: u64,
    announced_msgs: u64,
    announced_bytes: u64,
    returned_msgs: u64,
    returned_bytes: u64,
    assembling: Option<Assembly>,
    assembly_held: u64,
    pending: VecDeque<Ready>,
    ended: Option<Ended>,
}

/// What the pump thread waits for after a step.
struct Next {
    /// The bridge-side port becoming readable (the pump would read it).
    port: bool,
    /// Poll instead of sleeping: a message waits for room in the local ring, or the
    /// port's readiness cannot be watched.
    poll: bool,
}

/// How long the pump thread (or the Zenoh callback, `pump/answer.rs`) watches the port for
/// an answer to a message just delivered.
const WATCH: Duration = Duration::from_micros(50);

/// Looks with `look` until it finds something, for [`WATCH`] at most, yielding the core
/// between looks (no other system call): the watch of the pump thread and of a Zenoh
/// callback (`pump/answer.rs`) for an answer to a message just delivered.
fn watch<R>(mut look: impl FnMut() -> Option<R>) -> Option<R> {
    let until = std::time::Instant::now() + WATCH;
    loop {
        if let Some(found) = look() {
            return Some(found);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Watches the bridge-side port for up to [`WATCH`]: true when a message or a queued
/// frame arrived meanwhile.
fn watch_for_answer(shared: &Shared) -> bool {
    watch(|| {
        let news = match shared.pump.try_lock() {
            Ok(p) => p
                .as_ref()
                .is_none_or(|p| p.port.as_ref().is_some_and(|port| !port.is_empty())),
            // A callback is working on the channel: look again after it.
            Err(_) => false,
        };
        (news || shared.notified.load(Ordering::Acquire)).then_some(())
    })
    .is_some()
}

/// The pump thread of one channel end: steps the pump, then waits (without holding it)
/// for news: a frame queued by a Zenoh callback, the bridge-side port readable.
fn run(core: Arc<Core>, end: End, peer: String, port: MessagePort) {
    let End {
        shared,
        bell_rx,
        publisher,
        subscriber,
        matching,
        ..
    } = end;
    let port_fd: Option<OwnedFd> = port
        .readiness_fd()
        .and_then(|fd| fd.try_clone_to_owned())
        .ok();
    let pump = Pump::new(
        core,
        shared.clone(),
        publisher,
        subscriber,
        matching,
        peer,
        port,
        port_fd.is_none(),
    );
    let lock = || shared.pump.lock().unwrap_or_else(|e| e.into_inner());
    *lock() = Some(pump);
    let mut backoff = BACKOFF_MIN;
    loop {
        let (next, watch) = match lock().as_mut() {
            Some(p) => {
                let next = p.step();
                (next, std::mem::take(&mut p.expect_answer))
            }
            None => (None, false),
        };
        let Some(next) = next else {
            break;
        };
        if watch && next.port && watch_for_answer(&shared) {
            continue;
        }
        if wait_for_news(&shared, &bell_rx, port_fd.as_ref(), &next, &mut backoff).is_err() {
            if let Some(p) = lock().as_mut() {
                p.ended = Some(Ended::Gone);
            }
        }
    }
    // The callbacks find no pump from here on; the channel's keys go with it.
    let pump = lock().take();
    drop(pump);
}

/// Waits after a step for what `next` says: the bell (a frame queued by a Zenoh callback),
/// the bridge-side port when the pump would read it, at most the backoff when it polls.
/// Takes the bell's wake-ups. `Err` when the wait itself failed.
fn wait_for_news(
    shared: &Shared,
    bell_rx: &UnixStream,
    port_fd: Option<&OwnedFd>,
    next: &Next,
    backoff: &mut Duration,
) -> rustix::io::Result<()> {
    let mut fds = Vec::with_capacity(2);
    fds.push(PollFd::new(bell_rx, PollFlags::IN));
    if let (true, Some(fd)) = (next.port, port_fd) {
        fds.push(PollFd::new(fd, PollFlags::IN));
    }
    let timeout = if next.poll {
        let t = *backoff;
        *backoff = (t * 2).min(BACKOFF_MAX);
        Timespec::try_from(t).ok()
    } else {
        *backoff = BACKOFF_MIN;
        None
    };
    let waited = match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e),
    };
    if !fds[0].revents().is_empty() {
        let (mut buf, mut rx) = ([0u8; 64], bell_rx);
        while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
        shared.notified.store(false, Ordering::Release);
    }
    waited
}

const BACKOFF_MIN: Duration = Duration::from_micros(20);
const BACKOFF_MAX: Duration = Duration::from_millis(2);

impl Pump {
    #[allow(clippy::too_many_arguments)]
    fn new(
        core: Arc<Core>,
        shared: Arc<Shared>,
        publisher: Publisher<'static>,
        subscriber: Subscriber<()>,
        matching: MatchingListener<()>,
        peer: String,
        port: MessagePort,
        no_fd: bool,
    ) -> Pump {
        Pump {
            core,
            shared,
            publisher,
            _subscriber: subscriber,
            _matching: matching,
            peer,
            port: Some(port),
            no_fd,
            out: Vec::new(),
            last_was_large: false,
            out_parts: None,
            out_parts_len: 0,
            credit_arrived: false,
            expect_answer: false,
            answer_watch: AnswerWatch::default(),
            out_seq: 0,
            sent_msgs: 0,
            sent_bytes: 0,
            granted_msgs: 0,
            granted_bytes: 0,
            outgoing: None,
            local_done: false,
            in_seq: 0,
            recv_msgs: 0,
            recv_bytes: 0,
            announced_msgs: 0,
            announced_bytes: 0,
            returned_msgs: 0,
            returned_bytes: 0,
            assembling: None,
            assembly_held: 0,
            pending: VecDeque::new(),
            ended: None,
        }
    }

    /// One round of the pump thread: what arrived, what the local port has, credit; `None`
    /// when the channel is over.
    fn step(&mut self) -> Option<Next> {
        self.credit_arrived = false;
        self.take_inbox();
        self.settle();
        self.forward();
        self.send_credit();
        self.flush();
        if self.finished() {
            return None;
        }
        let port = self.wants_port();
        Some(Next {
            port,
            poll: !self.pending.is_empty() || (port && self.no_fd),
        })
    }

    /// Posts what waits for the local ring; what the network lent to a message being
    /// assembled is the bridge's to return once nothing waits.
    fn settle(&mut self) {
        self.deliver();
        if self.pending.is_empty() && self.assembly_held > 0 {
            // Nothing waits for the local ring: chunks of a message being assembled
            // have left the network's budget for the buffer they are copied into.
            self.returned_bytes += std::mem::take(&mut self.assembly_held);
        }
    }

    fn matched(&self) -> bool {
        self.shared.matched.load(Ordering::Acquire)
    }

    /// The bridge-side port.
    fn port(&self) -> Option<&MessagePort> {
        self.port.as_ref()
    }

    fn drop_port(&mut self) {
        self.port = None;
    }

    /// Whether the pump would read the port on news (a port left readable in the wait
    /// would be reported again and again).
    fn wants_port(&self) -> bool {
        self.port.is_some()
            && self.matched()
            && self.ended.is_none()
            && !self.local_done
            && self.outgoing.is_none()
            && self.sent_msgs < self.granted_msgs
            && self.sent_bytes < self.granted_bytes
    }

    /// True when the channel is over: the local user closed (and `Close` is sent), or
    /// the peer's direction ended and what arrived before has been posted.
    fn finished(&mut self) -> bool {
        if self.local_done {
            return true;
        }
        let Some(why) = self.ended else {
            return false;
        };
        if !self.pending.is_empty() && self.port().is_some() {
            return false;
        }
        if why == Ended::Violation {
            // Tell the peer, whose messages we will no longer take.
            frame::put_close(&mut self.out, self.out_seq);
            self.flush();
        }
        self.drop_port();
        true
    }
}
