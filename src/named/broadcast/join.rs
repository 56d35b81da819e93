//! Joining a broadcast name: finding the name's segment (or creating it), under a lock
//! that serializes joins, and claiming a slot in it.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::service::{self, Registration};
use super::table;
use crate::error::Error;
use crate::shm::fanout::Registry;
use crate::sys;
use crate::wire::naming;

/// Most channels of one name open at once, across all processes of the user.
pub const MAX_BROADCAST_MEMBERS: usize = 512;

/// Bytes of each member's ring: room to absorb a reader's time off the CPU (a fan-out
/// often runs more processes than cores; measured with the comparison crate's `fanout`
/// on 2 cores, 512 KiB gave up to 2x the posts/s of 128 KiB to 4 subscribers). Only a
/// member that posts touches its ring's pages.
const RING_CAPACITY: usize = 512 * 1024;

/// How long a join waits for another join of the same name before giving up (a joiner
/// stopped by a debugger, say, holds the lock until it goes on or dies).
const JOIN_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// What a join leaves the new member with.
pub(super) struct Joined {
    pub reg: Arc<Registry>,
    pub slot: usize,
    pub epoch: u32,
    /// Its slot name (and maybe the door), served by the doorkeeper while it lives.
    pub names: Vec<Registration>,
}

/// Joins broadcast `name` (checked by the caller).
pub(super) fn join(name: &str) -> Result<Joined, Error> {
    let _lock = JoinLock::acquire(name)?;
    let reg = match find(name) {
        Some(reg) => reg,
        None => Arc::new(Registry::create(MAX_BROADCAST_MEMBERS, RING_CAPACITY)?),
    };
    let (slot, epoch) = claim(name, &reg)?;
    let mut names = Vec::with_capacity(2);
    let bound = sys::endpoint_listen(&table::slot_name(name, slot)).map_err(|e| {
        release_claim(&reg, slot, epoch);
        Error::os("binding a BroadcastChannel slot name", e)
    })?;
    names.push(service::register(bound, reg.clone()).inspect_err(|_| {
        release_claim(&reg, slot, epoch);
    })?);
    // The door is whoever took it first among the living; free: ours now.
    if let Ok(door) = sys::endpoint_listen(&door_name(name)) {
        if let Ok(r) = service::register(door, reg.clone()) {
            names.push(r);
        }
    }
    table::open(&reg, slot, epoch);
    Ok(Joined {
        reg,
        slot,
        epoch,
        names,
    })
}

/// Claims a slot; when none is free, first forgets the members that died (their slots
/// free up once nobody has anything left to read from them).
fn claim(name: &str, reg: &Registry) -> Result<(usize, u32), Error> {
    if let Some(c) = table::claim(reg) {
        return Ok(c);
    }
    for k in 0..reg.slots() {
        if let Some(e) = table::live_epoch(reg, k) {
            if table::is_dead(name, k) {
                table::reap(reg, k, e);
            }
        }
    }
    table::claim(reg).ok_or_else(|| Error::TooManyMembers(name.to_owned()))
}

fn release_claim(reg: &Registry, slot: usize, epoch: u32) {
    reg.slot(slot).word.store(
        table::word(epoch, table::FREE),
        crate::sys::sync::Ordering::Release,
    );
}

/// The name of the door: one member's second listener, so that a joiner usually finds
/// the segment with one connection.
fn door_name(name: &str) -> String {
    naming::address(&format!("bc/{name}.door"))
}

/// The name's segment, from the door or else from the first live slot; `None` when no
/// member answers (there is none).
fn find(name: &str) -> Option<Arc<Registry>> {
    let mut spare = None;
    let fd = service::ask(&door_name(name), &mut spare).or_else(|| {
        // The door's member left: the others hold the lowest slots (joins take the lowest
        // free one), so this stops early unless the name has no member at all.
        (0..MAX_BROADCAST_MEMBERS)
            .find_map(|k| service::ask(&table::slot_name(name, k), &mut spare))
    })?;
    open_checked(fd)
}

fn open_checked(fd: OwnedFd) -> Option<Arc<Registry>> {
    Registry::open(fd).ok().map(Arc::new)
}

/// Held while a member joins: the abstract name `bc/<name>/lock`, bound. The kernel frees
/// it when this process closes it, or dies.
struct JoinLock {
    _bound: OwnedFd,
}

impl JoinLock {
    fn acquire(name: &str) -> Result<JoinLock, Error> {
        let address = naming::address(&format!("bc/{name}/lock"));
        let give_up = Instant::now() + JOIN_LOCK_PATIENCE;
        let mut backoff = Duration::from_micros(20);
        let mut holder_checked = false;
        loop {
            match sys::endpoint_listen(&address) {
                Ok(bound) => return Ok(JoinLock { _bound: bound }),
                // Another member is joining (well under a millisecond): retry.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    // The abstract namespace has no permissions: make sure, once, that the
                    // holder is one of ours, not another user squatting on the name.
                    if !std::mem::replace(&mut holder_checked, true) {
                        let probe = sys::endpoint_connect_nonblocking(&address, &mut None);
                        if probe.is_ok_and(|h| !sys::peer_is_same_user(h.as_fd())) {
                            return Err(Error::NameInUse(format!(
                                "{name} (its join lock is held by another user)"
                            )));
                        }
                    }
                    if Instant::now() >= give_up {
                        return Err(Error::os(
                            "waiting for a BroadcastChannel join lock",
                            std::io::Error::from(std::io::ErrorKind::TimedOut),
                        ));
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
                Err(e) => return Err(Error::os("binding a BroadcastChannel join lock", e)),
            }
        }
    }
}
