//! Per-port counters, kept where the work happens anyway: one add per post, and the rest
//! only on the paths that wait.

use super::*;

/// What a port did so far: [`MessagePort::stats`]. Counted per handle (a port that moves
/// to another process starts again from zero there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortStats {
    /// Records published: messages posted (a message too large for the ring counts once).
    pub posts: u64,
    /// Waits of posts for room: in the peer's ring, under the queued-bytes bound, or in the
    /// cache window (a wait there counts once per 2 ms slice; see
    /// [`MessagePort::set_max_queued_bytes`](crate::MessagePort::set_max_queued_bytes)).
    pub waits_for_room: u64,
    /// Of those waits, the futex sleeps they took (spinning first may have sufficed).
    pub sleeps_for_room: u64,
    /// Blocking receives that found the queue empty and waited.
    pub waits_for_messages: u64,
    /// Of those waits, the futex sleeps they took.
    pub sleeps_for_messages: u64,
}

impl MessagePort {
    /// This port's counters: how many messages it posted, and how often posting and
    /// receiving had to wait (and sleep). Costs nothing to keep: one add per post; the
    /// others count on the waiting paths only.
    ///
    /// ```
    /// let ch = shmport::MessageChannel::new()?;
    /// ch.port1.post_message(&1u8, [])?;
    /// ch.port2.recv::<u8>()?;
    /// assert_eq!(ch.port1.stats().posts, 1);
    /// assert_eq!(ch.port2.stats().waits_for_messages, 0); // it was there already
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> PortStats {
        let (waits_for_room, sleeps_for_room) = self.send_wait.counts();
        let (waits_for_messages, sleeps_for_messages) = self.recv_wait.counts();
        PortStats {
            posts: self.posts.get(),
            waits_for_room,
            sleeps_for_room,
            waits_for_messages,
            sleeps_for_messages,
        }
    }
}
