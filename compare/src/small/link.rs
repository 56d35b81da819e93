//! A transport's two ends between the processes, set up the same way for round trips and
//! throughput: the parent prepares its side, orders the child (which connects and says
//! ready), then finishes connecting.

use shmport::{MessageChannel, MessagePort, WaitStrategy};

use super::pair::Pair;
use super::rtt::{Echoer, Pinger};
use super::{Kind, Order, Test, floor, ice, ipc, order_child, shm, sock};
use crate::Result;
use crate::frame::{FrameSink, FrameSource};
use crate::socket::Listener;

/// What one end of a transport does: the parent pings and sends frames, the child echoes
/// and receives them.
pub trait Link: Pinger + Echoer + FrameSink + FrameSource {}

impl<T: Pinger + Echoer + FrameSink + FrameSource> Link for T {}

/// What the parent sets transports up with.
pub struct Parent<'a> {
    pub ctl: &'a MessagePort,
    pub floor: &'a floor::SharedLine,
    pub listener: &'a Listener,
    pub size: usize,
}

/// iceoryx2's queue per subscriber for throughput (shmport's default ring holds about
/// 1,400 records of a 64-byte message); a round trip has one message in flight.
pub const ICEORYX_THROUGHPUT_QUEUE: usize = 1024;

/// The wait strategy of a shmport kind.
pub fn wait_strategy(kind: Kind) -> WaitStrategy {
    match kind {
        Kind::ShmportBusyPoll => WaitStrategy::BusyPoll,
        Kind::ShmportBlock => WaitStrategy::Block,
        _ => WaitStrategy::Adaptive,
    }
}

fn queue(test: Test) -> usize {
    match test {
        Test::RoundTrip { .. } => 2,
        Test::Throughput => ICEORYX_THROUGHPUT_QUEUE,
    }
}

impl Parent<'_> {
    /// Sets up `kind` for `test` with the child; the parent's end. `partner`: round trips
    /// alternate with that transport's (the cross-process floor, or the Unix socket for
    /// shmport's blocking receive; see `pair`).
    pub fn connect(
        &self,
        kind: Kind,
        test: Test,
        partner: Option<Kind>,
    ) -> Result<Box<dyn Link + '_>> {
        let partner = partner.filter(|&p| p != kind);
        let mut order = Order {
            kind,
            test,
            size: self.size as u64,
            name: String::new(),
            partner,
        };
        // Before the order: the pinger's side resets the count the child then follows.
        let floor =
            (partner == Some(Kind::Floor)).then(|| floor::End::pinger(self.floor.counter()));
        if partner == Some(Kind::UnixSocket) {
            order.name = self.listener.path().to_string_lossy().into_owned();
        }
        let link: Box<dyn Link + '_> = match kind {
            Kind::Floor => {
                let end = floor::End::pinger(self.floor.counter());
                order_child(self.ctl, order, vec![])?;
                Box::new(end)
            }
            Kind::ShmportBusyPoll | Kind::ShmportAdaptive | Kind::ShmportBlock => {
                let ch = MessageChannel::builder()
                    .wait_strategy(wait_strategy(kind))
                    .build()?;
                order_child(self.ctl, order, vec![ch.port2])?;
                shm::link(self.size, ch.port1)?
            }
            Kind::Iceoryx2Poll | Kind::Iceoryx2Listener => {
                order.name = ice::service_prefix();
                let blocking = kind == Kind::Iceoryx2Listener;
                let ends = ice::Ends::new(&order.name, self.size, queue(test), blocking, true)?;
                order_child(self.ctl, order, vec![])?;
                Box::new(ends.connected()?)
            }
            Kind::IpcChannel => {
                let (server, name) = ipc::server()?;
                order.name = name;
                order_child(self.ctl, order, vec![])?;
                Box::new(ipc::accept(server, self.size)?)
            }
            Kind::UnixSocket => {
                order.name = self.listener.path().to_string_lossy().into_owned();
                order_child(self.ctl, order, vec![])?;
                Box::new(sock::Ends::new(self.listener.accept_stream()?, self.size))
            }
            Kind::FloorThreads | Kind::RtrbThreads | Kind::CrossbeamThreads => {
                return Err(format!("{} runs between threads", kind.label()).into());
            }
        };
        Ok(match (floor, partner) {
            (Some(floor), _) => Box::new(Pair::new(floor, link)),
            (None, Some(Kind::UnixSocket)) => {
                let socket = sock::Ends::new(self.listener.accept_stream()?, self.size);
                Box::new(Pair::new(socket, link))
            }
            _ => link,
        })
    }
}

/// The child's end of the transport `order` names.
pub fn child(order: &Order, mut ports: Vec<MessagePort>) -> Result<Box<dyn Link>> {
    let size = order.size as usize;
    let link: Box<dyn Link> = match order.kind {
        Kind::Floor => Box::new(floor::End::echoer(floor::inherited()?.counter())),
        Kind::ShmportBusyPoll | Kind::ShmportAdaptive | Kind::ShmportBlock => {
            let port = ports.pop().ok_or("no data port in the transfer list")?;
            port.set_wait_strategy(wait_strategy(order.kind));
            shm::link(size, port)?
        }
        Kind::Iceoryx2Poll | Kind::Iceoryx2Listener => {
            let blocking = order.kind == Kind::Iceoryx2Listener;
            let ends = ice::Ends::new(&order.name, size, queue(order.test), blocking, false)?;
            Box::new(ends.connected()?)
        }
        Kind::IpcChannel => Box::new(ipc::connect(&order.name, size)?),
        Kind::UnixSocket => Box::new(sock::Ends::connect(&order.name, size)?),
        Kind::FloorThreads | Kind::RtrbThreads | Kind::CrossbeamThreads => {
            return Err("a thread transport was ordered to the child".into());
        }
    };
    Ok(match order.partner {
        Some(Kind::Floor) => {
            let floor = floor::End::echoer(floor::inherited()?.counter());
            Box::new(Pair::new(floor, link))
        }
        Some(Kind::UnixSocket) => {
            Box::new(Pair::new(sock::Ends::connect(&order.name, size)?, link))
        }
        _ => link,
    })
}
