//! One-way throughput: the parent sends messages as fast as the transport takes them (each
//! one written whole, with its sequence number), the child (or a second thread) receives and
//! checks every byte and the order: `frame::send_frames` and `frame::receive_frames`, as in
//! `pipeline`, without a credit window (each transport's own backpressure bounds what is in
//! flight). Msgs/s is the receiver's count over its time from the first timed message to
//! the last.

use std::time::Duration;

use super::link::Parent;
use super::{Kind, Test, threads};
use crate::frame::{self, Plan};
use crate::stats::{Side, Usage};
use crate::{Options, Result};

/// One transport's throughput.
pub struct Flow {
    pub kind: Kind,
    pub sender: Side,
    pub receiver: Side,
}

impl Flow {
    pub fn msgs_per_s(&self) -> f64 {
        self.receiver.per_second()
    }
}

pub fn plan(opts: &Options) -> Plan {
    Plan {
        warmup: if opts.quick {
            Duration::from_millis(30)
        } else {
            Duration::from_millis(100)
        },
        timed: opts.timed,
        credits: None,
        // The clock is read once per this many messages.
        clock_every: 1024,
    }
}

pub fn measure(links: &Parent<'_>, kind: Kind, opts: &Options) -> Result<Flow> {
    let plan = plan(opts);
    if kind.in_process() {
        let (sender, receiver) = threads::throughput(kind, opts.size, &plan)?;
        // One system-call counter per process: it cannot tell the two threads apart.
        let untold = |side: Side| Side {
            usage: Usage {
                syscalls: None,
                ..side.usage
            },
            ..side
        };
        return Ok(Flow {
            kind,
            sender: untold(sender),
            receiver: untold(receiver),
        });
    }
    let mut link = links.connect(kind, Test::Throughput, None)?;
    let sender = match frame::send_frames(link.as_mut(), &plan) {
        Ok(sender) => sender,
        Err(e) => {
            drop(link);
            let child = crate::protocol::expect_done(links.ctl).err();
            return Err(format!("{}: sending failed: {e} (child: {child:?})", kind.label()).into());
        }
    };
    // The sending end stays open until the child has checked the last message.
    let receiver =
        crate::protocol::expect_done(links.ctl).map_err(|e| format!("{}: {e}", kind.label()))?;
    drop(link);
    Ok(Flow {
        kind,
        sender,
        receiver,
    })
}
