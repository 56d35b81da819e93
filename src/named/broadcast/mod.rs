//! `BroadcastChannel`: every open channel of a name, in any process of the user, receives
//! what any other posts (HTML §9.5).
//!
//! # Design
//!
//! All members of a name map one shared segment (a memfd, so nothing is named on disk):
//! a member table and, per member slot, one ring with one writer and many readers
//! (`shm/fanout.rs`, `shm/ring_many.rs`). A post is encoded once and written once, into
//! the poster's own ring; every other member reads it there with a cursor of its own,
//! which is also how the writer knows how far the slowest reader got (backpressure). A
//! reader copies a record out, checks it, then uses it: any member can write garbage
//! anywhere in the segment, and gets a `messageerror` or a forgotten ring for it, never
//! undefined behaviour.
//!
//! Sleeping readers wait on one futex word of the name (`shm/bell.rs`); a post wakes
//! them with one system call, and only when one announced that it sleeps, once per burst.
//! Membership changes bump a generation counter in the segment: a post or a receive
//! compares one word, and makes no system call unless it changed.
//!
//! A joiner finds the segment by asking a member: each member's slot name
//! (`shmport/<uid>/bc/<name>/<slot>` in the abstract socket namespace) is a listener
//! served by a doorkeeper thread of its process (`service.rs`), which answers with the
//! segment's descriptor; one member also holds a door name, so a join usually takes one
//! connection. Joins are serialized by a lock name (`.../lock`). A slot name also tells
//! whether its member lives: the kernel frees it when the process dies, and a member
//! found dead is closed for it; its ring's pages go back to the kernel once its readers
//! took what it had posted.

mod body;
mod future;
mod inbound;
mod join;
mod member;
mod outbound;
mod service;
mod table;

use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::error::{Error, MessageError};
use crate::error::{RecvError, RecvTimeoutError, TryRecvError};
use crate::named::endpoint::check_name;
use crate::port::{MessageEvent, PostError, PostErrorKind};
use crate::wait::bell_waiter::BellWaiter;
use crate::wire::codec::{self, FingerprintCache, Message};

pub use future::{BroadcastMessages, BroadcastRecvFuture, IntoBroadcastMessages};
pub use join::MAX_BROADCAST_MEMBERS;
use member::{Found, Member};

/// A named channel to every other open `BroadcastChannel` of the same name in any process
/// of this user: the web's `BroadcastChannel`.
///
/// Each message posted reaches every *other* open channel of the name (the poster does not
/// get its own), in the order that poster posted. A channel opened after a post does not
/// get it. Messages are copied; nothing is transferred.
///
/// A post is written once, into the poster's own ring, whatever the number of members;
/// each member reads it there. A receiver that does not keep up holds its senders back
/// (no message is dropped): posting waits while the slowest receiver has a ring's worth
/// (512 KiB) unread. A message larger than half a ring travels in a shared-memory object
/// of its own, which each receiver fetches once. While it waits, a post takes in what the others sent to its channel
/// (kept, in order, for [`recv`](Self::recv)), so members posting to each other faster than
/// they receive never wait for each other for good.
///
/// ```
/// use shmport::BroadcastChannel;
///
/// let mut a = BroadcastChannel::new("doc-example-news")?;
/// let mut b = BroadcastChannel::new("doc-example-news")?;
/// let mut c = BroadcastChannel::new("doc-example-news")?;
/// a.post_message(&String::from("hello from a"))?;
/// assert_eq!(b.recv::<String>()?.data, "hello from a");
/// assert_eq!(c.recv::<String>()?.data, "hello from a");
/// assert!(a.try_recv::<String>().is_err()); // not to itself
/// a.close();
/// a.close(); // idempotent
/// assert!(a.post_message(&1u8).is_err()); // InvalidStateError
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BroadcastChannel {
    name: String,
    /// `None` once closed.
    open: Option<Open>,
}

struct Open {
    member: Member,
    scratch: AlignedVec<16>,
    arena: Arena,
    send_fp: FingerprintCache,
    recv_fp: FingerprintCache,
    /// The thread that sleeps on the bell for async receives, from the first that waited.
    waiter: Option<BellWaiter>,
}

impl std::fmt::Debug for BroadcastChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastChannel")
            .field("name", &self.name)
            .field("closed", &self.open.is_none())
            .finish()
    }
}

impl BroadcastChannel {
    /// Opens a channel named `name` and joins every open channel of that name of this
    /// user.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an empty or too long name (over 64 bytes) or one with
    /// characters other than ASCII letters, digits, `.`, `_` and `-`;
    /// [`Error::TooManyMembers`] when [`MAX_BROADCAST_MEMBERS`] channels of the name are
    /// open; [`Error::NameInUse`] when another user holds the name's join lock;
    /// [`Error::Os`] when the kernel refuses a socket, a thread or shared memory.
    pub fn new(name: &str) -> Result<BroadcastChannel, Error> {
        check_name(name)?;
        let joined = join::join(name)?;
        Ok(BroadcastChannel {
            name: name.to_owned(),
            open: Some(Open {
                member: Member::new(name, joined)?,
                scratch: AlignedVec::new(),
                arena: Arena::new(),
                send_fp: FingerprintCache::new(),
                recv_fp: FingerprintCache::new(),
                waiter: None,
            }),
        })
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many other channels of this name are open now. Members that died are found
    /// and forgotten here: this asks the kernel about each member, so it costs a system
    /// call per member. Zero once closed.
    pub fn peers(&mut self) -> usize {
        self.open.as_mut().map_or(0, |o| o.member.peers())
    }

    /// Sends a copy of `msg` to every other open channel of this name.
    ///
    /// Waits while the slowest receiver has a ring's worth unread; meanwhile takes in
    /// what the others sent to this channel (up to 64 MiB, then it only waits), so that
    /// members posting to each other never wait for each other for good. A member that
    /// never receives still holds back whoever posts: two channels of one name in one
    /// thread, one only posting more than a ring holds (about 6,000 small messages)
    /// to the other, wait forever. A member whose process died is let go within one
    /// liveness interval (50 ms) of waiting for it.
    ///
    /// # Errors
    ///
    /// [`PostErrorKind::Closed`] after [`close`](Self::close) (the web's
    /// `InvalidStateError`); [`PostErrorKind::Encode`] when the value cannot be encoded
    /// (nothing was sent); [`PostErrorKind::Os`] when a message too large for a ring
    /// cannot get the shared memory or the name for its body.
    pub fn post_message<T: Message>(&mut self, msg: &T) -> Result<(), PostError> {
        let Some(open) = &mut self.open else {
            return Err(PostError::new(PostErrorKind::Closed, Vec::new()));
        };
        let fingerprint = open.send_fp.get::<T>();
        if open
            .member
            .try_post_in_place(msg, fingerprint, &mut open.arena)
        {
            return Ok(());
        }
        codec::encode_to_vec(msg, &mut open.scratch, &mut open.arena)
            .map_err(|e| PostError::new(e.into(), Vec::new()))?;
        open.member
            .post(&open.scratch, fingerprint)
            .map_err(|e| PostError::new(PostErrorKind::Os(std::io::Error::other(e)), Vec::new()))
    }

    /// Waits for the next message from any other channel of this name.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once this channel is closed;
    /// [`RecvError::MessageError`] when a message cannot be decoded as `T` (it is consumed;
    /// the channel keeps working).
    pub fn recv<T: Message>(&mut self) -> Result<MessageEvent<T>, RecvError> {
        match self.recv_until::<T>(None) {
            Ok(ev) => Ok(ev),
            Err(RecvTimeoutError::MessageError(e)) => Err(RecvError::MessageError(e)),
            Err(_) => Err(RecvError::Disconnected),
        }
    }

    /// As [`recv`](Self::recv), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`RecvTimeoutError::Timeout`].
    pub fn recv_timeout<T: Message>(
        &mut self,
        timeout: Duration,
    ) -> Result<MessageEvent<T>, RecvTimeoutError> {
        // A timeout too long to represent is no timeout.
        self.recv_until(Instant::now().checked_add(timeout))
    }

    /// Receives a message if one is queued; never waits.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is queued; otherwise as [`recv`](Self::recv).
    pub fn try_recv<T: Message>(&mut self) -> Result<MessageEvent<T>, TryRecvError> {
        if let Some(got) = self.try_recv_quick::<T>() {
            return got.map_err(TryRecvError::MessageError);
        }
        let Some(open) = &mut self.open else {
            return Err(TryRecvError::Disconnected);
        };
        match open.member.try_next() {
            None => Err(TryRecvError::Empty),
            Some(found) => open.decode(found).map_err(TryRecvError::MessageError),
        }
    }

    /// Closes the channel: it leaves the name, receives nothing more, and posting to it is
    /// an error. Messages it posted before stay queued for their receivers. Idempotent;
    /// dropping the channel does the same.
    pub fn close(&mut self) {
        self.open = None;
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.open.is_none()
    }

    /// The first look of every receive (`Member::try_next_quick`): `None` when it found
    /// nothing to take there, and the receive goes the whole way.
    #[inline]
    fn try_recv_quick<T: Message>(&mut self) -> Option<Result<MessageEvent<T>, MessageError>> {
        let open = self.open.as_mut()?;
        let tag = open.member.try_next_quick()?;
        let max_depth = codec::DEFAULT_MAX_DEPTH;
        let data = codec::decode::<T>(&open.member.incoming, tag, &open.recv_fp, max_depth);
        Some(data.map(event))
    }

    fn recv_until<T: Message>(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<MessageEvent<T>, RecvTimeoutError> {
        if let Some(got) = self.try_recv_quick::<T>() {
            return got.map_err(RecvTimeoutError::MessageError);
        }
        let Some(open) = &mut self.open else {
            return Err(RecvTimeoutError::Disconnected);
        };
        match open.member.next(deadline) {
            None => Err(RecvTimeoutError::Timeout),
            Some(found) => open.decode(found).map_err(RecvTimeoutError::MessageError),
        }
    }
}

impl Open {
    fn decode<T: Message>(
        &mut self,
        found: Result<Found, crate::error::MessageError>,
    ) -> Result<MessageEvent<T>, crate::error::MessageError> {
        let max_depth = codec::DEFAULT_MAX_DEPTH;
        let data = match found? {
            Found::Incoming(tag) => {
                codec::decode::<T>(&self.member.incoming, tag, &self.recv_fp, max_depth)
            }
            Found::Backlog(archive, tag) => {
                codec::decode::<T>(&archive, tag, &self.recv_fp, max_depth)
            }
        }?;
        Ok(event(data))
    }
}

/// A broadcast's event: a message never carries ports or buffers.
fn event<T>(data: T) -> MessageEvent<T> {
    MessageEvent {
        data,
        ports: Vec::new(),
        buffers: Vec::new(),
    }
}
