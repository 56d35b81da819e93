//! A Unix stream socket: `write_all` of the message, `read_exact` of one message into a
//! reused buffer, blocking (what a user of `std::os::unix::net` writes). The parent's end
//! comes from the listener `pipeline` uses too.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::rtt::{self, Echoer, Pinger};
use crate::Result;
use crate::frame::{self, FrameSink, FrameSource};

pub struct Ends {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Ends {
    pub fn new(stream: UnixStream, size: usize) -> Ends {
        Ends {
            stream,
            buf: vec![0; size],
        }
    }

    pub fn connect(path: &str, size: usize) -> Result<Ends> {
        Ok(Ends::new(UnixStream::connect(path)?, size))
    }
}

impl Pinger for Ends {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        rtt::stamp(&mut self.buf, seq);
        self.stream.write_all(&self.buf)?;
        self.stream.read_exact(&mut self.buf)?;
        rtt::expect(&self.buf, seq)
    }
}

impl Echoer for Ends {
    fn echo(&mut self, seq: u64) -> Result<()> {
        self.stream.read_exact(&mut self.buf)?;
        rtt::expect(&self.buf, seq)?;
        Ok(self.stream.write_all(&self.buf)?)
    }
}

impl FrameSink for Ends {
    fn send(&mut self, tag: u64) -> Result<()> {
        frame::fill(&mut self.buf, tag);
        Ok(self.stream.write_all(&self.buf)?)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("small messages run without a credit window".into())
    }
}

impl FrameSource for Ends {
    fn recv(&mut self) -> Result<u64> {
        self.stream.read_exact(&mut self.buf)?;
        frame::check(&self.buf)
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}
