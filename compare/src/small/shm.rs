//! shmport: a `[u8; N]` per message, `post_message` and `recv` on a data channel of its own
//! with default options but the wait strategy. The message is what a user with a fixed-size
//! message sends; N must be a compile-time constant, hence [`SIZES`](super::SIZES) and the
//! dispatch below.

use shmport::MessagePort;

use super::link::Link;
use super::rtt::{self, Echoer, Pinger};
use crate::Result;
use crate::frame::{self, FrameSink, FrameSource};

/// Calls `$f::<N>($args)` for the `N` that equals `$size`, one of [`super::SIZES`].
macro_rules! with_size {
    ($size:expr, $f:ident($($arg:expr),*)) => {
        match $size {
            8 => $f::<8>($($arg),*),
            16 => $f::<16>($($arg),*),
            32 => $f::<32>($($arg),*),
            64 => $f::<64>($($arg),*),
            128 => $f::<128>($($arg),*),
            256 => $f::<256>($($arg),*),
            512 => $f::<512>($($arg),*),
            1024 => $f::<1024>($($arg),*),
            2048 => $f::<2048>($($arg),*),
            4096 => $f::<4096>($($arg),*),
            other => Err(format!("--size {other} is not one of {:?}", super::SIZES).into()),
        }
    };
}
pub(crate) use with_size;

/// A shmport end carrying `[u8; size]` messages.
pub fn link(size: usize, port: MessagePort) -> Result<Box<dyn Link>> {
    with_size!(size, boxed(port))
}

fn boxed<const N: usize>(port: MessagePort) -> Result<Box<dyn Link>> {
    Ok(Box::new(Ends::<N>(port)))
}

struct Ends<const N: usize>(MessagePort);

impl<const N: usize> Pinger for Ends<N> {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        let mut msg = [0u8; N];
        rtt::stamp(&mut msg, seq);
        self.0.post_message(&msg, [])?;
        rtt::expect(&self.0.recv::<[u8; N]>()?.data, seq)
    }
}

impl<const N: usize> Echoer for Ends<N> {
    fn echo(&mut self, seq: u64) -> Result<()> {
        let msg = self.0.recv::<[u8; N]>()?.data;
        rtt::expect(&msg, seq)?;
        Ok(self.0.post_message(&msg, [])?)
    }
}

impl<const N: usize> FrameSink for Ends<N> {
    fn send(&mut self, tag: u64) -> Result<()> {
        let mut msg = [0u8; N];
        frame::fill(&mut msg, tag);
        Ok(self.0.post_message(&msg, [])?)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("small messages run without a credit window".into())
    }
}

impl<const N: usize> FrameSource for Ends<N> {
    fn recv(&mut self) -> Result<u64> {
        frame::check(&self.0.recv::<[u8; N]>()?.data)
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}
