//! `BroadcastChannel`: every open channel of a name, in any process of the user, receives
//! what any other posts (HTML §9.5).
//!
//! # Design
//!
//! Members form a full mesh of ordinary channels: one SPSC ring per ordered pair, so a
//! sender's messages reach each receiver in the order it posted them (the web's only
//! ordering promise), a receiver waits on all its rings with a [`PortSet`], and a message
//! is encoded once and copied into each receiver's ring.
//!
//! Membership lives in the kernel, in Linux's abstract socket namespace, so nothing is
//! left behind by a crash: each member listens on `shmport/<uid>/bc/<name>/<slot>`, the
//! first free of [`MAX_BROADCAST_MEMBERS`] slots. A new member connects to every bound slot
//! and hands each member one port of a fresh channel over the connection (it does not wait
//! for an answer); members pick such connections up when they next post or receive. Joins
//! are serialized by a lock that is itself an abstract name (`.../lock`, held while bound),
//! so two members joining at once still connect exactly once. When a process dies the
//! kernel frees its names, and the others see its rings disconnect and forget it.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use std::collections::VecDeque;

use crate::error::Error;
use crate::error::{MessageError, RecvError, RecvTimeoutError, TryRecvError};
use crate::named::endpoint::{check_name, recv_channel_port, send_new_channel};
use crate::port::{MessageEvent, MessagePort};
use crate::port::{PostError, PostErrorKind, RoomWait};
use crate::sys;
use crate::wait::portset::{PortKey, PortSet};
use crate::wire::codec::{self, FingerprintCache, Message};
use crate::wire::naming;

/// Most channels of one name open at once, across all processes of the user.
pub const MAX_BROADCAST_MEMBERS: usize = 128;

const HELLO: &[u8; 8] = b"shmpbc01";

/// How often a post waiting for room in a member's ring takes in what was sent to us.
const DRAIN_EVERY: Duration = Duration::from_millis(1);

/// How long a join waits for another join of the same name before giving up (a joiner
/// stopped by a debugger, say, holds the lock until it goes on or dies).
const JOIN_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// Half-open joins kept at once (a joiner sends its port right after connecting, so more
/// than a few means something connects and sends nothing: the excess is dropped).
const MAX_PENDING_JOINS: usize = 64;

/// Joins a member may leave unaccepted (it accepts when it next posts or receives); the
/// kernel caps it at `net.core.somaxconn` (4096 by default since Linux 5.4).
const JOIN_BACKLOG: i32 = 4096;

/// A named channel to every other open `BroadcastChannel` of the same name in any process
/// of this user: the web's `BroadcastChannel`.
///
/// Each message posted reaches every *other* open channel of the name (the poster does not
/// get its own), in the order that poster posted. A channel opened after a post does not
/// get it. Messages are copied; nothing is transferred.
///
/// A receiver that does not keep up holds its senders back: each pair of members shares a
/// ring, and posting waits for room in every receiver's ring (no message is dropped).
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
    /// Bound to this member's slot name; non-blocking.
    listener: OwnedFd,
    /// Ports to every other member (the listener is watched too).
    members: PortSet,
    scratch: AlignedVec<16>,
    arena: Arena,
    /// Scratch list of member keys for one post.
    keys: Vec<PortKey>,
    /// Accepted joins whose joiner has not sent its port yet (watched by `members`).
    pending: Vec<OwnedFd>,
    /// Messages taken in while a post waited for room, oldest first, undecoded.
    backlog: VecDeque<Result<(AlignedVec<16>, u64), MessageError>>,
    recv_fp: FingerprintCache,
}

impl std::fmt::Debug for BroadcastChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastChannel")
            .field("name", &self.name)
            .field("peers", &self.open.as_ref().map_or(0, |o| o.members.len()))
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
    /// open; [`Error::Os`] when the kernel refuses a socket, epoll instance or channel.
    pub fn new(name: &str) -> Result<BroadcastChannel, Error> {
        check_name(name)?;
        let _lock = JoinLock::acquire(name)?;
        let mut bound = None;
        for slot in 0..MAX_BROADCAST_MEMBERS {
            match sys::endpoint_listen_with_backlog(&slot_name(name, slot), JOIN_BACKLOG) {
                Ok(l) => {
                    bound = Some((slot, l));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(Error::os("binding a BroadcastChannel name", e)),
            }
        }
        let (slot, listener) = bound.ok_or_else(|| Error::TooManyMembers(name.to_owned()))?;
        sys::set_nonblocking(listener.as_fd()).map_err(|e| Error::os("fcntl", e))?;
        let mut members = PortSet::new()?;
        members.watch_extra(listener.as_fd())?;
        let mut spare = None;
        for other in (0..MAX_BROADCAST_MEMBERS).filter(|&s| s != slot) {
            if let Some(port) = introduce(&slot_name(name, other), &mut spare)? {
                members.insert(port).map_err(|e| e.error)?;
            }
        }
        Ok(BroadcastChannel {
            name: name.to_owned(),
            open: Some(Open {
                listener,
                members,
                scratch: AlignedVec::new(),
                arena: Arena::new(),
                keys: Vec::new(),
                pending: Vec::new(),
                backlog: VecDeque::new(),
                recv_fp: FingerprintCache::new(),
            }),
        })
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many other channels of this name are open now: members that joined are picked
    /// up, members that closed or died (with nothing left to receive from them) are
    /// forgotten. Asks the kernel about each member, so it costs a system call per member.
    /// Zero once closed.
    pub fn peers(&mut self) -> usize {
        let Some(open) = &mut self.open else {
            return 0;
        };
        open.accept_joiners();
        let gone: Vec<PortKey> = open
            .members
            .keys()
            .filter(|&k| {
                open.members
                    .port(k)
                    .is_some_and(|p| p.peer_gone_and_drained())
            })
            .collect();
        for k in gone {
            open.members.remove(k);
        }
        open.members.len()
    }

    /// Sends a copy of `msg` to every other open channel of this name.
    ///
    /// Waits while a receiver's ring is full. While it waits it takes in, every
    /// millisecond, what the other members sent to this channel (kept, in order, for
    /// [`recv`](Self::recv)), so members that post to each other faster than they receive
    /// never wait for each other for good. A member that never receives still holds back
    /// whoever posts to it: two channels of one name in one thread, one only posting more
    /// than a ring holds (about 4,000 small messages) to the other, wait forever.
    /// Channels that closed are skipped and forgotten; a member whose process died is noticed when its ring fills (within one
    /// liveness interval, 50 ms, of waiting for room) or by [`peers`](Self::peers).
    ///
    /// # Errors
    ///
    /// [`PostErrorKind::Closed`] after [`close`](Self::close) (the web's
    /// `InvalidStateError`); [`PostErrorKind::Encode`] when the value cannot be encoded
    /// (nothing was sent); [`PostErrorKind::Os`] when a message too large for a ring cannot
    /// get the shared memory for its body.
    pub fn post_message<T: Message>(&mut self, msg: &T) -> Result<(), PostError> {
        let Some(open) = &mut self.open else {
            return Err(PostError::new(PostErrorKind::Closed, Vec::new()));
        };
        open.accept_joiners();
        codec::encode_to_vec(msg, &mut open.scratch, &mut open.arena)
            .map_err(|e| PostError::new(e.into(), Vec::new()))?;
        let fp = codec::fingerprint_of::<T>();
        let mut keys = std::mem::take(&mut open.keys);
        keys.clear();
        keys.extend(open.members.keys());
        let archive = std::mem::take(&mut open.scratch);
        let mut outcome = Ok(());
        'members: for &key in &keys {
            // First without waiting (no clock read on the fast path), then in slices.
            let mut wait = RoomWait::Never;
            loop {
                let Some(port) = open.members.port(key) else {
                    continue 'members;
                };
                match port.post_encoded(&archive, fp, wait) {
                    Ok(()) => continue 'members,
                    // The member's ring is full: after each slice of waiting, take in what
                    // the others (it among them) sent us meanwhile, so that two members
                    // posting to each other never wait for each other for good.
                    Err(e) if e.is_full() => {
                        if matches!(wait, RoomWait::Until(_)) {
                            open.drain_incoming();
                        }
                        wait = RoomWait::Until(Instant::now() + DRAIN_EVERY);
                    }
                    Err(e) if e.is_disconnected() => {
                        // Gone, but what it posted before it left is still to be
                        // received: `recv` forgets it once drained.
                        if port.peer_gone_and_drained() {
                            open.members.remove(key);
                        }
                        continue 'members;
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break 'members;
                    }
                }
            }
        }
        open.scratch = archive;
        open.keys = keys;
        outcome
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
        match self.recv_until::<T>(Some(Instant::now())) {
            Ok(ev) => Ok(ev),
            Err(RecvTimeoutError::Timeout) => Err(TryRecvError::Empty),
            Err(RecvTimeoutError::MessageError(e)) => Err(TryRecvError::MessageError(e)),
            Err(_) => Err(TryRecvError::Disconnected),
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

    fn recv_until<T: Message>(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<MessageEvent<T>, RecvTimeoutError> {
        let Some(open) = &mut self.open else {
            return Err(RecvTimeoutError::Disconnected);
        };
        loop {
            // What was taken in while a post waited comes first (it is older than what
            // is still in the rings).
            if let Some(entry) = open.backlog.pop_front() {
                let decoded = entry.and_then(|(archive, tag)| {
                    codec::decode::<T>(&archive, tag, &open.recv_fp, codec::DEFAULT_MAX_DEPTH)
                });
                return match decoded {
                    Ok(data) => Ok(MessageEvent {
                        data,
                        ports: Vec::new(),
                        buffers: Vec::new(),
                    }),
                    Err(e) => Err(RecvTimeoutError::MessageError(e)),
                };
            }
            // Joiners are picked up when the listener has news (it is watched with the
            // members), not by a system call per receive.
            if open.members.take_extra_news() {
                open.accept_joiners();
            }
            let key = match open.members.wait_deadline(deadline) {
                Ok(Some(key)) => key,
                // The listener has news: a member joined; pick it up and wait again.
                Ok(None) if open.members.has_extra_news() => continue,
                Ok(None) => return Err(RecvTimeoutError::Timeout),
                Err(e) => panic!("epoll_wait failed: {e}"),
            };
            let port = open.members.port(key).expect("wait returns members");
            match port.try_recv::<T>() {
                Ok(ev) => return Ok(ev),
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Disconnected) => {
                    open.members.remove(key);
                }
                Err(TryRecvError::MessageError(e)) => {
                    return Err(RecvTimeoutError::MessageError(e));
                }
            }
        }
    }
}

impl Open {
    /// Takes every message queued for us into the backlog, undecoded (a post waiting for
    /// room calls this).
    fn drain_incoming(&mut self) {
        let keys: Vec<PortKey> = self.members.keys().collect();
        for key in keys {
            // `get`: the set looks at the member again, whatever we took.
            while let Some(port) = self.members.get(key) {
                match port.try_recv_raw() {
                    Ok(raw) => self.backlog.push_back(Ok((raw.archive, raw.fingerprint))),
                    Err(TryRecvError::MessageError(e)) => self.backlog.push_back(Err(e)),
                    Err(_) => break, // empty, or gone: `recv` deals with it
                }
            }
        }
    }

    /// Takes the ports that members who joined since the last look left on our listener.
    /// Never waits: a connection whose joiner has not sent its port yet is kept, watched,
    /// and finished at a later look.
    fn accept_joiners(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            for conn in pending {
                self.finish_join(conn);
            }
        }
        if !sys::readable_now(self.listener.as_fd()) {
            return;
        }
        // WouldBlock: nobody is waiting. Anything else (the connection was reset, a
        // descriptor limit): leave it for the next look.
        while let Ok(conn) = sys::endpoint_accept(self.listener.as_fd()) {
            if !sys::peer_is_same_user(conn.as_fd()) {
                continue;
            }
            if sys::readable_now(conn.as_fd()) {
                self.take_port(&conn);
            } else if self.pending.len() < MAX_PENDING_JOINS {
                let _ = self.members.watch_extra(conn.as_fd());
                self.pending.push(conn);
            }
        }
    }

    /// Takes a pending joiner's port if it has arrived (or drops the connection if the
    /// joiner hung up); otherwise keeps it pending.
    fn finish_join(&mut self, conn: OwnedFd) {
        if sys::readable_now(conn.as_fd()) {
            self.members.unwatch_extra(conn.as_fd());
            self.take_port(&conn);
        } else {
            self.pending.push(conn);
        }
    }

    /// Reads the port a joiner sent on `conn` (readable: its message or its hang-up).
    fn take_port(&mut self, conn: &OwnedFd) {
        if let Ok(port) = recv_channel_port(conn.as_fd(), HELLO) {
            // A port that cannot join the set is dropped: that member sees us leave.
            let _ = self.members.insert(port);
        }
    }
}

/// The address of slot `slot` of broadcast `name`: `shmport/<uid>/bc/<name>/<slot>`.
fn slot_name(name: &str, slot: usize) -> String {
    naming::address(&format!("bc/{name}/{slot}"))
}

/// Connects to the member at `address`, if one is there, and hands it one port of a new
/// channel; returns ours. `None` when no member holds the slot, or when the member has
/// left so many joins unaccepted that its queue is full (it has not posted or received
/// for that long: waiting for it could be forever).
fn introduce(address: &str, spare: &mut Option<OwnedFd>) -> Result<Option<MessagePort>, Error> {
    let conn = match sys::endpoint_connect_nonblocking(address, spare) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::WouldBlock
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::os("connecting to a BroadcastChannel member", e)),
    };
    if !sys::peer_is_same_user(conn.as_fd()) {
        return Ok(None);
    }
    // None: the member left between our connect and our send; nobody to talk to.
    send_new_channel(conn.as_fd(), HELLO)
}

/// Held while a member joins: the abstract name `bc/<name>/lock`, bound. The kernel frees
/// it when this process closes it, or dies.
struct JoinLock {
    _bound: OwnedFd,
}

impl JoinLock {
    fn acquire(name: &str) -> Result<JoinLock, Error> {
        let address = naming::address(&format!("bc/{name}/lock"));
        let give_up = Instant::now() + JOIN_LOCK_PATIENCE;
        let mut backoff = Duration::from_micros(20);
        let mut holder_checked = false;
        loop {
            match sys::endpoint_listen(&address) {
                Ok(bound) => return Ok(JoinLock { _bound: bound }),
                // Another member is joining (well under a millisecond): retry.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    // The abstract namespace has no permissions: make sure, once, that the
                    // holder is one of ours, not another user squatting on the name.
                    if !std::mem::replace(&mut holder_checked, true) {
                        let probe = sys::endpoint_connect_nonblocking(&address, &mut None);
                        if probe.is_ok_and(|h| !sys::peer_is_same_user(h.as_fd())) {
                            return Err(Error::NameInUse(format!(
                                "{name} (its join lock is held by another user)"
                            )));
                        }
                    }
                    if Instant::now() >= give_up {
                        return Err(Error::os(
                            "waiting for a BroadcastChannel join lock",
                            std::io::Error::from(std::io::ErrorKind::TimedOut),
                        ));
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
                Err(e) => return Err(Error::os("binding a BroadcastChannel join lock", e)),
            }
        }
    }
}
