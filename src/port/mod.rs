//! `MessagePort`: one end of a channel. It writes one ring of the segment and reads the
//! other.

mod channel;
mod error;
mod handoff;
mod in_flight;
mod iter;
mod liveness;
mod post;
mod raw;
mod readiness;
mod recv;
#[cfg(feature = "serde")]
mod serde_codec;
mod stats;
#[cfg(all(test, not(loom)))]
mod tests;
pub(crate) mod transfer_in;
mod transfer_out;
mod transferable;

pub use channel::{ChannelBuilder, MessageChannel};
pub use error::{PostError, PostErrorKind};
pub use iter::{Iter, TryIter};
use liveness::LIVENESS_EVERY;
pub(crate) use post::RoomWait;
pub use raw::RawMessage;
pub(crate) use readiness::SocketWatcher;
pub(crate) use recv::Decoder;
#[cfg(feature = "serde")]
pub use serde_codec::serde_fingerprint_of;
pub use stats::PortStats;
pub use transferable::Transferable;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::error::Error;
use crate::shm::buffer::ArrayBuffer;
use crate::shm::polling::PollFlag;
use crate::shm::ring::{Consumer, Corrupt, Producer};
use crate::shm::segment::{Segment, Side};
use crate::shm::wake::{WaitStrategy, Waiter};
use crate::sys;
use crate::wire::codec::{self, FingerprintCache};

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
    side: Side,
    /// This end's socket: set when the port arrives from elsewhere, or created on first
    /// need (see [`MessagePort::socket`]). Ports of a channel that never leaves its process
    /// have none: they cost one descriptor per channel, not three.
    sock: std::cell::OnceCell<OwnedFd>,
    tx: RefCell<Producer>,
    rx: RefCell<Consumer>,
    rx_scratch: RefCell<AlignedVec<16>>,
    tx_scratch: RefCell<AlignedVec<16>>,
    /// The payload of the transfer record being posted (reused).
    tx_record: RefCell<AlignedVec<16>>,
    send_fp: FingerprintCache,
    recv_fp: FingerprintCache,
    recv_wait: Waiter,
    /// What this reader last told its writer about busy-polling (`shm/polling.rs`).
    recv_polls: PollFlag,
    send_wait: Waiter,
    peer: Cell<PeerState>,
    /// Records this handle published (see [`MessagePort::stats`]).
    posts: Cell<u64>,
    liveness_countdown: Cell<u32>,
    size_hint: Cell<usize>,
    /// rkyv's scratch allocator for this port's posts (created on first use).
    arena: RefCell<Option<Arena>>,
    /// Set when the port's end moves elsewhere (spawn, transfer): Drop must not close it.
    moved: Cell<bool>,
    /// Set once the port's readiness descriptor was handed out ([`AsFd`]): a receive that
    /// finds nothing then asks the writer for a doorbell, so the descriptor becomes
    /// readable at the next post.
    watched: Cell<bool>,
    /// This port's place in the async reactor, made by its first pending `recv_async`.
    watcher: std::cell::OnceCell<Box<dyn SocketWatcher>>,
    /// The heaps whose descriptors this handle has sent over the ring it writes, by their
    /// index in the receiver's heap table (`wire::transfer`, "Heap tables").
    heaps_sent: RefCell<Vec<(u64, u64)>>,
    /// The heap table of the ring this port reads: what the writer's items name by index.
    /// It moves with the port.
    heaps_received: RefCell<transfer_in::HeapTable>,
    /// Pooled slots this handle posted that may not be received yet (`in_flight.rs`).
    in_flight: RefCell<in_flight::InFlight>,
    /// Whether the next transfer record's body is copied or handed over as it is
    /// ([`MessagePort::try_recv_raw_in_place`]).
    body_hand_off: Cell<transfer_in::BodyHandOff>,
    /// The out-of-ring bytes posted and not yet taken by the reader (`in_flight.rs`), and
    /// their bound ([`MessagePort::set_max_queued_bytes`]).
    queued: RefCell<in_flight::Queued>,
    max_queued: Cell<usize>,
    /// How deep a received archive may nest (see [`MessagePort::set_max_depth`]).
    max_depth: Cell<usize>,
    /// The process that created or received this handle. In any other process (a copy
    /// made by `fork`) the handle is inert: see [`MessagePort::in_owner_process`].
    pid: u32,
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
        side: Side,
        sock: Option<OwnedFd>,
        wait: WaitStrategy,
    ) -> Result<MessagePort, Error> {
        let bad = |Corrupt(why)| Error::InvalidSegment(why);
        let tx = Producer::attach(seg.ring(side)).map_err(bad)?;
        let rx = Consumer::attach(seg.ring(side.peer())).map_err(bad)?;
        let queued = in_flight::Queued::taking_over(&seg.ring_ctrl(side).wants_head);
        Ok(MessagePort {
            seg,
            side,
            sock: sock.map(std::cell::OnceCell::from).unwrap_or_default(),
            tx: RefCell::new(tx),
            rx: RefCell::new(rx),
            rx_scratch: RefCell::new(AlignedVec::new()),
            tx_scratch: RefCell::new(AlignedVec::new()),
            tx_record: RefCell::new(AlignedVec::new()),
            send_fp: FingerprintCache::new(),
            recv_fp: FingerprintCache::new(),
            recv_wait: Waiter::new(wait),
            recv_polls: PollFlag::new(),
            send_wait: Waiter::new(wait),
            peer: Cell::new(PeerState::Alive),
            posts: Cell::new(0),
            liveness_countdown: Cell::new(LIVENESS_EVERY),
            size_hint: Cell::new(0),
            arena: RefCell::new(None),
            moved: Cell::new(false),
            watched: Cell::new(false),
            watcher: std::cell::OnceCell::new(),
            heaps_sent: RefCell::new(Vec::new()),
            heaps_received: RefCell::new(Vec::new()),
            in_flight: RefCell::default(),
            body_hand_off: Cell::default(),
            queued: RefCell::new(queued),
            max_queued: Cell::new(in_flight::DEFAULT_MAX_QUEUED),
            max_depth: Cell::new(codec::DEFAULT_MAX_DEPTH),
            pid: sys::current_pid(),
        })
    }

    /// The largest archive a message may have, in bytes: 2 GiB minus 64 KiB. The wire
    /// format's relative pointers are 32-bit; a post whose archive would be larger fails
    /// with [`PostErrorKind::TooLarge`].
    pub const MAX_MESSAGE_LEN: usize = codec::MAX_ARCHIVE_LEN;

    /// How many levels of pointers (boxes, vectors, strings, ...) a message received on
    /// this port may nest; 512 unless changed.
    pub fn max_depth(&self) -> usize {
        self.max_depth.get()
    }

    /// Changes how deep a received message may nest. A deeper message is refused with
    /// [`MessageError::TooDeep`](crate::MessageError::TooDeep) (the web's `messageerror`,
    /// consumed; the port keeps working).
    ///
    /// The limit is what keeps a hostile or buggy peer from overflowing the receiving
    /// thread's stack: rkyv's validator and deserializer recurse once per level. The stack
    /// each level takes depends on the type; docs/design.md ("Limits and hostile inputs")
    /// has measurements. The default, 512, leaves most of a 2 MiB thread stack (the
    /// default for spawned threads) free for the types measured; raise it only together
    /// with the stack of the receiving thread. `usize::MAX` removes the limit. A port that
    /// moves to another process (spawned or transferred) arrives with the default.
    ///
    /// ```
    /// use shmport::{MessageError, RecvError};
    ///
    /// let ch = shmport::MessageChannel::new()?;
    /// ch.port2.set_max_depth(2);
    /// ch.port1.post_message(&vec![vec![1u8]], [])?; // two levels
    /// ch.port1.post_message(&vec![vec![vec![1u8]]], [])?; // three
    /// assert!(ch.port2.recv::<Vec<Vec<u8>>>().is_ok());
    /// assert!(matches!(
    ///     ch.port2.recv::<Vec<Vec<Vec<u8>>>>(),
    ///     Err(RecvError::MessageError(MessageError::TooDeep { max_depth: 2 }))
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_max_depth(&self, levels: usize) {
        self.max_depth.set(levels);
    }

    /// How many bytes of message bodies and transferred buffers this port may have queued
    /// for its reader before a post waits; 256 MiB unless changed.
    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued.get()
    }

    /// Changes how many bytes outside the ring this port may have queued for its reader:
    /// the bodies of messages too large for the ring and the `ArrayBuffer`s transferred.
    ///
    /// The ring bounds the number of queued messages; this bounds their memory. A post
    /// whose bytes would take the queue past the bound waits as for room in the ring
    /// (`post_message` until the reader takes some, `try_post_message` fails with
    /// [`PostErrorKind::Full`], `post_message_timeout` after its timeout), so a reader that
    /// falls behind holds back its sender instead of letting it fill the buffer pool. A
    /// message is always accepted when nothing is queued, however large. The count is the
    /// sender's (a port that moves elsewhere starts again from zero there, with the
    /// default); what the reader has received and still holds is its own and not counted.
    /// `usize::MAX` removes the bound.
    ///
    /// Within the bound, a blocking post (`post_message`, `post_message_timeout` with more
    /// than 2 ms left, `post_raw`) also keeps to a *cache window* of 4 MiB while the reader
    /// keeps up: past it, the post waits as long as the reader goes on taking records, so
    /// the frames of a pipeline are read while they are still in the cache they were
    /// written through (measured: a stream of 1 MiB buffers ran at a quarter of the cached
    /// rate when its sender got far ahead). A reader that takes nothing for 2 ms is busy
    /// elsewhere, or is the posting thread itself: the post goes on, and so do the next
    /// ones, up to the bound, until the queue is back within the window, or the reader has
    /// moved and 100 ms have passed. A record of 4 MiB or more, `try_post_message` and the
    /// async posts skip the window.
    ///
    /// ```
    /// use shmport::{ArrayBuffer, MessageChannel, PostErrorKind};
    ///
    /// let ch = MessageChannel::new()?;
    /// ch.port1.set_max_queued_bytes(1 << 20);
    /// let frame = || ArrayBuffer::new(512 << 10);
    /// let (a, b, c) = (frame()?, frame()?, frame()?);
    /// ch.port1.post_message(&(), [a.into()])?;
    /// ch.port1.post_message(&(), [b.into()])?; // 1 MiB queued: the bound
    /// let err = ch.port1.try_post_message(&(), [c.into()]).unwrap_err();
    /// assert!(matches!(err.kind(), PostErrorKind::Full));
    /// ch.port2.recv::<()>()?; // the reader takes one: room for another
    /// ch.port1.try_post_message(&(), err.into_inner())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_max_queued_bytes(&self, bytes: usize) {
        self.max_queued.set(bytes);
    }

    /// False in a process that did not create or receive this handle: a copy made by
    /// `fork` without `exec`, which inherited the parent's memory. There every post fails
    /// with [`PostErrorKind::WrongProcess`], every receive reports `Disconnected` without
    /// touching the channel, and dropping the handle closes nothing (the parent's port
    /// keeps working). One compare of a cached process id.
    #[inline]
    pub(crate) fn in_owner_process(&self) -> bool {
        self.pid == sys::current_pid()
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
        if !self.in_owner_process() {
            // A forked copy: the channel, the closed flag and the reactor's epoll (shared
            // with the parent) are the parent's. Only our copies of the descriptors close.
            return;
        }
        // Before the socket closes, and also when the end moved on: the socket's open file
        // then lives on elsewhere, and our reactor must stop watching it.
        if let (Some(watcher), Some(sock)) = (self.watcher.take(), self.sock.get()) {
            watcher.release(sock.as_fd());
        }
        if !self.moved.get() {
            self.announce_close();
            self.discard_incoming();
            self.free_in_flight_if_peer_gone();
        }
    }
}
