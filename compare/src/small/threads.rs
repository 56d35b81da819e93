//! Between two threads of the parent: the in-process ceilings. rtrb (a wait-free SPSC ring;
//! both sides spin on `push`/`pop`, there is nothing to block on) and crossbeam-channel
//! (`bounded`, its blocking `send`/`recv`, which spin briefly before they park), each
//! carrying `[u8; N]`; and the cache-line floor between threads. Two queues, one each way.
//! Threads are not pinned (nor are the processes).

use crossbeam_channel::{Receiver, Sender};
use rtrb::{Consumer, Producer, PushError};

use super::floor::{End, Line};
use super::pair::Pair;
use super::rtt::{self, Echoer, Pinger};
use super::shm::with_size;
use super::{Kind, spin};
use crate::Result;
use crate::frame::{self, FrameSink, FrameSource, Plan};
use crate::stats::Side;

/// Queue capacity, in messages, for throughput (shmport's default ring holds about 1,400
/// records of a 64-byte message); round trips have one message in flight.
pub const THROUGHPUT_CAPACITY: usize = 1024;
const ROUND_TRIP_CAPACITY: usize = 16;

/// Round trips between two threads: the times in order and the pinging thread's side.
/// `with_floor`: rtrb's alternate with the floor between threads (see `pair`).
pub fn round_trips(
    kind: Kind,
    size: usize,
    warmup: u64,
    rounds: u64,
    with_floor: bool,
) -> Result<(Vec<u64>, Side)> {
    match kind {
        Kind::FloorThreads => {
            let line = Line::default();
            trips(End::pinger(&line.0), End::echoer(&line.0), warmup, rounds)
        }
        Kind::RtrbThreads if with_floor => with_size!(size, rtrb_trips_with_floor(warmup, rounds)),
        Kind::RtrbThreads => with_size!(size, rtrb_trips(warmup, rounds)),
        Kind::CrossbeamThreads => with_size!(size, crossbeam_trips(warmup, rounds)),
        other => Err(format!("{} does not run between threads", other.label()).into()),
    }
}

/// One-way throughput between two threads: the sender's and the receiver's sides.
pub fn throughput(kind: Kind, size: usize, plan: &Plan) -> Result<(Side, Side)> {
    match kind {
        Kind::RtrbThreads => with_size!(size, rtrb_flow(plan)),
        Kind::CrossbeamThreads => with_size!(size, crossbeam_flow(plan)),
        other => Err(format!("{} has no throughput between threads", other.label()).into()),
    }
}

fn rtrb_trips<const N: usize>(warmup: u64, rounds: u64) -> Result<(Vec<u64>, Side)> {
    let (a, b) = Rtrb::<N>::pair(ROUND_TRIP_CAPACITY);
    trips(a, b, warmup, rounds)
}

fn rtrb_trips_with_floor<const N: usize>(warmup: u64, rounds: u64) -> Result<(Vec<u64>, Side)> {
    let line = Line::default();
    let (a, b) = Rtrb::<N>::pair(ROUND_TRIP_CAPACITY);
    let pinger = Pair::new(End::pinger(&line.0), a);
    let echoer = Pair::new(End::echoer(&line.0), b);
    trips(pinger, echoer, warmup, rounds)
}

fn crossbeam_trips<const N: usize>(warmup: u64, rounds: u64) -> Result<(Vec<u64>, Side)> {
    let (a, b) = Crossbeam::<N>::pair(ROUND_TRIP_CAPACITY);
    trips(a, b, warmup, rounds)
}

fn rtrb_flow<const N: usize>(plan: &Plan) -> Result<(Side, Side)> {
    let (a, b) = Rtrb::<N>::pair(THROUGHPUT_CAPACITY);
    flow(a, b, plan)
}

fn crossbeam_flow<const N: usize>(plan: &Plan) -> Result<(Side, Side)> {
    let (a, b) = Crossbeam::<N>::pair(THROUGHPUT_CAPACITY);
    flow(a, b, plan)
}

/// `pinger` on this thread, `echoer` on a new one.
fn trips<P: Pinger, E: Echoer + Send>(
    mut pinger: P,
    mut echoer: E,
    warmup: u64,
    rounds: u64,
) -> Result<(Vec<u64>, Side)> {
    std::thread::scope(|s| {
        let echo =
            s.spawn(move || rtt::echo_all(&mut echoer, warmup, rounds).map_err(|e| e.to_string()));
        let timed = rtt::time_round_trips(&mut pinger, warmup, rounds);
        drop(pinger);
        echo.join().map_err(|_| "the echoing thread panicked")??;
        timed
    })
}

/// `sink` sends on this thread, `source` receives on a new one.
fn flow<S: FrameSink, R: FrameSource + Send>(
    mut sink: S,
    mut source: R,
    plan: &Plan,
) -> Result<(Side, Side)> {
    std::thread::scope(|s| {
        let receiver =
            s.spawn(move || frame::receive_frames(&mut source, None).map_err(|e| e.to_string()));
        let sent = frame::send_frames(&mut sink, plan);
        drop(sink);
        let received = receiver
            .join()
            .map_err(|_| "the receiving thread panicked")??;
        Ok((sent?, received))
    })
}

/// One end of two rtrb rings, one each way.
struct Rtrb<const N: usize> {
    tx: Producer<[u8; N]>,
    rx: Consumer<[u8; N]>,
}

impl<const N: usize> Rtrb<N> {
    fn pair(capacity: usize) -> (Rtrb<N>, Rtrb<N>) {
        let (a_tx, b_rx) = rtrb::RingBuffer::new(capacity);
        let (b_tx, a_rx) = rtrb::RingBuffer::new(capacity);
        (Rtrb { tx: a_tx, rx: a_rx }, Rtrb { tx: b_tx, rx: b_rx })
    }

    fn push(&mut self, msg: [u8; N]) -> Result<()> {
        let mut slot = Some(msg);
        spin::until(|| match self.tx.push(slot.take().ok_or("pushed twice")?) {
            Ok(()) => Ok(Some(())),
            Err(PushError::Full(back)) => {
                slot = Some(back);
                Ok(None)
            }
        })
    }

    fn pop(&mut self) -> Result<[u8; N]> {
        spin::until(|| Ok(self.rx.pop().ok()))
    }
}

impl<const N: usize> Pinger for Rtrb<N> {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        let mut msg = [0u8; N];
        rtt::stamp(&mut msg, seq);
        self.push(msg)?;
        rtt::expect(&self.pop()?, seq)
    }
}

impl<const N: usize> Echoer for Rtrb<N> {
    fn echo(&mut self, seq: u64) -> Result<()> {
        let msg = self.pop()?;
        rtt::expect(&msg, seq)?;
        self.push(msg)
    }
}

impl<const N: usize> FrameSink for Rtrb<N> {
    fn send(&mut self, tag: u64) -> Result<()> {
        let mut msg = [0u8; N];
        frame::fill(&mut msg, tag);
        self.push(msg)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("small messages run without a credit window".into())
    }
}

impl<const N: usize> FrameSource for Rtrb<N> {
    fn recv(&mut self) -> Result<u64> {
        frame::check(&self.pop()?)
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}

/// One end of two bounded crossbeam channels, one each way.
struct Crossbeam<const N: usize> {
    tx: Sender<[u8; N]>,
    rx: Receiver<[u8; N]>,
}

impl<const N: usize> Crossbeam<N> {
    fn pair(capacity: usize) -> (Crossbeam<N>, Crossbeam<N>) {
        let (a_tx, b_rx) = crossbeam_channel::bounded(capacity);
        let (b_tx, a_rx) = crossbeam_channel::bounded(capacity);
        (
            Crossbeam { tx: a_tx, rx: a_rx },
            Crossbeam { tx: b_tx, rx: b_rx },
        )
    }
}

impl<const N: usize> Pinger for Crossbeam<N> {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        let mut msg = [0u8; N];
        rtt::stamp(&mut msg, seq);
        self.tx.send(msg)?;
        rtt::expect(&self.rx.recv()?, seq)
    }
}

impl<const N: usize> Echoer for Crossbeam<N> {
    fn echo(&mut self, seq: u64) -> Result<()> {
        let msg = self.rx.recv()?;
        rtt::expect(&msg, seq)?;
        Ok(self.tx.send(msg)?)
    }
}

impl<const N: usize> FrameSink for Crossbeam<N> {
    fn send(&mut self, tag: u64) -> Result<()> {
        let mut msg = [0u8; N];
        frame::fill(&mut msg, tag);
        Ok(self.tx.send(msg)?)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("small messages run without a credit window".into())
    }
}

impl<const N: usize> FrameSource for Crossbeam<N> {
    fn recv(&mut self) -> Result<u64> {
        frame::check(&self.rx.recv()?)
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}
