//! One channel's pump: the thread that owns the bridge-side port and moves frames between
//! it and Zenoh, with sequence numbers and credit.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustix::event::{PollFd, PollFlags, Timespec};
use shmport::rkyv::util::AlignedVec;
use shmport::{ArrayBuffer, MessageChannel, MessagePort, RawMessage, Transferable, TryRecvError};
use zenoh::Wait;
use zenoh::bytes::{ZBytes, ZBytesWriter};
use zenoh::matching::MatchingListener;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;

use crate::frame::{self, Frame, MsgHeader};
use crate::{BridgeError, Core};

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
        if let Ok(mut guard) = self.pump.try_lock() {
            if let Some(wake) = guard.as_mut().and_then(|p| p.try_direct(&payload)) {
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

/// The rest of a message being sent: what its `Msg` frame did not carry of the
/// archive, then the buffers.
struct Outgoing {
    archive: Bytes,
    buffers: Vec<ArrayBuffer>,
    /// Body bytes sent so far.
    sent: u64,
    len: u64,
}

impl Outgoing {
    /// Appends the body bytes `[sent, sent + n)` to `out`.
    fn copy_next(&mut self, n: usize, out: &mut Vec<u8>) {
        let mut want = n;
        let mut at = self.sent;
        let parts = std::iter::once(&self.archive[..]).chain(self.buffers.iter().map(|b| &b[..]));
        let mut start = 0u64;
        for part in parts {
            let end = start + part.len() as u64;
            if want > 0 && at < end {
                let from = (at - start) as usize;
                let take = want.min(part.len() - from);
                out.extend_from_slice(&part[from..from + take]);
                want -= take;
                at += take as u64;
            }
            start = end;
        }
        self.sent += n as u64;
    }
}

/// A message being received: the body written where it goes, as it arrives.
struct Assembly {
    fingerprint: u64,
    archive_len: usize,
    archive: AlignedVec<16>,
    buffers: Vec<ArrayBuffer>,
    ports: Vec<MessagePort>,
    /// Body bytes received so far, and the whole body.
    got: u64,
    len: u64,
}

impl Assembly {
    /// Writes the next body bytes, in pieces; the caller checked they fit.
    fn write_parts(&mut self, bytes: &frame::Parts<'_>) {
        for s in bytes.slices() {
            self.write(s);
        }
    }

    /// Writes the next body bytes; the caller checked they fit.
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if (self.got as usize) < self.archive_len {
                let take = bytes.len().min(self.archive_len - self.got as usize);
                self.archive.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                self.got += take as u64;
                continue;
            }
            let mut at = self.got - self.archive_len as u64;
            for b in &mut self.buffers {
                let len = b.len() as u64;
                if at < len {
                    let from = at as usize;
                    let take = bytes.len().min(b.len() - from);
                    b[from..from + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.got += take as u64;
                    break;
                }
                at -= len;
            }
        }
    }
}

/// A received message waiting for room in the local ring.
struct Ready {
    archive: AlignedVec<16>,
    fingerprint: u64,
    transfer: Vec<Transferable>,
    /// Body bytes whose credit is returned when it is posted.
    bytes: u64,
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

/// The largest sample a Zenoh callback handles itself. Larger ones go to the pump
/// thread: their copy into the local ring then overlaps Zenoh's reading of the next
/// sample (on another core) instead of delaying it, which is worth a hand-off.
const DIRECT_MAX: usize = 64 << 10;

/// The smallest archive sent without a copy into the batch: the owned copy the port
/// handed over becomes a piece of the sample.
const ZERO_COPY_MIN: usize = 16 << 10;

/// A message read from the bridge-side port for sending.
enum Received {
    /// Its archive, handed over by the port, and fingerprint: nothing written yet.
    Owned(Bytes, u64),
    /// The `Msg` frame's prefix and this many inline bytes are written into the batch;
    /// the rest of the archive, copied.
    Copied(usize, Bytes),
}

/// A message read from the bridge-side port, with its transferred ports and buffers.
type LocalMessage = (Received, Vec<MessagePort>, Vec<ArrayBuffer>);

/// A large archive left in the shared buffer it came in ([`RawMessage::body`]), as a
/// piece of a sample: the buffer, and with it the sender's pool slot, is held until Zenoh
/// has copied the bytes out. The bytes are forwarded, never read as an archive here; the
/// far side's receiver validates them.
struct Body(ArrayBuffer);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Appends the start of a `Msg` frame for an archive of `len` bytes, `inline` of them in
/// the frame (both within a message's limits: the port refuses longer archives).
fn put_msg_prefix_for(out: &mut Vec<u8>, seq: u64, fingerprint: u64, len: usize, inline: usize) {
    frame::put_msg_prefix(out, seq, fingerprint, len as u32, inline as u32);
}

/// Calls `f` with the pieces of `payload`, as Zenoh holds them (a large sample is its
/// fragments, which are not copied together).
fn with_pieces<R>(payload: &ZBytes, f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let mut slices = payload.slices();
    match (slices.next(), slices.next()) {
        (None, _) => f(&[]),
        (Some(one), None) => f(&[one]),
        (Some(a), Some(b)) => {
            let mut all = vec![a, b];
            all.extend(slices);
            f(&all)
        }
    }
}

/// How long the pump thread watches the port for an answer to a message just delivered.
const WATCH: Duration = Duration::from_micros(50);

/// Watches the bridge-side port for up to [`WATCH`] (no system call per look): true when
/// a message or a queued frame arrived meanwhile.
fn watch_for_answer(shared: &Shared) -> bool {
    let until = std::time::Instant::now() + WATCH;
    loop {
        let news = match shared.pump.try_lock() {
            Ok(p) => p
                .as_ref()
                .is_none_or(|p| p.port.as_ref().is_some_and(|port| !port.is_empty())),
            // A callback is working on the channel: look again after it.
            Err(_) => false,
        };
        if news || shared.notified.load(Ordering::Acquire) {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
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
        let mut fds = Vec::with_capacity(2);
        fds.push(PollFd::new(&bell_rx, PollFlags::IN));
        if let (true, Some(fd)) = (next.port, &port_fd) {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let timeout = if next.poll {
            let t = backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            Timespec::try_from(t).ok()
        } else {
            backoff = BACKOFF_MIN;
            None
        };
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                if let Some(p) = lock().as_mut() {
                    p.ended = Some(Ended::Gone);
                }
            }
        }
        if !fds[0].revents().is_empty() {
            let mut buf = [0u8; 64];
            while matches!((&bell_rx).read(&mut buf), Ok(n) if n > 0) {}
            shared.notified.store(false, Ordering::Release);
        }
    }
    // The callbacks find no pump from here on; the channel's keys go with it.
    let pump = lock().take();
    drop(pump);
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

    /// Handles a sample on the Zenoh callback's thread, when it is small, nothing queued
    /// waits before it and it needs nothing that may block or declare Zenoh keys (a frame
    /// transferring ports): `None` when the pump thread must take it; else whether the pump thread has
    /// work now (credit to send or to use, a message waiting for room, the end).
    fn try_direct(&mut self, payload: &ZBytes) -> Option<bool> {
        if payload.len() > DIRECT_MAX
            || self.ended.is_some()
            || !self.pending.is_empty()
            || !self.shared.inbox_empty()
        {
            return None;
        }
        let handled = with_pieces(payload, |pieces| {
            let (frames, err) = frame::decode_parts(pieces);
            let ports = frames
                .iter()
                .any(|f| matches!(f, Frame::Msg(h) if !h.ports.is_empty()));
            if !ports {
                self.on_frames(frames, err);
            }
            !ports
        });
        if !handled {
            return None;
        }
        let returned = self.returned_msgs;
        self.settle();
        // A message went to the local user, who may answer at once: have the pump
        // thread up and watching by then (woken now, off the answer's path) instead of
        // woken by the answer. Only for messages that `settle` posted (assembled, or
        // queued behind a full ring): one posted whole while its frame was decoded
        // (`try_post_whole`) starts no watch. Watching after those too (a wake-up of the
        // pump thread per delivery) measured no faster round trip on two cores, at 40-60%
        // more CPU (README, Performance).
        self.expect_answer = self.returned_msgs > returned && self.wants_port() && !self.no_fd;
        Some(
            self.expect_answer
                || self.ended.is_some()
                || !self.pending.is_empty()
                || self.credit_arrived
                || self.credit_due().is_some(),
        )
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

    fn take_inbox(&mut self) {
        let gone = self.shared.peer_gone.load(Ordering::Acquire);
        let (samples, overflow) = {
            let mut inbox = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
            inbox.bytes = 0;
            (std::mem::take(&mut inbox.samples), inbox.overflow)
        };
        for sample in samples {
            if self.ended.is_some() {
                break;
            }
            with_pieces(&sample, |pieces| {
                let (frames, err) = frame::decode_parts(pieces);
                self.on_frames(frames, err);
            });
        }
        if overflow {
            self.violation();
        }
        if gone && self.ended.is_none() {
            self.ended = Some(Ended::Gone);
        }
    }

    fn on_frames(&mut self, frames: Vec<Frame<'_>>, err: Option<frame::FrameError>) {
        for f in frames {
            if self.ended.is_some() {
                break;
            }
            self.on_frame(f);
        }
        if err.is_some() {
            self.violation();
        }
    }

    fn violation(&mut self) {
        if self.ended.is_none() || self.ended == Some(Ended::Closed) {
            self.ended = Some(Ended::Violation);
        }
        // A message half received is lost with the channel.
        self.assembling = None;
    }

    /// The frame sequence check: the next frame, neither a gap nor a duplicate.
    fn in_sequence(&mut self, seq: u64) -> bool {
        if seq != self.in_seq {
            self.violation();
            return false;
        }
        self.in_seq += 1;
        true
    }

    /// Counts body bytes against what we granted.
    fn take_bytes(&mut self, n: usize) -> bool {
        self.recv_bytes = self.recv_bytes.saturating_add(n as u64);
        if self.recv_bytes > self.announced_bytes {
            self.violation();
            return false;
        }
        true
    }

    fn on_frame(&mut self, f: Frame<'_>) {
        match f {
            Frame::Credit { messages, bytes } => {
                if messages > self.granted_msgs || bytes > self.granted_bytes {
                    self.credit_arrived = true;
                }
                self.granted_msgs = self.granted_msgs.max(messages);
                self.granted_bytes = self.granted_bytes.max(bytes);
            }
            Frame::Msg(h) => self.on_msg(h),
            Frame::Chunk { seq, bytes } => {
                if !self.in_sequence(seq) {
                    return;
                }
                let fits = self
                    .assembling
                    .as_ref()
                    .is_some_and(|a| bytes.len() as u64 <= a.len - a.got);
                if !fits {
                    return self.violation();
                }
                if !self.take_bytes(bytes.len()) {
                    return;
                }
                if let Some(a) = &mut self.assembling {
                    a.write_parts(&bytes);
                }
                self.assembly_held += bytes.len() as u64;
                self.complete_if_done();
            }
            Frame::Close { seq } => {
                if !self.in_sequence(seq) {
                    return;
                }
                if self.assembling.is_some() {
                    return self.violation();
                }
                self.ended = Some(Ended::Closed);
            }
        }
    }

    fn on_msg(&mut self, h: MsgHeader<'_>) {
        if !self.in_sequence(h.seq) {
            return;
        }
        if self.assembling.is_some() {
            return self.violation();
        }
        self.recv_msgs += 1;
        if self.recv_msgs > self.announced_msgs || !self.take_bytes(h.inline.len()) {
            return self.violation();
        }
        // Carried unchanged: a type with a stable name (`shmport::declare_stable_name`)
        // has the same fingerprint in both programs.
        let fingerprint = h.fingerprint;
        if self.try_post_whole(&h, fingerprint) {
            return;
        }
        let mut buffers = Vec::with_capacity(h.buffers.len());
        for &len in &h.buffers {
            match usize::try_from(len).map(ArrayBuffer::new_unzeroed) {
                Ok(Ok(b)) => buffers.push(b),
                // This host cannot hold what the peer sends: the channel cannot go on.
                _ => return self.violation(),
            }
        }
        let mut ports = Vec::with_capacity(h.ports.len());
        for &id in &h.ports {
            let Ok(ch) = MessageChannel::new() else {
                return self.violation();
            };
            match End::declare(&self.core, id, false) {
                Ok(end) => end.start(&self.core, self.peer.clone(), ch.port1),
                Err(_) => return self.violation(),
            }
            ports.push(ch.port2);
        }
        let mut a = Assembly {
            fingerprint,
            archive_len: h.archive_len as usize,
            archive: AlignedVec::new(),
            buffers,
            ports,
            got: 0,
            len: h.body_len(),
        };
        a.write_parts(&h.inline);
        self.assembly_held += h.inline.len() as u64;
        self.assembling = Some(a);
        self.complete_if_done();
    }

    /// The fast path of a message that is whole in its first frame and transfers
    /// nothing: posted straight from the sample's bytes when nothing waits before it and
    /// the ring has room. False when it must be assembled and queued instead.
    fn try_post_whole(&mut self, h: &MsgHeader<'_>, fingerprint: u64) -> bool {
        let whole =
            h.ports.is_empty() && h.buffers.is_empty() && h.inline.len() == h.archive_len as usize;
        if !whole || !self.pending.is_empty() {
            return false;
        }
        let Some(port) = self.port() else {
            return false;
        };
        // Written into the ring (or the memory beside it) straight from the sample's
        // pieces: no contiguous copy first.
        let single: [&[u8]; 1];
        let pieces: Vec<&[u8]>;
        let parts: &[&[u8]] = match h.inline.as_contiguous() {
            Some(one) => {
                single = [one];
                &single
            }
            None => {
                pieces = h.inline.slices().collect();
                &pieces
            }
        };
        match port.try_post_raw_parts(parts, fingerprint, []) {
            Ok(()) => {}
            Err(e) if e.is_full() || e.is_disconnected() => return false,
            // The OS refused what this one message needs: it is lost (see `deliver`).
            Err(_) => {}
        }
        self.returned_msgs += 1;
        self.returned_bytes += h.inline.len() as u64;
        true
    }

    fn complete_if_done(&mut self) {
        if self.assembling.as_ref().is_some_and(|a| a.got == a.len) {
            let Some(a) = self.assembling.take() else {
                return;
            };
            let ports = a.ports.into_iter().map(Transferable::from);
            let transfer = ports.chain(a.buffers.into_iter().map(Transferable::from));
            self.pending.push_back(Ready {
                archive: a.archive,
                fingerprint: a.fingerprint,
                transfer: transfer.collect(),
                bytes: std::mem::take(&mut self.assembly_held),
            });
        }
    }

    /// Posts what arrived into the local ring, as far as it has room.
    fn deliver(&mut self) {
        while !self.pending.is_empty() {
            let (archive, fingerprint, transfer) = {
                let r = &mut self.pending[0];
                (
                    std::mem::take(&mut r.archive),
                    r.fingerprint,
                    std::mem::take(&mut r.transfer),
                )
            };
            let Some(port) = self.port() else {
                self.pending.clear();
                return;
            };
            match port.try_post_raw(&archive, fingerprint, transfer) {
                Ok(()) => {
                    let r = self.pending.pop_front().map_or(0, |r| r.bytes);
                    self.returned_msgs += 1;
                    self.returned_bytes += r;
                }
                Err(e) if e.is_full() => {
                    let r = &mut self.pending[0];
                    r.archive = archive;
                    r.transfer = e.into_inner();
                    return;
                }
                Err(e) if e.is_disconnected() => {
                    // The local user closed: nobody will read what is left.
                    self.pending.clear();
                    return;
                }
                Err(_) => {
                    // The OS refused what this one message needs: it is lost, the
                    // channel goes on (as for a post on one host).
                    let r = self.pending.pop_front().map_or(0, |r| r.bytes);
                    self.returned_msgs += 1;
                    self.returned_bytes += r;
                }
            }
        }
    }

    /// Reads the local port and sends its messages, as far as credit allows.
    fn forward(&mut self) {
        if self.local_done || self.ended.is_some() || !self.matched() {
            return;
        }
        loop {
            if !self.continue_outgoing() {
                return;
            }
            if self.sent_msgs >= self.granted_msgs || self.sent_bytes >= self.granted_bytes {
                return;
            }
            let avail = self.granted_bytes - self.sent_bytes;
            let Some(received) = self.read_local(avail) else {
                return;
            };
            match received {
                Ok((Received::Owned(archive, fingerprint), ports, buffers)) => {
                    let len = archive.len();
                    self.last_was_large = len >= ZERO_COPY_MIN;
                    let inline = len.min(CHUNK).min(avail as usize);
                    put_msg_prefix_for(&mut self.out, self.out_seq, fingerprint, len, inline);
                    let rest = if len < ZERO_COPY_MIN {
                        self.out.extend_from_slice(&archive[..inline]);
                        Bytes::copy_from_slice(&archive[inline..])
                    } else {
                        self.append_owned(archive.slice(..inline));
                        archive.slice(inline..)
                    };
                    self.finish_msg_frame(inline, rest, ports, buffers);
                }
                Ok((Received::Copied(inline, rest), ports, buffers)) => {
                    self.last_was_large = inline + rest.len() >= ZERO_COPY_MIN;
                    self.finish_msg_frame(inline, rest, ports, buffers);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    frame::put_close(&mut self.out, self.out_seq);
                    self.out_seq += 1;
                    self.local_done = true;
                    self.drop_port();
                    return;
                }
                // A record whose transferred objects were lost on the way into the
                // bridge: there is nothing to forward.
                Err(_) => {}
            }
            if self.batched() >= BATCH {
                self.flush();
            }
        }
    }

    /// Takes the next message from the bridge-side port (`None` once the port is gone),
    /// `avail` bytes of credit left for its frame.
    fn read_local(&mut self, avail: u64) -> Option<Result<LocalMessage, TryRecvError>> {
        let port = self.port.as_ref()?;
        Some(if self.last_was_large {
            // Large messages flow: take the archive as the port holds it (the shared
            // buffer it travelled in, or the port's own copy, handed over) and make it a
            // piece of the sample, which Zenoh copies into its send buffers.
            port.try_recv_raw_in_place().map(|raw| {
                let RawMessage {
                    archive,
                    body,
                    fingerprint,
                    ports,
                    buffers,
                    ..
                } = raw;
                let archive = match body {
                    Some(body) => Bytes::from_owner(Body(body)),
                    None => Bytes::from_owner(archive),
                };
                (Received::Owned(archive, fingerprint), ports, buffers)
            })
        } else {
            // Small messages flow: the archive, lent, is copied into the batch (no
            // allocation per message); one that turns out large is copied whole.
            let (out, seq) = (&mut self.out, self.out_seq);
            port.try_recv_raw_with(|archive, fingerprint| {
                let inline = archive.len().min(CHUNK).min(avail as usize);
                out.reserve(inline + 64);
                put_msg_prefix_for(out, seq, fingerprint, archive.len(), inline);
                out.extend_from_slice(&archive[..inline]);
                Received::Copied(inline, Bytes::copy_from_slice(&archive[inline..]))
            })
            .map(|ev| (ev.data, ev.ports, ev.buffers))
        })
    }

    /// Appends `bytes` to the batch without copying them.
    fn append_owned(&mut self, bytes: Bytes) {
        let parts = self.out_parts.get_or_insert_with(ZBytes::writer);
        if !self.out.is_empty() {
            self.out_parts_len += self.out.len();
            parts.append(ZBytes::from(std::mem::take(&mut self.out)));
        }
        self.out_parts_len += bytes.len();
        parts.append(ZBytes::from(bytes));
    }

    /// The bytes of the batch.
    fn batched(&self) -> usize {
        self.out_parts_len + self.out.len()
    }

    /// Sends the rest of the current message as credit allows; true when it is all sent.
    fn continue_outgoing(&mut self) -> bool {
        while let Some(o) = &mut self.outgoing {
            let left = o.len - o.sent;
            if left == 0 {
                self.outgoing = None;
                break;
            }
            let avail = self.granted_bytes - self.sent_bytes;
            if avail == 0 {
                return false;
            }
            let n = left.min(CHUNK as u64).min(avail) as usize;
            frame::put_chunk_header(&mut self.out, self.out_seq, n as u32);
            // A large piece of the archive goes as it is; the rest is copied.
            let from = o.sent as usize;
            if from + n <= o.archive.len() && n >= ZERO_COPY_MIN {
                let piece = o.archive.slice(from..from + n);
                o.sent += n as u64;
                self.append_owned(piece);
            } else {
                o.copy_next(n, &mut self.out);
            }
            self.out_seq += 1;
            self.sent_bytes += n as u64;
            if self.batched() >= BATCH {
                self.flush();
            }
        }
        true
    }

    /// Completes the `Msg` frame whose prefix and `inline` archive bytes are written:
    /// proxies the transferred ports on channels of their own, appends the transfer
    /// list, and keeps what is left of the body (`rest` of the archive, then the
    /// buffers) for `Chunk` frames.
    fn finish_msg_frame(
        &mut self,
        inline: usize,
        rest: Bytes,
        ports: Vec<MessagePort>,
        buffers: Vec<ArrayBuffer>,
    ) {
        let mut ids = Vec::with_capacity(ports.len());
        for port in ports {
            let id = random_u64();
            // A port whose keys cannot be declared is dropped: its peer sees
            // `Disconnected`, and the far side's end of the id never hears from it.
            if let Ok(end) = End::declare(&self.core, id, true) {
                end.start(&self.core, self.peer.clone(), port);
            }
            ids.push(id);
        }
        let lens: Vec<u64> = buffers.iter().map(|b| b.len() as u64).collect();
        frame::put_msg_suffix(&mut self.out, &ids, &lens);
        self.out_seq += 1;
        self.sent_msgs += 1;
        self.sent_bytes += inline as u64;
        let len = lens.iter().fold(rest.len() as u64, |a, b| a + b);
        if len > 0 {
            self.outgoing = Some(Outgoing {
                archive: rest,
                buffers,
                sent: 0,
                len,
            });
        }
    }

    /// Grants the peer more credit when it is due.
    fn send_credit(&mut self) {
        if let Some((want_m, want_b)) = self.credit_due() {
            frame::put_credit(&mut self.out, want_m, want_b);
            self.announced_msgs = want_m;
            self.announced_bytes = want_b;
        }
    }

    /// The credit to grant now (messages, bytes), if any: when a quarter of a window has
    /// left the bridge, or when the peer may be waiting for it.
    fn credit_due(&self) -> Option<(u64, u64)> {
        if !self.matched() || self.ended.is_some() {
            return None;
        }
        let (wm, wb) = (self.core.window_messages, self.core.window_bytes);
        let (want_m, want_b) = (self.returned_msgs + wm, self.returned_bytes + wb);
        let (um, ub) = (want_m - self.announced_msgs, want_b - self.announced_bytes);
        let starving = (self.announced_msgs == self.recv_msgs && um > 0)
            || (self.announced_bytes == self.recv_bytes && ub > 0);
        (um >= (wm / 4).max(1) || ub >= wb / 4 || starving).then_some((want_m, want_b))
    }

    fn flush(&mut self) {
        if self.batched() == 0 {
            return;
        }
        let out = std::mem::take(&mut self.out);
        let sample = match self.out_parts.take() {
            Some(mut parts) => {
                self.out_parts_len = 0;
                if !out.is_empty() {
                    parts.append(ZBytes::from(out));
                }
                parts.finish()
            }
            None => ZBytes::from(out),
        };
        if self.publisher.put(sample).wait().is_err() {
            self.ended = Some(Ended::Gone);
        }
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
