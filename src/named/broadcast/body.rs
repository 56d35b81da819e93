//! Messages too large for one ring record: the body goes in a shared-memory object of its
//! own, served by the doorkeeper under a name of its own, and the ring carries only its
//! token and length. Each reader fetches the body when it reaches the record; the writer
//! drops it once the slowest reader is past the record (or, if the writer closes first,
//! the doorkeeper keeps it until the writer's ring is reclaimed).

use std::collections::VecDeque;
use std::sync::Arc;

use rkyv::util::AlignedVec;

use super::service::{self, Registration};
use crate::error::{Error, MessageError};
use crate::shm::fanout::{self, Registry};
use crate::wire::naming;

/// A record naming a body: payload `[token, len]` (little-endian `u64`s); the tag is the
/// message's type fingerprint.
pub(super) const KIND_BODY: u32 = 19;

/// Most bodies one member keeps in flight; past it, a large post waits for the slowest
/// reader as a post waits for room.
pub(super) const MAX_BODIES: usize = 64;

/// The name body `token` of broadcast `name` is served under.
fn body_name(name: &str, token: u64) -> String {
    naming::address(&format!("bc/{name}.{token:016x}"))
}

/// The bodies a member has in flight, oldest first, each with the ring position its
/// record ends at.
#[derive(Default)]
pub(super) struct Bodies {
    next: u32,
    live: VecDeque<(u64, Registration)>,
}

impl Bodies {
    /// Serves `archive` as a body; returns the record payload naming it.
    pub(super) fn publish(
        &mut self,
        name: &str,
        reg: &Arc<Registry>,
        slot: usize,
        epoch: u32,
        archive: &[u8],
    ) -> Result<([u8; 16], Registration), Error> {
        let token = (slot as u64) << 54 | u64::from(epoch & 0x3f_ffff) << 32 | u64::from(self.next);
        self.next = self.next.wrapping_add(1);
        let body = fanout::body_from(archive)?;
        let listener = crate::sys::endpoint_listen(&body_name(name, token))
            .map_err(|e| Error::os("binding a broadcast body name", e))?;
        let served = service::register_body(listener, body, reg.clone())?;
        let mut record = [0u8; 16];
        record[..8].copy_from_slice(&token.to_le_bytes());
        record[8..].copy_from_slice(&(archive.len() as u64).to_le_bytes());
        Ok((record, served))
    }

    /// Keeps a body served until the slowest reader is past `end`.
    pub(super) fn keep(&mut self, end: u64, served: Registration) {
        self.live.push_back((end, served));
    }

    /// Drops the bodies every reader is past (`low`: the slowest cursor).
    pub(super) fn drop_passed(&mut self, low: u64) {
        while self.live.front().is_some_and(|(end, _)| *end <= low) {
            self.live.pop_front();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// What is left, for the doorkeeper to keep serving after the member closes.
    pub(super) fn take(&mut self) -> Vec<Registration> {
        self.live.drain(..).map(|(_, r)| r).collect()
    }
}

/// Fetches the body a record names into `out`.
pub(super) fn fetch(
    name: &str,
    record: &[u8],
    out: &mut AlignedVec<16>,
) -> Result<(), MessageError> {
    let lost = MessageError::Transfer("the body of a large broadcast message is gone");
    let [
        t0,
        t1,
        t2,
        t3,
        t4,
        t5,
        t6,
        t7,
        l0,
        l1,
        l2,
        l3,
        l4,
        l5,
        l6,
        l7,
    ] = *record
    else {
        return Err(MessageError::Corrupt("a body record of the wrong length"));
    };
    let token = u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
    let len = u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= crate::wire::codec::MAX_ARCHIVE_LEN)
        .ok_or(MessageError::Corrupt(
            "a body record announces too many bytes",
        ))?;
    let fd = service::ask(&body_name(name, token), &mut None).ok_or(lost)?;
    fanout::copy_body(std::os::fd::AsFd::as_fd(&fd), len, out).map_err(MessageError::Transfer)
}
