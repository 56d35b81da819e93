//! The iceoryx2 transport: publish-subscribe of `[u8]` slices between the two processes.
//! The publisher loans an uninitialised slice of the frame's length (`loan_slice_uninit`),
//! writes every byte and sends it; the subscriber busy-polls `receive`, checks every byte and
//! drops the sample, which returns it to the publisher's pool.
//!
//! Nothing may be lost, so the service has safe overflow off and the publisher's backpressure
//! strategy is `RetryUntilDelivered`: with `credits` samples queued for the subscriber, the
//! publisher's `send` waits (iceoryx2's adaptive wait) until the subscriber takes one. That
//! queue is the same bound on frames in flight as the other transports' credit window.

use std::mem::MaybeUninit;

use iceoryx2::node::Node;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use crate::Result;
use crate::frame::{self, FrameSink, FrameSource};

/// Empty polls between two looks at whether the parent is still there.
const POLLS_PER_LIVENESS_CHECK: u32 = 1 << 20;

/// A service name no other run shares: the parent's pid and the frame length.
pub fn service_name(frame_len: usize) -> String {
    format!("shmport-compare/{}/{frame_len}", std::process::id())
}

/// Keeps iceoryx2's logging (a warning that no config file exists, say) out of the report.
pub fn quiet() {
    set_log_level(LogLevel::Error);
}

type Service = PortFactory<ipc::Service, [u8], ()>;

fn node() -> Result<Node<ipc::Service>> {
    Ok(NodeBuilder::new().create::<ipc::Service>()?)
}

/// The publishing side: creates the service. Call [`Publishing::connect`] once the
/// subscriber exists.
pub struct Publishing {
    publisher: Publisher<ipc::Service, [u8], ()>,
    _service: Service,
    _node: Node<ipc::Service>,
    frame_len: usize,
}

impl Publishing {
    pub fn create(name: &str, frame_len: usize, credits: u64) -> Result<Publishing> {
        let node = node()?;
        let service = node
            .service_builder(&name.try_into()?)
            .publish_subscribe::<[u8]>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(credits as usize)
            .subscriber_max_borrowed_samples(1)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .create()?;
        let publisher = service
            .publisher_builder()
            .initial_max_slice_len(frame_len)
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()?;
        Ok(Publishing {
            publisher,
            _service: service,
            _node: node,
            frame_len,
        })
    }

    /// Connects to the subscriber (which must exist by now).
    pub fn connect(self) -> Result<Box<dyn FrameSink>> {
        self.publisher.update_connections()?;
        Ok(Box::new(self))
    }
}

impl FrameSink for Publishing {
    fn send(&mut self, tag: u64) -> Result<()> {
        let mut sample = self.publisher.loan_slice_uninit(self.frame_len)?;
        sample
            .payload_mut()
            .fill(MaybeUninit::new(frame::fill_byte(frame::seq_of(tag))));
        // SAFETY: the line above wrote every element of the payload.
        let mut sample = unsafe { sample.assume_init() };
        sample.payload_mut()[..8].copy_from_slice(&tag.to_le_bytes());
        if sample.send()? == 0 {
            return Err("no iceoryx2 subscriber was connected".into());
        }
        Ok(())
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("iceoryx2 runs without a credit window".into())
    }
}

/// The subscribing side: opens the parent's service.
pub struct Subscribing {
    /// The publishing parent: the receive loop gives up once it is gone.
    parent: u32,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    _service: Service,
    _node: Node<ipc::Service>,
}

impl Subscribing {
    pub fn open(name: &str, credits: u64) -> Result<Box<dyn FrameSource>> {
        let node = node()?;
        let service = node
            .service_builder(&name.try_into()?)
            .publish_subscribe::<[u8]>()
            .open()?;
        let subscriber = service
            .subscriber_builder()
            .buffer_size(credits as usize)
            .create()?;
        subscriber.update_connections()?;
        Ok(Box::new(Subscribing {
            parent: std::os::unix::process::parent_id(),
            subscriber,
            _service: service,
            _node: node,
        }))
    }
}

impl FrameSource for Subscribing {
    fn recv(&mut self) -> Result<u64> {
        let mut polls = 0u32;
        loop {
            if let Some(sample) = self.subscriber.receive()? {
                return frame::check(sample.payload());
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(POLLS_PER_LIVENESS_CHECK)
                && std::os::unix::process::parent_id() != self.parent
            {
                return Err("the publishing parent is gone".into());
            }
            std::hint::spin_loop();
        }
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}
