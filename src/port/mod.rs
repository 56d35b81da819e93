//! `MessagePort`: one end of a channel. It writes one ring of the segment and reads the
//! other.

mod channel;
mod error;
mod handoff;
mod liveness;
mod post;
mod raw;
mod readiness;
mod recv;
#[cfg(all(test, not(loom)))]
mod tests;
mod transfer_in;
mod transfer_out;
mod transferable;

pub use channel::{ChannelBuilder, MessageChannel};
pub use error::{PostError, PostErrorKind};
use liveness::LIVENESS_EVERY;
pub(crate) use post::RoomWait;
pub(crate) use readiness::SocketWatcher;
pub(crate) use recv::Decoder;
pub use transferable::Transferable;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::error::Error;
use crate::shm::buffer::ArrayBuffer;
use crate::shm::ring::{Consumer, Corrupt, Producer};
use crate::shm::segment::Segment;
use crate::shm::wake::{WaitStrategy, Waiter};
use crate::wire::codec::FingerprintCache;

/// A received message: the web's `MessageEvent`.
#[derive(Debug)]
#[non_exhaustive]
pub struct MessageEvent<T> {
    /// The message: a deep copy of what was posted (S4).
    pub data: T,
    /// The ports that were in the transfer list, in transfer-list order.
    pub ports: Vec<MessagePort>,
    /// The buffers that were in the transfer list, in transfer-list order.
    pub buffers: Vec<ArrayBuffer>,
}

impl<T> MessageEvent<T> {
    /// Consumes the event, keeping only the message.
    pub fn into_data(self) -> T {
        self.data
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerState {
    Alive,
    /// Closed, dropped, exited or killed: drain, then `Disconnected`.
    Gone,
    /// Our view of the shared memory is impossible: nothing more is read or written.
    Poisoned,
}

/// One end of a channel: the web's `MessagePort`.
///
/// A port is `Send` (a thread is a worker) and not `Sync` (each ring has one producer and
/// one consumer). Dropping a port closes it; the peer then drains what was queued and gets
/// `Disconnected` (S15).
///
/// ```
/// use shmport::MessageChannel;
///
/// let ch = MessageChannel::new()?;
/// ch.port1.post_message(&String::from("hello"), [])?;
/// let ev = ch.port2.recv::<String>()?;
/// assert_eq!(ev.data, "hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MessagePort {
    seg: Arc<Segment>,
    side: usize,
    /// This end's socket: set when the port arrives from elsewhere, or created on first
    /// need (see [`MessagePort::socket`]). Ports of a channel that never leaves its process
    /// have none: they cost one descriptor per channel, not three.
    sock: std::cell::OnceCell<OwnedFd>,
    tx: RefCell<Producer>,
    rx: RefCell<Consumer>,
    rx_scratch: RefCell<AlignedVec<16>>,
    tx_scratch: RefCell<AlignedVec<16>>,
    send_fp: FingerprintCache,
    recv_fp: FingerprintCache,
    recv_wait: Waiter,
    send_wait: Waiter,
    peer: Cell<PeerState>,
    liveness_countdown: Cell<u32>,
    size_hint: Cell<usize>,
    /// rkyv's scratch allocator for this port's posts (created on first use).
    arena: RefCell<Option<Arena>>,
    /// Set when the port's end moves elsewhere (spawn, transfer): Drop must not close it.
    moved: Cell<bool>,
    /// This port's place in the async reactor, made by its first pending `recv_async`.
    watcher: std::cell::OnceCell<Box<dyn SocketWatcher>>,
}

impl fmt::Debug for MessagePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessagePort")
            .field("side", &self.side)
            .field("capacity", &self.seg.capacity())
            .field("peer", &self.peer.get())
            .finish_non_exhaustive()
    }
}

impl MessagePort {
    /// Builds the port on side `side` of `seg`, taking the ring roles from their published
    /// indices (a new channel, or an end that arrived from elsewhere).
    pub(crate) fn attach(
        seg: Arc<Segment>,
        side: usize,
        sock: Option<OwnedFd>,
        wait: WaitStrategy,
    ) -> Result<MessagePort, Error> {
        let bad = |Corrupt(why)| Error::InvalidSegment(why);
        let tx = Producer::attach(seg.ring(side)).map_err(bad)?;
        let rx = Consumer::attach(seg.ring(1 - side)).map_err(bad)?;
        Ok(MessagePort {
            seg,
            side,
            sock: sock.map(std::cell::OnceCell::from).unwrap_or_default(),
            tx: RefCell::new(tx),
            rx: RefCell::new(rx),
            rx_scratch: RefCell::new(AlignedVec::new()),
            tx_scratch: RefCell::new(AlignedVec::new()),
            send_fp: FingerprintCache::new(),
            recv_fp: FingerprintCache::new(),
            recv_wait: Waiter::new(wait),
            send_wait: Waiter::new(wait),
            peer: Cell::new(PeerState::Alive),
            liveness_countdown: Cell::new(LIVENESS_EVERY),
            size_hint: Cell::new(0),
            arena: RefCell::new(None),
            moved: Cell::new(false),
            watcher: std::cell::OnceCell::new(),
        })
    }

    /// The largest encoded message this port's channel carries inside its ring, in bytes.
    /// Larger messages work too: they travel in shared memory outside the ring, at the cost
    /// of a few system calls.
    pub fn max_inline_size(&self) -> usize {
        self.tx.borrow().mem().max_payload()
    }

    /// The ring capacity of each direction of this port's channel, in bytes.
    pub fn capacity(&self) -> usize {
        self.seg.capacity()
    }

    /// How this port waits in `recv`, `recv_timeout` and a blocking `post_message`.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.recv_wait.strategy()
    }

    /// Changes how this port waits; see [`WaitStrategy`].
    pub fn set_wait_strategy(&self, strategy: WaitStrategy) {
        self.recv_wait.set_strategy(strategy);
        self.send_wait.set_strategy(strategy);
    }

    /// Closes the port. The peer still receives every message posted before (S14), then
    /// `Disconnected`. Dropping a port does the same.
    ///
    /// Closing consumes the port, so the web's runtime rules become compile errors: a
    /// closed port cannot be closed again (S14's idempotence has nothing to guard), used,
    /// or transferred (S17):
    ///
    /// ```compile_fail
    /// let ch = shmport::MessageChannel::new().unwrap();
    /// ch.port1.close();
    /// ch.port1.post_message(&1u8, []); // error[E0382]: use of moved value
    /// ```
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for MessagePort {
    fn drop(&mut self) {
        // Before the socket closes, and also when the end moved on: the socket's open file
        // then lives on elsewhere, and our reactor must stop watching it.
        if let (Some(watcher), Some(sock)) = (self.watcher.take(), self.sock.get()) {
            watcher.release(sock.as_fd());
        }
        if !self.moved.get() {
            self.announce_close();
        }
    }
}
