//! Receiving a transfer record: matching it with its note, rebuilding the moved ports and
//! buffers (every descriptor checked), then decoding the message.

use std::os::fd::OwnedFd;

use rkyv::util::AlignedVec;

use crate::error::Error;
use crate::error::{MessageError, TryRecvError};
use crate::shm::buffer::ArrayBuffer;
use crate::shm::ring::Corrupt;
use crate::sys;
use crate::wire::doorbell;
use crate::wire::transfer::{
    self, ITEM_BODY, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT, Item, SOCKET_MESSAGE, TransferHeader,
};

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
        let fds = self.receive_note(&header).map_err(corrupt)?;
        let bad = |why| TryRecvError::MessageError(MessageError::Transfer(why));
        let Arrived {
            ports,
            buffers,
            body,
        } = rebuild(&header, &items, fds).map_err(bad)?;
        let data = match body {
            Some(b) => {
                // Copy, then check: the sender still maps the body.
                scratch.clear();
                scratch.extend_from_slice(&b);
                decode(scratch, tag)
            }
            None => {
                let at = transfer::archive_offset(items.len());
                decode(&scratch[at..at + header.inline_len as usize], tag)
            }
        }?;
        Ok(MessageEvent {
            data,
            ports,
            buffers,
        })
    }

    /// Receives the note that pairs with the transfer record `header`, skipping the stale
    /// doorbells queued before it. `Err` when there is none or it is out of step: record
    /// and socket no longer match, and the channel must be poisoned.
    fn receive_note(&self, header: &TransferHeader) -> Result<Vec<OwnedFd>, &'static str> {
        let mut note = [0u8; SOCKET_MESSAGE];
        let mut skipped = 0;
        let received = self.socket().and_then(|sock| {
            loop {
                // Doorbells (one byte, no descriptors) queued before the note are stale
                // news; a protocol-following writer leaves a few at most.
                match sys::recv_with_fds(sock, &mut note) {
                    Ok((n, fds))
                        if doorbell::is_doorbell(&note[..n], &fds)
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
            _ => return Err("transfer record without its descriptors"),
        };
        if note[..8] != header.seq.to_le_bytes() || fds.len() != header.fds as usize {
            return Err("transfer record and descriptors out of step");
        }
        Ok(fds)
    }
}

/// The objects of one transfer record, rebuilt.
struct Arrived {
    ports: Vec<MessagePort>,
    buffers: Vec<ArrayBuffer>,
    body: Option<ArrayBuffer>,
}

/// Rebuilds every item of a transfer record from the note's descriptors, in item order.
/// `Err` names the first item that fails its checks; what was rebuilt before is dropped.
fn rebuild(
    header: &TransferHeader,
    items: &[Item],
    fds: Vec<OwnedFd>,
) -> Result<Arrived, &'static str> {
    let mut fds = fds.into_iter();
    let mut arrived = Arrived {
        ports: Vec::new(),
        buffers: Vec::new(),
        body: None,
    };
    for (i, item) in items.iter().enumerate() {
        match item.kind {
            ITEM_PORT => {
                let (Some(segment), Some(socket)) = (fds.next(), fds.next()) else {
                    return Err("a port without its descriptors");
                };
                let port = MessagePort::arrive(segment, socket, item.side as usize).map_err(
                    |e| match e {
                        Error::BadBootstrap(_) => "a port descriptor is malformed",
                        Error::InvalidSegment(_) => "a port's segment is invalid",
                        _ => "a port's rings are invalid",
                    },
                )?;
                arrived.ports.push(port);
            }
            ITEM_BUFFER if item.len == 0 => {
                arrived
                    .buffers
                    .push(ArrayBuffer::new(0).map_err(|_| "empty buffer")?);
            }
            ITEM_BUFFER => {
                let fd = fds.next().ok_or("a buffer without its descriptor")?;
                arrived
                    .buffers
                    .push(ArrayBuffer::from_received(fd, item.len)?);
            }
            ITEM_SLOT => {
                let fd = fds.next().ok_or("a buffer without its heap descriptor")?;
                let generation = u32::try_from(item.reserved).map_err(|_| "bad generation")?;
                arrived.buffers.push(ArrayBuffer::from_received_slot(
                    fd, item.side, generation, item.len,
                )?);
            }
            ITEM_BODY if i + 1 == items.len() && header.inline_len == 0 => {
                let fd = fds.next().ok_or("a message body without its descriptor")?;
                arrived.body = Some(ArrayBuffer::from_received(fd, item.len)?);
            }
            _ => return Err("unknown or misplaced transfer item"),
        }
    }
    if fds.next().is_some() {
        return Err("more descriptors than transfer items");
    }
    Ok(arrived)
}
