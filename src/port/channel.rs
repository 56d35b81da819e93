//! `MessageChannel`: a new segment and its two entangled ports.

use std::sync::Arc;

use crate::error::Error;
use crate::shm::segment::{DEFAULT_CAPACITY, Segment, Side};
use crate::shm::wake::WaitStrategy;
use crate::sys;
use crate::wire::codec::DEFAULT_MAX_DEPTH;

use super::MessagePort;

/// Two entangled ports over one new shared-memory segment: the web's `MessageChannel`.
///
/// A message posted on one port arrives at the other (S1), in order (S2).
///
/// ```
/// use shmport::MessageChannel;
///
/// let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
/// port1.post_message(&42u64, [])?;
/// port2.post_message(&String::from("back"), [])?;
/// assert_eq!(port2.recv::<u64>()?.data, 42);
/// assert_eq!(port1.recv::<String>()?.data, "back");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct MessageChannel {
    /// Writes ring 0, reads ring 1.
    pub port1: MessagePort,
    /// Writes ring 1, reads ring 0.
    pub port2: MessagePort,
}

impl MessageChannel {
    /// A channel with default options: 124 KiB per direction (the whole channel costs
    /// 252 KiB of shared memory) and the adaptive wait strategy.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the shared memory or the socket pair cannot be created (for
    /// example when the process is out of file descriptors).
    pub fn new() -> Result<MessageChannel, Error> {
        Self::builder().build()
    }

    /// Options for a new channel.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder {
            capacity: DEFAULT_CAPACITY,
            wait: WaitStrategy::default(),
            max_depth: DEFAULT_MAX_DEPTH,
            max_queued: super::in_flight::DEFAULT_MAX_QUEUED,
        }
    }
}

/// Options for a [`MessageChannel`]; from [`MessageChannel::builder`].
///
/// ```
/// use shmport::{MessageChannel, WaitStrategy};
///
/// let ch = MessageChannel::builder()
///     .capacity(1 << 20)
///     .wait_strategy(WaitStrategy::BusyPoll)
///     .build()?;
/// assert_eq!(ch.port1.capacity(), 1 << 20);
/// # Ok::<(), shmport::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ChannelBuilder {
    capacity: usize,
    wait: WaitStrategy,
    max_depth: usize,
    max_queued: usize,
}

impl ChannelBuilder {
    /// Ring bytes per direction, rounded up to a multiple of 4 KiB (4 KiB to 1 GiB). One
    /// message may use up to half of it.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// How both ports wait (each port can change it later).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// How deep a message received on either port may nest (default 512; each port can
    /// change it later, see [`MessagePort::set_max_depth`]).
    pub fn max_depth(mut self, levels: usize) -> Self {
        self.max_depth = levels;
        self
    }

    /// How many bytes of bodies and transferred buffers either port may have queued for
    /// its reader before a post waits (default 256 MiB; see
    /// [`MessagePort::set_max_queued_bytes`]).
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued = bytes;
        self
    }

    /// Creates the channel.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCapacity`] for a capacity out of range; [`Error::Os`] when the
    /// operating system refuses the memory or the sockets.
    pub fn build(self) -> Result<MessageChannel, Error> {
        let capacity = Segment::checked_capacity(self.capacity)?;
        sys::raise_descriptor_limit();
        let seg = Arc::new(Segment::create(capacity)?);
        // No sockets yet: they are created when a port first leaves this process.
        let ch = MessageChannel {
            port1: MessagePort::attach(Arc::clone(&seg), Side::ZERO, None, self.wait)?,
            port2: MessagePort::attach(seg, Side::ONE, None, self.wait)?,
        };
        ch.port1.set_max_depth(self.max_depth);
        ch.port2.set_max_depth(self.max_depth);
        ch.port1.set_max_queued_bytes(self.max_queued);
        ch.port2.set_max_queued_bytes(self.max_queued);
        Ok(ch)
    }
}
