//! iceoryx2 0.10: a publish-subscribe service of `[u8]` slices each way (`ping` from the
//! parent, `pong` from the child), with iceoryx2's defaults but what a lossless exchange
//! needs: safe overflow off, `RetryUntilDelivered`, no history, one publisher and one
//! subscriber each. The sender loans a slice, writes it, sends it; the receiver either
//! busy-polls `receive()` (as iceoryx2's examples do), or, in the listener variant, blocks
//! on an event service the sender notifies after each send (iceoryx2's way to wake a
//! sleeping subscriber).
//!
//! The parent creates all services; the child opens them. Service names begin with the
//! parent's pid and a counter, unique per measurement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iceoryx2::node::Node;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::event::PortFactory as EventService;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as DataService;

use super::rtt::{self, Echoer, Pinger};
use super::spin;
use crate::Result;
use crate::frame::{self, FrameSink, FrameSource};

/// How long the listener variant blocks before it looks again (and at the clock).
const LISTENER_TIMEOUT: Duration = Duration::from_millis(100);

/// A prefix no other measurement of this run (or other run) shares.
pub fn service_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("shmport-compare/{}/small-{n}", std::process::id())
}

type Data = DataService<ipc::Service, [u8], ()>;

/// The event half of the listener variant.
struct Events {
    notifier: Notifier<ipc::Service>,
    listener: Listener<ipc::Service>,
    _services: [EventService<ipc::Service>; 2],
}

pub struct Ends {
    publisher: Publisher<ipc::Service, [u8], ()>,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    events: Option<Events>,
    size: usize,
    _services: [Data; 2],
    _node: Node<ipc::Service>,
}

fn data_service(node: &Node<ipc::Service>, name: &str, queue: usize, create: bool) -> Result<Data> {
    let builder = node
        .service_builder(&name.try_into()?)
        .publish_subscribe::<[u8]>();
    Ok(if create {
        builder
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(queue)
            .subscriber_max_borrowed_samples(1)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .create()?
    } else {
        builder.open()?
    })
}

fn event_service(
    node: &Node<ipc::Service>,
    name: &str,
    create: bool,
) -> Result<EventService<ipc::Service>> {
    let builder = node.service_builder(&name.try_into()?).event();
    Ok(if create {
        builder.max_listeners(1).max_notifiers(1).create()?
    } else {
        builder.open()?
    })
}

impl Ends {
    /// The parent's ends (`create`: it makes the services) or the child's.
    pub fn new(
        prefix: &str,
        size: usize,
        queue: usize,
        blocking: bool,
        create: bool,
    ) -> Result<Ends> {
        let node = NodeBuilder::new().create::<ipc::Service>()?;
        let (ping, pong) = (format!("{prefix}/ping"), format!("{prefix}/pong"));
        let services = [
            data_service(&node, &ping, queue, create)?,
            data_service(&node, &pong, queue, create)?,
        ];
        // The parent publishes on ping and subscribes to pong; the child the other way.
        let (out, inn) = if create { (0, 1) } else { (1, 0) };
        let (out_data, in_data) = (&services[out], &services[inn]);
        let publisher = out_data
            .publisher_builder()
            .initial_max_slice_len(size)
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()?;
        let subscriber = in_data.subscriber_builder().buffer_size(queue).create()?;
        let events = if blocking {
            let events = [
                event_service(&node, &format!("{ping}-event"), create)?,
                event_service(&node, &format!("{pong}-event"), create)?,
            ];
            Some(Events {
                notifier: events[out].notifier_builder().create()?,
                listener: events[inn].listener_builder().create()?,
                _services: events,
            })
        } else {
            None
        };
        Ok(Ends {
            publisher,
            subscriber,
            events,
            size,
            _services: services,
            _node: node,
        })
    }

    /// Connects to the other side's subscriber (which must exist by now).
    pub fn connected(self) -> Result<Ends> {
        self.publisher.update_connections()?;
        self.subscriber.update_connections()?;
        Ok(self)
    }

    fn publish(&self, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        let mut msg = [0u8; 4096];
        let msg = &mut msg[..self.size];
        fill(msg);
        let sample = self.publisher.loan_slice_uninit(self.size)?;
        if sample.write_from_slice(msg).send()? == 0 {
            return Err("no iceoryx2 subscriber was connected".into());
        }
        if let Some(ev) = &self.events {
            ev.notifier.notify()?;
        }
        Ok(())
    }

    /// The next message, handed to `read` before the sample goes back to its pool.
    fn take<T>(&self, read: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
        let sample = match &self.events {
            None => spin::until(|| Ok(self.subscriber.receive()?))?,
            Some(ev) => {
                let start = Instant::now();
                loop {
                    if let Some(sample) = self.subscriber.receive()? {
                        break sample;
                    }
                    if start.elapsed() > spin::GIVE_UP {
                        return Err("nothing arrived: the publisher is gone or stuck".into());
                    }
                    ev.listener.timed_wait(|_| {}, LISTENER_TIMEOUT)?;
                }
            }
        };
        read(sample.payload())
    }
}

impl Pinger for Ends {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        self.publish(|m| rtt::stamp(m, seq))?;
        self.take(|m| rtt::expect(m, seq))
    }
}

impl Echoer for Ends {
    fn echo(&mut self, seq: u64) -> Result<()> {
        let mut back = [0u8; 4096];
        let len = self.size;
        self.take(|m| {
            rtt::expect(m, seq)?;
            back[..len].copy_from_slice(m);
            Ok(())
        })?;
        self.publish(|m| m.copy_from_slice(&back[..len]))
    }
}

impl FrameSink for Ends {
    fn send(&mut self, tag: u64) -> Result<()> {
        self.publish(|m| frame::fill(m, tag))
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("small messages run without a credit window".into())
    }
}

impl FrameSource for Ends {
    fn recv(&mut self) -> Result<u64> {
        self.take(frame::check)
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}
