//! A pump's inbound direction: frames from the peer, checked (sequence, credit, bounds),
//! assembled and posted into the bridge-side port, and the credit granted back as the
//! local ring drains.

use std::sync::atomic::Ordering;

use shmport::rkyv::util::AlignedVec;
use shmport::{ArrayBuffer, MessageChannel, MessagePort, Transferable};
use zenoh::bytes::ZBytes;

use crate::frame::{self, Frame, MsgHeader};

use super::{End, Ended, Pump};

/// A message being received: the body written where it goes, as it arrives.
pub(super) struct Assembly {
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
pub(super) struct Ready {
    archive: AlignedVec<16>,
    fingerprint: u64,
    transfer: Vec<Transferable>,
    /// Body bytes whose credit is returned when it is posted.
    bytes: u64,
}

/// The largest sample a Zenoh callback handles itself. Larger ones go to the pump
/// thread: their copy into the local ring then overlaps Zenoh's reading of the next
/// sample (on another core) instead of delaying it, which is worth a hand-off.
const DIRECT_MAX: usize = 64 << 10;

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

/// What a sample handled on a Zenoh callback's thread did ([`Pump::try_direct`]).
pub(super) struct Direct {
    /// The pump thread has work now: credit to send or to use, a message waiting for
    /// room, a watch of its own, the end.
    pub wake: bool,
    /// A message was posted whole into the local port as its frame was decoded: its user
    /// may answer at once (`pump/answer.rs`).
    pub delivered_whole: bool,
}

impl Pump {
    /// Handles a sample on the Zenoh callback's thread, when it is small, nothing queued
    /// waits before it and it needs nothing that may block or declare Zenoh keys (a frame
    /// transferring ports): `None` when the pump thread must take it; else what it did.
    pub(super) fn try_direct(&mut self, payload: &ZBytes) -> Option<Direct> {
        if payload.len() > DIRECT_MAX
            || self.ended.is_some()
            || !self.pending.is_empty()
            || !self.shared.inbox_empty()
        {
            return None;
        }
        let before = self.returned_msgs;
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
        let delivered_whole = self.returned_msgs > before;
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
        Some(Direct {
            wake: self.expect_answer
                || self.ended.is_some()
                || !self.pending.is_empty()
                || self.credit_arrived
                || self.credit_due().is_some(),
            delivered_whole,
        })
    }

    pub(super) fn take_inbox(&mut self) {
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
    pub(super) fn deliver(&mut self) {
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

    /// Grants the peer more credit when it is due.
    pub(super) fn send_credit(&mut self) {
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
}
