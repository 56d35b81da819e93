//! Receiving a transfer record: matching it with its note, rebuilding the moved ports and
//! buffers (every descriptor checked), then decoding the message.

use std::os::fd::AsFd;
use std::sync::Arc;

use rkyv::util::AlignedVec;

use crate::ArrayBuffer;
use crate::error::{MessageError, TryRecvError};
use crate::shm::ring::Corrupt;
use crate::shm::segment::Segment;
use crate::shm::wake::WaitStrategy;
use crate::sys;
use crate::wire::transfer::{self, ITEM_BODY, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT, SOCKET_MESSAGE};

use super::*;

/// Doorbells skipped before a transfer note: more than a socket buffer can hold (its
/// default fits a few hundred) means a peer flooding us, and the channel is poisoned.
pub(super) const MAX_DOORBELLS_BEFORE_NOTE: usize = 65_536;

impl MessagePort {
    /// Rebuilds the objects of a transfer record whose payload is in `scratch`, then
    /// decodes the message. A framing problem (no matching socket message) poisons the
    /// channel; a bad object or archive is an error for this message only.
    pub(super) fn receive_transfer<R>(
        &self,
        scratch: &mut AlignedVec<16>,
        tag: u64,
        decode: &mut Decoder<'_, R>,
    ) -> Result<MessageEvent<R>, TryRecvError> {
        let corrupt = |why| {
            self.poison(Corrupt(why));
            TryRecvError::MessageError(MessageError::Corrupt(why))
        };
        let (header, items) = transfer::parse(scratch).map_err(corrupt)?;
        let n = items.len();
        let mut note = [0u8; SOCKET_MESSAGE];
        let mut skipped = 0;
        let received = self.socket().and_then(|sock| {
            loop {
                // Doorbells (one byte, no descriptors) queued before the note are stale
                // news; a protocol-following writer leaves a few at most.
                match sys::recv_with_fds(sock, &mut note) {
                    Ok((n, fds))
                        if sys::is_doorbell(&note[..n], &fds)
                            && skipped < MAX_DOORBELLS_BEFORE_NOTE =>
                    {
                        skipped += 1;
                    }
                    other => break other,
                }
            }
        });
        let fds = match received {
            Ok((SOCKET_MESSAGE, fds)) => fds,
            _ => return Err(corrupt("transfer record without its descriptors")),
        };
        if note[..8] != header.seq.to_le_bytes() || fds.len() != header.fds as usize {
            return Err(corrupt("transfer record and descriptors out of step"));
        }
        let bad = |why| TryRecvError::MessageError(MessageError::Transfer(why));
        let mut fds = fds.into_iter();
        let mut ports = Vec::new();
        let mut buffers = Vec::new();
        let mut body = None;
        for (i, item) in items.iter().enumerate() {
            match item.kind {
                ITEM_PORT => {
                    let (Some(seg_fd), Some(sock)) = (fds.next(), fds.next()) else {
                        return Err(bad("a port without its descriptors"));
                    };
                    if item.side > 1 || !sys::is_socket(sock.as_fd()) {
                        return Err(bad("a port descriptor is malformed"));
                    }
                    let seg =
                        Segment::open(seg_fd).map_err(|_| bad("a port's segment is invalid"))?;
                    let port = MessagePort::attach(
                        Arc::new(seg),
                        item.side as usize,
                        Some(sock),
                        WaitStrategy::default(),
                    )
                    .map_err(|_| bad("a port's rings are invalid"))?;
                    ports.push(port);
                }
                ITEM_BUFFER if item.len == 0 => {
                    buffers.push(ArrayBuffer::new(0).map_err(|_| bad("empty buffer"))?)
                }
                ITEM_BUFFER => {
                    let fd = fds.next().ok_or(bad("a buffer without its descriptor"))?;
                    buffers.push(ArrayBuffer::from_received(fd, item.len).map_err(bad)?);
                }
                ITEM_SLOT => {
                    let fd = fds
                        .next()
                        .ok_or(bad("a buffer without its heap descriptor"))?;
                    let generation =
                        u32::try_from(item.reserved).map_err(|_| bad("bad generation"))?;
                    buffers.push(
                        ArrayBuffer::from_received_slot(fd, item.side, generation, item.len)
                            .map_err(bad)?,
                    );
                }
                ITEM_BODY if i + 1 == n && header.inline_len == 0 => {
                    let fd = fds
                        .next()
                        .ok_or(bad("a message body without its descriptor"))?;
                    body = Some(ArrayBuffer::from_received(fd, item.len).map_err(bad)?);
                }
                _ => return Err(bad("unknown or misplaced transfer item")),
            }
        }
        if fds.next().is_some() {
            return Err(bad("more descriptors than transfer items"));
        }
        let data = match body {
            Some(b) => {
                // Copy, then check: the sender still maps the body.
                scratch.clear();
                scratch.extend_from_slice(&b);
                decode(scratch, tag)
            }
            None => {
                let at = transfer::archive_offset(n);
                decode(&scratch[at..at + header.inline_len as usize], tag)
            }
        }?;
        Ok(MessageEvent {
            data,
            ports,
            buffers,
        })
    }
}
