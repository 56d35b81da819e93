//! A member's own ring, seen from its writer: who reads it, how far the slowest reader
//! got, and letting joiners in.

use crate::shm::fanout::Registry;
use crate::shm::ring::Producer;
use crate::sys::sync::Ordering;

use super::table::{self, ACTIVE, INACTIVE, JOINING};

/// One reader of our ring: its slot, the epoch it joined at, its cursor when last read.
struct Reader {
    slot: usize,
    epoch: u32,
    pos: u64,
}

pub(super) struct Outbound {
    pub producer: Producer,
    readers: Vec<Reader>,
    /// The slowest reader's cursor when last computed.
    low: u64,
}

impl Outbound {
    pub(super) fn new(producer: Producer) -> Self {
        let low = producer.position();
        Outbound {
            producer,
            readers: Vec::new(),
            low,
        }
    }

    /// Takes in the table's changes: lets in members that asked to read (from the next
    /// record on), forgets those that left. Returns whether it let someone in.
    pub(super) fn sync(&mut self, reg: &Registry, me: usize) -> bool {
        let tail = self.producer.position();
        let mut let_in = false;
        // First forget who left, so that a slot taken again by a new member is let in.
        self.readers.retain(|r| {
            let c = reg.cursor(me, r.slot);
            table::live_epoch(reg, r.slot) == Some(r.epoch)
                && c.state.load(Ordering::Relaxed) == ACTIVE
                && c.epoch.load(Ordering::Relaxed) == r.epoch
        });
        for i in (0..reg.slots()).filter(|&i| i != me) {
            let Some(e) = table::live_epoch(reg, i) else {
                continue;
            };
            let c = reg.cursor(me, i);
            // Acquire: pairs with the Release store of the state by the member that set it.
            let state = c.state.load(Ordering::Acquire);
            if c.epoch.load(Ordering::Relaxed) != e || self.readers.iter().any(|r| r.slot == i) {
                continue;
            }
            let pos = match state {
                JOINING => {
                    c.pos.store(tail, Ordering::Relaxed);
                    // Release: the reader that sees it active sees its position.
                    c.state.store(ACTIVE, Ordering::Release);
                    let_in = true;
                    tail
                }
                ACTIVE => c.pos.load(Ordering::Acquire),
                _ => continue,
            };
            self.readers.push(Reader {
                slot: i,
                epoch: e,
                pos,
            });
        }
        let_in
    }

    /// Re-reads every reader's cursor and gives the slowest to the producer. A reader
    /// whose cursor is impossible (backwards, ahead of what we wrote, more than a ring
    /// behind) is let go: its cursor goes inactive, as if it had left.
    pub(super) fn refresh(&mut self, reg: &Registry, me: usize) {
        let tail = self.producer.position();
        let cap = reg.ring_capacity() as u64;
        let mut low = tail;
        let mut dropped = false;
        self.readers.retain_mut(|r| {
            let c = reg.cursor(me, r.slot);
            // Acquire: pairs with the reader's Release store in `Consumer::flush`: what it
            // copied out is not overwritten under it.
            let pos = c.pos.load(Ordering::Acquire);
            if c.state.load(Ordering::Relaxed) != ACTIVE
                || c.epoch.load(Ordering::Relaxed) != r.epoch
            {
                return false; // left
            }
            if pos < r.pos || pos > tail || tail - pos > cap {
                c.state.store(INACTIVE, Ordering::Release);
                dropped = true;
                return false;
            }
            r.pos = pos;
            low = low.min(pos);
            true
        });
        if low >= self.low && self.producer.set_head(low).is_ok() {
            self.low = low;
        }
        if dropped {
            table::bump(reg);
        }
    }

    /// Whether a record of `len` payload bytes fits, after a refresh.
    pub(super) fn room_for(&mut self, reg: &Registry, me: usize, len: usize) -> bool {
        self.refresh(reg, me);
        self.producer.has_room_for(len)
    }

    /// The slowest reader's cursor when last refreshed.
    pub(super) fn low(&self) -> u64 {
        self.low
    }

    /// The slots of the readers at the slowest cursor (those a full ring waits for).
    pub(super) fn slowest(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.readers
            .iter()
            .filter(|r| r.pos == self.low)
            .map(|r| (r.slot, r.epoch))
    }
}
