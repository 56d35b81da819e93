//! The two shmport transports: a fresh `ArrayBuffer` per frame moved in the transfer list,
//! and a fresh `Vec<u8>` per frame posted as a plain message (copied into the ring, or into
//! shared memory beside it when it is larger than half the ring).
//!
//! Both run over a data channel of their own with default options (except the wait strategy
//! under `--busy-poll`); the receiver acknowledges every half credit window on the same
//! channel's other direction.

use shmport::{ArrayBuffer, MessageChannel, MessagePort, WaitStrategy};

use crate::Result;
use crate::frame::{self, FrameSink, FrameSource};
use crate::protocol::Transport;

/// The frame a sender fills: one small function, so the constructor is easy to switch (to
/// an unzeroed one, say) and every caller follows.
pub fn fresh_frame(len: usize) -> Result<ArrayBuffer> {
    // Every byte is written before it is sent: no need to zero it first.
    Ok(ArrayBuffer::new_unzeroed(len)?)
}

/// The wait strategy both ends of a data channel use.
pub fn wait_strategy(busy_poll: bool) -> WaitStrategy {
    if busy_poll {
        WaitStrategy::BusyPoll
    } else {
        WaitStrategy::default()
    }
}

/// A data channel for one measurement.
pub fn data_channel(busy_poll: bool) -> Result<MessageChannel> {
    Ok(MessageChannel::builder()
        .wait_strategy(wait_strategy(busy_poll))
        .build()?)
}

/// The sending half of a shmport transport.
pub fn sink(transport: Transport, port: MessagePort, frame_len: usize) -> Box<dyn FrameSink> {
    match transport {
        Transport::ShmportBuffer => Box::new(BufferSink { port, frame_len }),
        _ => Box::new(PlainSink { port, frame_len }),
    }
}

/// The receiving half of a shmport transport.
pub fn source(transport: Transport, port: MessagePort) -> Box<dyn FrameSource> {
    match transport {
        Transport::ShmportBuffer => Box::new(BufferSource { port }),
        _ => Box::new(PlainSource { port }),
    }
}

fn wait_ack(port: &MessagePort) -> Result<u64> {
    Ok(port.recv::<u64>()?.data)
}

fn ack(port: &MessagePort, consumed: u64) -> Result<()> {
    Ok(port.post_message(&consumed, [])?)
}

struct BufferSink {
    port: MessagePort,
    frame_len: usize,
}

impl FrameSink for BufferSink {
    fn send(&mut self, tag: u64) -> Result<()> {
        let mut buf = fresh_frame(self.frame_len)?;
        frame::fill(&mut buf, tag);
        Ok(self.port.post_message(&tag, [buf.into()])?)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        wait_ack(&self.port)
    }
}

struct BufferSource {
    port: MessagePort,
}

impl FrameSource for BufferSource {
    fn recv(&mut self) -> Result<u64> {
        let mut ev = self.port.recv::<u64>()?;
        let buf = ev
            .buffers
            .pop()
            .ok_or("a frame message without its buffer")?;
        let tag = frame::check(&buf)?;
        if tag != ev.data {
            return Err(format!("message {} carried frame {tag}", ev.data).into());
        }
        Ok(tag)
    }

    fn ack(&mut self, consumed: u64) -> Result<()> {
        ack(&self.port, consumed)
    }
}

struct PlainSink {
    port: MessagePort,
    frame_len: usize,
}

impl FrameSink for PlainSink {
    fn send(&mut self, tag: u64) -> Result<()> {
        let frame = frame::fresh_vec(self.frame_len, tag);
        Ok(self.port.post_message(&frame, [])?)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        wait_ack(&self.port)
    }
}

struct PlainSource {
    port: MessagePort,
}

impl FrameSource for PlainSource {
    fn recv(&mut self) -> Result<u64> {
        self.port
            .recv_archived::<Vec<u8>, _>(|v| frame::check(v.as_slice()))?
            .data
    }

    fn ack(&mut self, consumed: u64) -> Result<()> {
        ack(&self.port, consumed)
    }
}
