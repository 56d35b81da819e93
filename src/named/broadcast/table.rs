//! The member table of a broadcast segment: claiming a slot, opening it, leaving, noticing
//! a dead member, and reclaiming a ring once nobody reads it.
//!
//! A slot's word is `epoch << 3 | state`; every change of state is a compare-and-swap
//! from the word the actor saw, so it acts on one occupancy and never on the next. Each
//! change of the table or of a cursor's state is followed by a bump of the generation,
//! which is how the other members learn of it without a system call.

use crate::shm::bell;
use crate::shm::fanout::{Cursor, Registry};
use crate::shm::wake::wake;
use crate::sys;
use crate::sys::sync::Ordering;
use crate::wire::naming;

/// Slot states.
pub(super) const FREE: u32 = 0;
pub(super) const CLAIMED: u32 = 1;
pub(super) const LIVE: u32 = 2;
pub(super) const CLOSED: u32 = 3;
pub(super) const RECLAIMING: u32 = 4;

/// Cursor states.
pub(super) const INACTIVE: u32 = 0;
pub(super) const JOINING: u32 = 1;
pub(super) const ACTIVE: u32 = 2;

const EPOCH_MASK: u32 = u32::MAX >> 3;

pub(super) fn word(epoch: u32, state: u32) -> u32 {
    (epoch & EPOCH_MASK) << 3 | state
}

/// `(epoch, state)` of slot `k` now.
pub(super) fn read(reg: &Registry, k: usize) -> (u32, u32) {
    // Acquire: pairs with the Release store or CAS that set the state, so what the actor
    // wrote before (cursors, a zeroed ring) is visible.
    let w = reg.slot(k).word.load(Ordering::Acquire);
    (w >> 3, w & 7)
}

/// The epoch of slot `k` if its member is live.
pub(super) fn live_epoch(reg: &Registry, k: usize) -> Option<u32> {
    let (e, s) = read(reg, k);
    (s == LIVE).then_some(e)
}

/// Tells every member that the table or a cursor changed.
pub(super) fn bump(reg: &Registry) {
    // Release: pairs with the Acquire load of the generation in `Member::sync`.
    reg.generation().fetch_add(1, Ordering::Release);
}

/// The abstract name member `k` of broadcast `name` holds while it lives.
pub(super) fn slot_name(name: &str, k: usize) -> String {
    naming::address(&format!("bc/{name}/{k}"))
}

/// Claims the lowest free slot: `(slot, epoch)`.
pub(super) fn claim(reg: &Registry) -> Option<(usize, u32)> {
    (0..reg.slots()).find_map(|k| {
        let w = reg.slot(k).word.load(Ordering::Acquire);
        let epoch = (w >> 3).wrapping_add(1) & EPOCH_MASK;
        let ok = w & 7 == FREE
            && reg
                .slot(k)
                .word
                .compare_exchange(w, word(epoch, CLAIMED), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        ok.then_some((k, epoch))
    })
}

/// Opens claimed slot `me` (its ring block is zeroed): every live member may read its
/// ring from the start, and asks to read theirs from their next post on.
pub(super) fn open(reg: &Registry, me: usize, epoch: u32) {
    for i in (0..reg.slots()).filter(|&i| i != me) {
        let Some(e) = live_epoch(reg, i) else {
            continue;
        };
        set(reg.cursor(me, i), 0, e, ACTIVE);
        set(reg.cursor(i, me), 0, epoch, JOINING);
    }
    reg.slot(me)
        .pid
        .store(sys::current_pid(), Ordering::Relaxed);
    // Release: the cursors above are visible to whoever sees the slot live.
    reg.slot(me)
        .word
        .store(word(epoch, LIVE), Ordering::Release);
    bump(reg);
}

fn set(c: &Cursor, pos: u64, epoch: u32, state: u32) {
    c.pos.store(pos, Ordering::Relaxed);
    c.epoch.store(epoch, Ordering::Relaxed);
    // Release: pairs with the Acquire load of the state by the ring's writer or reader.
    c.state.store(state, Ordering::Release);
}

/// Member `k` (of `epoch`) stops reading: its cursors in every ring go inactive, and
/// writers waiting for it are woken.
fn stop_reading(reg: &Registry, k: usize, epoch: u32) {
    for j in (0..reg.slots()).filter(|&j| j != k) {
        if !matches!(read(reg, j).1, LIVE | CLOSED) {
            continue; // its cursor table is zeroed (or about to be): nothing of ours there
        }
        let c = reg.cursor(j, k);
        if c.state.load(Ordering::Acquire) != INACTIVE && c.epoch.load(Ordering::Relaxed) == epoch {
            // SeqCst: ordered before the loads of `try_reclaim` (ours or a concurrent
            // reader's), so that the last reader to stop always sees the ring unread.
            c.state.store(INACTIVE, Ordering::SeqCst);
            wake(&reg.ring(j).ctrl().writer_sleeping);
            try_reclaim(reg, j);
        }
    }
}

/// Member `me` leaves: it stops reading, its slot closes (its ring stays readable until
/// every reader has taken what it posted), and the others are told.
pub(super) fn leave(reg: &Registry, me: usize, epoch: u32) {
    stop_reading(reg, me, epoch);
    // Fails only if someone took us for dead meanwhile (our name was already gone): they
    // did the same.
    let _ = reg.slot(me).word.compare_exchange(
        word(epoch, LIVE),
        word(epoch, CLOSED),
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
    after_close(reg, me);
}

fn after_close(reg: &Registry, k: usize) {
    bump(reg);
    bell::ring(reg.bell(), reg.sleepers());
    try_reclaim(reg, k);
}

/// Reader `me` (of `epoch`) is done with the ring of slot `k`.
pub(super) fn done_reading(reg: &Registry, k: usize, me: usize, epoch: u32) {
    let c = reg.cursor(k, me);
    if c.epoch.load(Ordering::Relaxed) == epoch {
        // SeqCst: as in `stop_reading`.
        c.state.store(INACTIVE, Ordering::SeqCst);
        wake(&reg.ring(k).ctrl().writer_sleeping);
    }
    try_reclaim(reg, k);
    bump(reg);
}

/// True when member `k` of `name` is gone: the abstract name it holds while alive is
/// free (the kernel frees it when its process dies, however it dies). Costs a socket,
/// a bind and a close.
pub(super) fn is_dead(name: &str, k: usize) -> bool {
    match sys::endpoint_listen(&slot_name(name, k)) {
        Ok(_probe) => true, // dropped at once: the name is free again
        Err(_) => false,    // in use (or we cannot tell): alive
    }
}

/// Closes slot `k` for its member, found dead at `epoch`, as it would have on leaving.
/// Returns whether this call did it (another member may have first).
pub(super) fn reap(reg: &Registry, k: usize, epoch: u32) -> bool {
    let taken = reg
        .slot(k)
        .word
        .compare_exchange(
            word(epoch, LIVE),
            word(epoch, CLOSED),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok();
    if taken {
        stop_reading(reg, k, epoch);
        after_close(reg, k);
    }
    taken
}

/// Frees the ring of closed slot `k` once no live member's cursor in it is active: its
/// pages go back to the kernel and the slot is free for the next joiner.
pub(super) fn try_reclaim(reg: &Registry, k: usize) {
    let (epoch, state) = read(reg, k);
    if state != CLOSED {
        return;
    }
    let still_read = (0..reg.slots()).filter(|&i| i != k).any(|i| {
        let c = reg.cursor(k, i);
        // SeqCst: see `stop_reading`.
        c.state.load(Ordering::SeqCst) == ACTIVE
            && live_epoch(reg, i) == Some(c.epoch.load(Ordering::Relaxed))
    });
    let closed = word(epoch, CLOSED);
    if still_read
        || reg
            .slot(k)
            .word
            .compare_exchange(
                closed,
                word(epoch, RECLAIMING),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
    {
        return;
    }
    // A failure leaves the pages allocated but zeroing is what matters for the next
    // occupant: fall back to writing the zeros.
    if reg.release_ring(k).is_err() {
        reg.zero_ring(k);
    }
    // Release: the zeroed ring is visible to whoever claims the slot.
    reg.slot(k).word.store(word(epoch, FREE), Ordering::Release);
    bump(reg);
}
