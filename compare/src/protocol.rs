//! What the parent and the child say to each other on the control port (the shmport port
//! handed over by `shmport::spawn`), outside every timed stretch.

use shmport::MessagePort;
use shmport::rkyv::{Archive, Deserialize, Serialize};

use crate::Result;
use crate::stats::Side;

/// A transport of the pipeline comparison.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = shmport::rkyv)]
pub enum Transport {
    /// A fresh `shmport::ArrayBuffer` per frame, moved in the transfer list.
    ShmportBuffer,
    /// A fresh `Vec<u8>` per frame, posted as a plain (copied) message.
    ShmportPlain,
    /// iceoryx2 publish-subscribe: loan, fill, send.
    Iceoryx2,
    /// A Unix stream socket: `write_all`, `read_exact`.
    UnixSocket,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::ShmportBuffer,
        Transport::ShmportPlain,
        Transport::Iceoryx2,
        Transport::UnixSocket,
    ];

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Transport::ShmportBuffer => "shmport ArrayBuffer",
            Transport::ShmportPlain => "shmport Vec<u8>",
            Transport::Iceoryx2 => "iceoryx2 loan",
            Transport::UnixSocket => "Unix socket",
        }
    }

    /// The name in `RESULT` lines.
    pub fn key(self) -> &'static str {
        match self {
            Transport::ShmportBuffer => "shmport-arraybuffer",
            Transport::ShmportPlain => "shmport-plain-vec",
            Transport::Iceoryx2 => "iceoryx2",
            Transport::UnixSocket => "unix-socket",
        }
    }
}

/// What a transfer-latency round trip carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = shmport::rkyv)]
pub enum Carried {
    /// A plain 64-byte message.
    Plain64,
    /// An `ArrayBuffer` of this many bytes in the transfer list (the message is a `u64`).
    Buffer(u64),
}

/// Parent to child.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = shmport::rkyv)]
pub enum ToChild {
    /// Receive one pipeline measurement. A shmport transport's data port is the one port in
    /// the transfer list; iceoryx2 opens `service`; the Unix socket connects to `socket`.
    Receive {
        transport: Transport,
        frame_len: u64,
        /// Frames in flight at most (see `pipeline::credits`).
        window: u64,
        busy_poll: bool,
        service: String,
        socket: String,
    },
    /// Send back each of `warmup + rounds` messages of this kind on the control port, then
    /// report the last `rounds`.
    Echo {
        carried: Carried,
        warmup: u64,
        rounds: u64,
        busy_poll: bool,
    },
    /// One small-message measurement (see `small`); a shmport data port travels in the
    /// transfer list.
    Small(crate::small::Order),
    Exit,
}

/// Child to parent.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = shmport::rkyv)]
pub enum FromChild {
    /// Set up and waiting for the first frame.
    Ready,
    /// The receiver's side of a measurement.
    Done(Side),
    /// What went wrong; the child waits for the next command.
    Failed(String),
}

/// Waits for the child's [`FromChild::Ready`].
pub fn expect_ready(ctl: &MessagePort) -> Result<()> {
    match ctl.recv::<FromChild>()?.data {
        FromChild::Ready => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Waits for the child's [`FromChild::Done`].
pub fn expect_done(ctl: &MessagePort) -> Result<Side> {
    match ctl.recv::<FromChild>()?.data {
        FromChild::Done(side) => Ok(side),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: FromChild) -> Box<dyn std::error::Error> {
    match reply {
        FromChild::Failed(why) => format!("the child failed: {why}").into(),
        other => format!("the child answered {other:?} out of turn").into(),
    }
}
