//! A pump's outbound direction: messages read from the bridge-side port, framed, batched
//! into samples and sent within the credit the peer granted.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use shmport::{ArrayBuffer, MessagePort, RawMessage, TryRecvError};
use zenoh::Wait;
use zenoh::bytes::ZBytes;

use crate::frame;

use super::{BATCH, CHUNK, End, Ended, Pump, random_u64};

/// The rest of a message being sent: what its `Msg` frame did not carry of the
/// archive, then the buffers.
pub(super) struct Outgoing {
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

impl Pump {
    /// Reads the local port and sends its messages, as far as credit allows.
    pub(super) fn forward(&mut self) {
        self.forward_where(|_| true);
    }

    /// [`forward`](Self::forward) while `take` accepts the port as it is before the next
    /// message is read.
    pub(super) fn forward_where(&mut self, mut take: impl FnMut(&MessagePort) -> bool) {
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
            if !self.port().is_some_and(&mut take) {
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

    pub(super) fn flush(&mut self) {
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
        let under_way = &self.core.puts_under_way;
        under_way.fetch_add(1, Ordering::Relaxed);
        let put = self.publisher.put(sample).wait();
        under_way.fetch_sub(1, Ordering::Relaxed);
        if put.is_err() {
            self.ended = Some(Ended::Gone);
        }
    }
}
