//! A floor and a transport measured together: round trips alternate between them in chunks
//! of [`CHUNK`], on both sides, so the two are measured over the same seconds. On a VM the
//! host moves the virtual CPUs between physical cores from one second to the next, and the
//! floor with them (80 to 450 ns here); a floor measured a second before the transport can
//! belong to another placement. Interleaved, the ratio compares like with like.

use super::rtt::{Echoer, Pinger};
use crate::Result;
use crate::frame::{FrameSink, FrameSource};

/// Round trips in a row on one side of the pair before it switches.
pub const CHUNK: u64 = 500;

/// Which of the pair round trip `seq` (counted over both) goes to: 0 for `floor`, 1 for
/// `link`.
pub fn side_of(seq: u64) -> usize {
    ((seq / CHUNK) % 2) as usize
}

/// The floor and the transport, taking turns.
pub struct Pair<A, B> {
    floor: A,
    link: B,
    /// Round trips done on each, which number each one's own sequence.
    done: [u64; 2],
}

impl<A, B> Pair<A, B> {
    pub fn new(floor: A, link: B) -> Pair<A, B> {
        Pair {
            floor,
            link,
            done: [0, 0],
        }
    }

    /// The side `seq` goes to, and that side's own sequence number for it.
    fn route(&mut self, seq: u64) -> (usize, u64) {
        let side = side_of(seq);
        let own = self.done[side];
        self.done[side] += 1;
        (side, own)
    }
}

impl<A: Pinger, B: Pinger> Pinger for Pair<A, B> {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        match self.route(seq) {
            (0, own) => self.floor.round_trip(own),
            (_, own) => self.link.round_trip(own),
        }
    }
}

impl<A: Echoer, B: Echoer> Echoer for Pair<A, B> {
    fn echo(&mut self, seq: u64) -> Result<()> {
        match self.route(seq) {
            (0, own) => self.floor.echo(own),
            (_, own) => self.link.echo(own),
        }
    }
}

impl<A, B: FrameSink> FrameSink for Pair<A, B> {
    fn send(&mut self, tag: u64) -> Result<()> {
        self.link.send(tag)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        self.link.wait_ack()
    }
}

impl<A, B: FrameSource> FrameSource for Pair<A, B> {
    fn recv(&mut self) -> Result<u64> {
        self.link.recv()
    }

    fn ack(&mut self, consumed: u64) -> Result<()> {
        self.link.ack(consumed)
    }
}

/// Splits the timed samples of a pair (`ns[i]` is round trip `warmup + i`) into the
/// floor's and the transport's.
pub fn split(ns: &[u64], warmup: u64) -> (Vec<u64>, Vec<u64>) {
    let mut sides = (
        Vec::with_capacity(ns.len() / 2),
        Vec::with_capacity(ns.len() / 2),
    );
    for (i, &t) in ns.iter().enumerate() {
        if side_of(warmup + i as u64) == 0 {
            sides.0.push(t);
        } else {
            sides.1.push(t);
        }
    }
    sides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_alternate_in_chunks_and_split_back() {
        assert_eq!(side_of(0), 0);
        assert_eq!(side_of(CHUNK - 1), 0);
        assert_eq!(side_of(CHUNK), 1);
        assert_eq!(side_of(2 * CHUNK), 0);
        let ns: Vec<u64> = (0..4 * CHUNK).collect();
        let (floor, link) = split(&ns, 1);
        assert_eq!(floor.len() + link.len(), ns.len());
        assert!(floor.iter().all(|&i| side_of(1 + i) == 0));
        assert!(link.iter().all(|&i| side_of(1 + i) == 1));
    }
}
