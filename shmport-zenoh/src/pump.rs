//! One channel's pump: the thread that owns the bridge-side port and moves frames between
//! it and Zenoh, with sequence numbers and credit.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmport::rkyv::util::AlignedVec;
use shmport::{
    ArrayBuffer, MessageChannel, MessagePort, PortKey, PortSet, Transferable, TryRecvError,
};
use zenoh::Wait;
use zenoh::bytes::ZBytes;
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
    /// A wake-up is queued on `waker` and not yet taken.
    notified: AtomicBool,
    waker: Mutex<MessagePort>,
    matched: AtomicBool,
    peer_gone: AtomicBool,
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
            let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner());
            // Full or gone: a wake-up is queued already, or the pump has ended.
            let _ = waker.try_post_message(&0u8, []);
        }
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
    waker_rx: MessagePort,
    publisher: Publisher<'static>,
    subscriber: Subscriber<()>,
    matching: MatchingListener<()>,
}

impl End {
    /// Declares the keys of `channel`'s end: `origin` is the end that chose the id.
    pub(crate) fn declare(core: &Core, channel: u64, origin: bool) -> Result<End, BridgeError> {
        let wake_ch = MessageChannel::builder().capacity(4096).build()?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            limit: inbox_limit(core.window_bytes),
            notified: AtomicBool::new(false),
            waker: Mutex::new(wake_ch.port1),
            matched: AtomicBool::new(false),
            peer_gone: AtomicBool::new(false),
        });
        let zerr = BridgeError::Zenoh;
        let s = shared.clone();
        let subscriber = core
            .session
            .declare_subscriber(core.channel_key(channel, origin))
            .callback(move |sample| s.push(sample.payload().clone()))
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
            waker_rx: wake_ch.port2,
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
    pub(crate) fn start(
        self,
        core: &Arc<Core>,
        peer: String,
        port: MessagePort,
        fingerprints: Arc<HashMap<u64, u64>>,
    ) {
        core.peers.watch(&peer, &self.shared);
        *core.pumps.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let core = core.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("shmport-zenoh {:016x}", self.channel))
            .spawn({
                let core = core.clone();
                move || {
                    if let Some(mut pump) = Pump::new(core.clone(), self, peer, port, fingerprints)
                    {
                        pump.run();
                    }
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
    archive: AlignedVec<16>,
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
    fingerprints: Arc<HashMap<u64, u64>>,
    set: PortSet,
    waker_key: PortKey,
    /// The bridge-side port: in the set while the pump wants to read it, parked outside
    /// it otherwise (no credit, not matched yet), `None` in both once the local user
    /// closed.
    in_set: Option<PortKey>,
    parked: Option<MessagePort>,
    out: Vec<u8>,
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
    /// Poll instead of sleeping: a message waits for room in the local ring, or the
    /// port could not join the set.
    poll: bool,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_micros(20);
const BACKOFF_MAX: Duration = Duration::from_millis(2);

impl Pump {
    fn new(
        core: Arc<Core>,
        end: End,
        peer: String,
        port: MessagePort,
        fingerprints: Arc<HashMap<u64, u64>>,
    ) -> Option<Pump> {
        let End {
            shared,
            waker_rx,
            publisher,
            subscriber,
            matching,
            ..
        } = end;
        let mut set = PortSet::new().ok()?;
        let waker_key = set.insert(waker_rx).ok()?;
        Some(Pump {
            core,
            shared,
            publisher,
            _subscriber: subscriber,
            _matching: matching,
            peer,
            fingerprints,
            set,
            waker_key,
            in_set: None,
            parked: Some(port),
            out: Vec::new(),
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
            poll: false,
            backoff: BACKOFF_MIN,
        })
    }

    fn run(&mut self) {
        loop {
            self.take_inbox();
            self.deliver();
            if self.pending.is_empty() && self.assembly_held > 0 {
                // Nothing waits for the local ring: chunks of a message being assembled
                // have left the network's budget for the buffer they are copied into.
                self.returned_bytes += std::mem::take(&mut self.assembly_held);
            }
            self.forward();
            self.send_credit();
            self.flush();
            if self.finished() {
                return;
            }
            self.place_port();
            self.wait();
        }
    }

    fn matched(&self) -> bool {
        self.shared.matched.load(Ordering::Acquire)
    }

    /// The bridge-side port, wherever it is.
    fn port(&mut self) -> Option<&MessagePort> {
        match self.in_set {
            Some(k) => self.set.get(k),
            None => self.parked.as_ref(),
        }
    }

    fn drop_port(&mut self) {
        if let Some(k) = self.in_set.take() {
            drop(self.set.remove(k));
        }
        self.parked = None;
    }

    /// Puts the port in the set when the pump would read it on news, parks it otherwise
    /// (a port left readable in the set would be reported again and again).
    fn place_port(&mut self) {
        let want = self.matched()
            && self.ended.is_none()
            && !self.local_done
            && self.outgoing.is_none()
            && self.sent_msgs < self.granted_msgs
            && self.sent_bytes < self.granted_bytes;
        self.poll = !self.pending.is_empty();
        match (want, self.in_set) {
            (true, None) => {
                if let Some(port) = self.parked.take() {
                    match self.set.insert(port) {
                        Ok(k) => self.in_set = Some(k),
                        Err(e) => {
                            self.parked = Some(*e.port);
                            self.poll = true;
                        }
                    }
                }
            }
            (false, Some(k)) => {
                self.in_set = None;
                self.parked = self.set.remove(k);
            }
            _ => {}
        }
    }

    fn wait(&mut self) {
        let woke = if self.poll {
            let t = self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            self.set.wait_timeout(t)
        } else {
            self.backoff = BACKOFF_MIN;
            self.set.wait().map(Some)
        };
        match woke {
            Ok(Some(k)) if k == self.waker_key => {
                if let Some(w) = self.set.get(k) {
                    while w.try_recv::<u8>().is_ok() {}
                }
                self.shared.notified.store(false, Ordering::Release);
            }
            Ok(_) => {}
            Err(_) => self.ended = Some(Ended::Gone),
        }
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
            let bytes = sample.to_bytes();
            let (frames, err) = frame::decode_all(&bytes);
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
        if overflow {
            self.violation();
        }
        if gone && self.ended.is_none() {
            self.ended = Some(Ended::Gone);
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
                    a.write(bytes);
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
        let fingerprint = *self
            .fingerprints
            .get(&h.fingerprint)
            .unwrap_or(&h.fingerprint);
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
                Ok(end) => end.start(
                    &self.core,
                    self.peer.clone(),
                    ch.port1,
                    self.fingerprints.clone(),
                ),
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
        a.write(h.inline);
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
        match port.try_post_raw(h.inline, fingerprint, []) {
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
            let port = match self.in_set {
                Some(k) => self.set.get(k),
                None => self.parked.as_ref(),
            };
            let Some(port) = port else {
                return;
            };
            // The archive goes straight from the port's private copy into the frame:
            // a `Msg` frame's prefix and inline bytes, its transfer list after them.
            let (out, seq) = (&mut self.out, self.out_seq);
            let avail = self.granted_bytes - self.sent_bytes;
            let received = port.try_recv_raw_with(|archive, fingerprint| {
                let inline = archive.len().min(CHUNK).min(avail as usize);
                frame::put_msg_prefix(out, seq, fingerprint, archive.len() as u32, inline as u32);
                out.extend_from_slice(&archive[..inline]);
                let mut rest = AlignedVec::<16>::new();
                rest.extend_from_slice(&archive[inline..]);
                (inline, rest)
            });
            match received {
                Ok(ev) => {
                    let ((inline, rest), ports, buffers) = (ev.data, ev.ports, ev.buffers);
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
            if self.out.len() >= BATCH {
                self.flush();
            }
        }
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
            o.copy_next(n, &mut self.out);
            self.out_seq += 1;
            self.sent_bytes += n as u64;
            if self.out.len() >= BATCH {
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
        rest: AlignedVec<16>,
        ports: Vec<MessagePort>,
        buffers: Vec<ArrayBuffer>,
    ) {
        let mut ids = Vec::with_capacity(ports.len());
        for port in ports {
            let id = random_u64();
            // A port whose keys cannot be declared is dropped: its peer sees
            // `Disconnected`, and the far side's end of the id never hears from it.
            if let Ok(end) = End::declare(&self.core, id, true) {
                end.start(
                    &self.core,
                    self.peer.clone(),
                    port,
                    self.fingerprints.clone(),
                );
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

    /// Grants the peer more credit when a quarter of a window has left the bridge, or
    /// when the peer may be waiting for it.
    fn send_credit(&mut self) {
        if !self.matched() || self.ended.is_some() {
            return;
        }
        let (wm, wb) = (self.core.window_messages, self.core.window_bytes);
        let (want_m, want_b) = (self.returned_msgs + wm, self.returned_bytes + wb);
        let (um, ub) = (want_m - self.announced_msgs, want_b - self.announced_bytes);
        let starving = (self.announced_msgs == self.recv_msgs && um > 0)
            || (self.announced_bytes == self.recv_bytes && ub > 0);
        if um >= (wm / 4).max(1) || ub >= wb / 4 || starving {
            frame::put_credit(&mut self.out, want_m, want_b);
            self.announced_msgs = want_m;
            self.announced_bytes = want_b;
        }
    }

    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.out);
        if self.publisher.put(bytes).wait().is_err() {
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
