//! The pooled slots a port has posted and its peer may not have received yet: freed by
//! the sender when the receiving end is gone for good (its process was killed), which
//! nobody else can notice. A receiver that closes normally frees what was queued for it
//! itself (`discard_incoming`).

use crate::shm::buffer::ArrayBuffer;
use crate::shm::heap::SlotInTransit;
use crate::sys;

use super::MessagePort;

/// The slots, pruned of the received ones whenever their number doubles: a port keeps at
/// most about twice as many as are really in flight (and their heaps mapped).
#[derive(Default)]
pub(super) struct InFlight {
    slots: Vec<SlotInTransit>,
    prune_at: usize,
}

/// Fewest slots remembered before the first prune.
const PRUNE_FROM: usize = 64;

impl InFlight {
    fn remember(&mut self, slot: SlotInTransit) {
        if self.slots.len() >= self.prune_at {
            self.slots.retain(SlotInTransit::pending);
            self.prune_at = (2 * self.slots.len()).max(PRUNE_FROM);
        }
        self.slots.push(slot);
    }
}

impl MessagePort {
    /// Remembers the pooled slots of buffers (and a body) just posted.
    pub(super) fn remember_in_flight<'a>(&self, buffers: impl Iterator<Item = &'a ArrayBuffer>) {
        let mut in_flight = self.in_flight.borrow_mut();
        for slot in buffers.filter_map(ArrayBuffer::slot_in_transit) {
            in_flight.remember(slot);
        }
    }

    /// At drop: frees the slots still in transit if the peer's end is gone (every
    /// descriptor of it closed: killed, or closed after it stopped receiving). A peer that
    /// is only slow keeps them: it may still receive what was posted before our close.
    pub(super) fn free_in_flight_if_peer_gone(&self) {
        let slots = std::mem::take(&mut self.in_flight.borrow_mut().slots);
        if slots.is_empty() {
            return;
        }
        let gone = self.sock.get().is_some_and(|s| {
            use std::os::fd::AsFd;
            sys::peer_hung_up(s.as_fd())
        });
        if gone {
            let freed = slots.iter().filter(|s| s.reclaim()).count();
            if freed > 0 {
                event!(
                    debug,
                    "port: freed {freed} pooled slots its gone peer never received"
                );
            }
        }
    }
}
