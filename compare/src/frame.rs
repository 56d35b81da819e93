//! A frame's contents, and the sender and receiver loops every transport shares.
//!
//! A frame's first 8 bytes are its tag: the sequence number plus the two flags below, little
//! endian. Every other byte holds a value derived from the sequence number, so a receiver
//! that checks every byte catches a frame that is stale, shifted, torn or out of order.

use std::time::{Duration, Instant};

use crate::Result;
use crate::stats::{Side, Usage};

/// The first frame of the timed stretch (the ones before it are warm-up).
pub const FIRST: u64 = 1 << 62;
/// The last frame: the receiver reports once it has checked it.
pub const LAST: u64 = 1 << 63;
const FLAGS: u64 = FIRST | LAST;

/// The smallest frame: it must hold the tag.
pub const MIN_FRAME: usize = 8;

/// At least this many timed frames, however long they take.
const MIN_TIMED_FRAMES: u64 = 8;

/// The sequence number in a tag.
pub fn seq_of(tag: u64) -> u64 {
    tag & !FLAGS
}

/// The byte every position after the tag holds in frame `seq`.
pub fn fill_byte(seq: u64) -> u8 {
    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Writes every byte of `frame`: the fill byte, then the tag over the first 8.
pub fn fill(frame: &mut [u8], tag: u64) {
    frame.fill(fill_byte(seq_of(tag)));
    frame[..8].copy_from_slice(&tag.to_le_bytes());
}

/// A freshly allocated frame, every byte written once.
pub fn fresh_vec(len: usize, tag: u64) -> Vec<u8> {
    let mut frame = vec![fill_byte(seq_of(tag)); len];
    frame[..8].copy_from_slice(&tag.to_le_bytes());
    frame
}

/// Reads every byte of `frame`; its tag when they all hold what the tag says.
pub fn check(frame: &[u8]) -> Result<u64> {
    let Some((head, body)) = frame.split_first_chunk::<8>() else {
        return Err(format!("a frame of {} bytes has no tag", frame.len()).into());
    };
    let tag = u64::from_le_bytes(*head);
    let want = fill_byte(seq_of(tag));
    // One pass with no early exit, so the compiler vectorises it.
    let wrong = body.iter().fold(0u8, |acc, &b| acc | (b ^ want));
    if wrong != 0 {
        return Err(format!("frame {} has a wrong byte", seq_of(tag)).into());
    }
    Ok(tag)
}

/// The sending half of a transport.
pub trait FrameSink {
    /// Allocates a fresh frame, writes every byte of it (see [`fill`]) and sends it.
    fn send(&mut self, tag: u64) -> Result<()>;
    /// Waits for the receiver's next acknowledgement: how many frames it has consumed.
    /// Only called on transports run with a credit window.
    fn wait_ack(&mut self) -> Result<u64>;
}

/// The receiving half of a transport.
pub trait FrameSource {
    /// Receives the next frame, reads every byte of it (see [`check`]), drops it and
    /// returns its tag.
    fn recv(&mut self) -> Result<u64>;
    /// Tells the sender that `consumed` frames have been consumed.
    fn ack(&mut self, consumed: u64) -> Result<()>;
}

impl<T: FrameSink + ?Sized> FrameSink for Box<T> {
    fn send(&mut self, tag: u64) -> Result<()> {
        (**self).send(tag)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        (**self).wait_ack()
    }
}

impl<T: FrameSource + ?Sized> FrameSource for Box<T> {
    fn recv(&mut self) -> Result<u64> {
        (**self).recv()
    }

    fn ack(&mut self, consumed: u64) -> Result<()> {
        (**self).ack(consumed)
    }
}

/// How long the sender sends.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub warmup: Duration,
    pub timed: Duration,
    /// Frames in flight at most, enforced by acknowledgements from the receiver; `None` for
    /// a transport whose own queue bounds it (iceoryx2).
    pub credits: Option<u64>,
    /// Frames between two looks at the clock.
    pub clock_every: u64,
}

/// Sends warm-up frames, then timed ones; the sender's side of the timed stretch (from the
/// first timed frame's send to the last one's).
pub fn send_frames<S: FrameSink + ?Sized>(sink: &mut S, plan: &Plan) -> Result<Side> {
    let mut flow = Flow {
        credits: plan.credits,
        acked: 0,
    };
    let warm = Instant::now();
    let mut seq: u64 = 0;
    while !seq.is_multiple_of(plan.clock_every) || warm.elapsed() < plan.warmup {
        flow.send(sink, seq)?;
        seq += 1;
    }
    flow.send(sink, seq | FIRST)?;
    let (first, before, start) = (seq, Usage::now(), Instant::now());
    loop {
        seq += 1;
        let timed = seq - first;
        let last = timed >= MIN_TIMED_FRAMES
            && timed.is_multiple_of(plan.clock_every)
            && start.elapsed() >= plan.timed;
        flow.send(sink, if last { seq | LAST } else { seq })?;
        if last {
            break;
        }
    }
    let elapsed = start.elapsed();
    Ok(side(seq - first, elapsed, Usage::now().since(before)))
}

/// Receives and checks frames until the last one; the receiver's side of the timed stretch
/// (from the first timed frame's arrival to the last one's).
pub fn receive_frames<S: FrameSource + ?Sized>(
    source: &mut S,
    credits: Option<u64>,
) -> Result<Side> {
    let ack_every = credits.map(|c| (c / 2).max(1));
    let mut expected = 0;
    let mut start = None;
    loop {
        let tag = source.recv()?;
        let seq = seq_of(tag);
        if seq != expected {
            return Err(format!("frame {seq} arrived where {expected} was due").into());
        }
        expected += 1;
        if ack_every.is_some_and(|every| expected.is_multiple_of(every)) {
            source.ack(expected)?;
        }
        if tag & FIRST != 0 {
            start = Some((seq, Usage::now(), Instant::now()));
        }
        if tag & LAST != 0 {
            break;
        }
    }
    let (first, before, at) = start.ok_or("the last frame came before the first timed one")?;
    let elapsed = at.elapsed();
    Ok(side(
        expected - 1 - first,
        elapsed,
        Usage::now().since(before),
    ))
}

fn side(count: u64, elapsed: Duration, usage: Usage) -> Side {
    Side {
        count,
        elapsed_ns: elapsed.as_nanos() as u64,
        usage,
    }
}

/// The sender's credit window: frame `seq` goes out once fewer than `credits` frames are
/// unacknowledged.
struct Flow {
    credits: Option<u64>,
    acked: u64,
}

impl Flow {
    fn send<S: FrameSink + ?Sized>(&mut self, sink: &mut S, tag: u64) -> Result<()> {
        if let Some(credits) = self.credits {
            while seq_of(tag) >= self.acked + credits {
                self.acked = sink.wait_ack()?;
            }
        }
        sink.send(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_frame_checks_and_a_changed_byte_does_not() {
        let mut frame = vec![0u8; 4096];
        fill(&mut frame, 7 | LAST);
        assert_eq!(check(&frame).unwrap(), 7 | LAST);
        assert_eq!(fresh_vec(4096, 7 | LAST), frame);
        frame[4000] ^= 1;
        assert!(check(&frame).is_err());
    }
}
