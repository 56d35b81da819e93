//! ipc-channel (Servo's): a bytes channel each way (`IpcBytesSender::send(&[u8])`,
//! `IpcBytesReceiver::recv() -> Vec<u8>`), its lightest route: no serialisation. On Linux it
//! is a Unix `SOCK_SEQPACKET` socket underneath, and `recv` blocks.
//!
//! Bootstrap, as ipc-channel's docs show it: the parent makes an `IpcOneShotServer` and sends
//! its name to the child on the control port; the child makes both channels, connects and
//! sends the parent its two ends (the sender towards itself, the receiver from itself).

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};

use super::rtt::{self, Echoer, Pinger};
use crate::Result;
use crate::frame::{self, FrameSink, FrameSource};

type Boot = (IpcBytesSender, IpcBytesReceiver);

pub struct Ends {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
    buf: Vec<u8>,
}

/// The parent's one-shot server and its name.
pub fn server() -> Result<(IpcOneShotServer<Boot>, String)> {
    Ok(IpcOneShotServer::new()?)
}

/// The parent's end, once the child has connected.
pub fn accept(server: IpcOneShotServer<Boot>, size: usize) -> Result<Ends> {
    let (_, (tx, rx)) = server.accept()?;
    Ok(Ends {
        tx,
        rx,
        buf: vec![0; size],
    })
}

/// The child's end: makes both channels and hands the parent its two ends.
pub fn connect(name: &str, size: usize) -> Result<Ends> {
    let (to_child, from_parent) = ipc::bytes_channel()?;
    let (to_parent, from_child) = ipc::bytes_channel()?;
    IpcSender::<Boot>::connect(name.to_string())?.send((to_child, from_child))?;
    Ok(Ends {
        tx: to_parent,
        rx: from_parent,
        buf: vec![0; size],
    })
}

impl Pinger for Ends {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        rtt::stamp(&mut self.buf, seq);
        self.tx.send(&self.buf)?;
        rtt::expect(&self.rx.recv()?, seq)
    }
}

impl Echoer for Ends {
    fn echo(&mut self, seq: u64) -> Result<()> {
        let msg = self.rx.recv()?;
        rtt::expect(&msg, seq)?;
        Ok(self.tx.send(&msg)?)
    }
}

impl FrameSink for Ends {
    fn send(&mut self, tag: u64) -> Result<()> {
        frame::fill(&mut self.buf, tag);
        Ok(self.tx.send(&self.buf)?)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("small messages run without a credit window".into())
    }
}

impl FrameSource for Ends {
    fn recv(&mut self) -> Result<u64> {
        frame::check(&self.rx.recv()?)
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}
