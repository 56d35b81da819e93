//! `PortSet`: wait until any of many ports has a message, and learn which.
//!
//! # How a wake-up stays O(1)
//!
//! A port waiting in a set does not sleep on its futex: it sets the
//! [`WANTS_DOORBELL`](crate::shm::wake::WANTS_DOORBELL) bit of its ring's sleeping word, and a
//! writer that finds the bit (with the same fence pairing as a futex sleep) sends one byte
//! on the channel's socket. Each member's socket is registered, edge-triggered, with one
//! epoll instance owned by the set, so the kernel hands back exactly the ports that got
//! news: a wake-up costs the same with 1 port or 10,000.
//!
//! The set keeps a queue of ports that may be readable. `wait` looks at the front of that
//! queue; a port found empty is armed (bit set, then looked at once more) and leaves the
//! queue until epoll reports it again; a port found readable is returned and goes to the
//! back of the queue, so a busy port cannot starve the others and a port the caller did not
//! drain is reported again. The work of one `wait` is proportional to the ports that had
//! news since the last one, never to the number of members.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::error::RecvError;
use crate::port::{MessageEvent, MessagePort};
use crate::shm::wake::{WaitStrategy, Waiter};
use crate::sys::{self, Readiness};
use crate::wire::codec::Message;

use super::slab::{Key, Slab};

/// Which member of a [`PortSet`] something is about. Keys are not reused for another port
/// while the set lives (a slot's generation changes when its port is removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey(Key);

impl PortKey {
    fn token(self) -> u64 {
        self.0.token()
    }

    fn from_token(token: u64) -> PortKey {
        PortKey(Key::from_token(token))
    }
}

struct Member {
    port: MessagePort,
    /// In `ready`: may be readable, will be looked at.
    queued: bool,
    /// The socket reported a hang-up since the port was last looked at.
    hung_up: bool,
    /// The socket reported news (doorbells to consume) since the port was last looked at.
    news: bool,
}

/// Waits on many ports at once: the native answer to the web's abandoned `PortCollection`.
///
/// [`wait`](Self::wait) blocks until some member has a message (or its peer is gone) and
/// says which; [`recv`](Self::recv) also receives it. The cost of a wake-up does not grow
/// with the number of members (see the module docs), and a waiting set uses no CPU.
///
/// A member that stays readable (a message left queued, or a disconnected peer) is
/// reported again by the next wait, after the other ready members: remove ports whose peer
/// is gone.
///
/// ```
/// use shmport::{MessageChannel, PortSet};
///
/// let mut set = PortSet::new()?;
/// let mut senders = Vec::new();
/// let mut keys = Vec::new();
/// for _ in 0..3 {
///     let ch = MessageChannel::new()?;
///     keys.push(set.insert(ch.port2)?);
///     senders.push(ch.port1);
/// }
/// senders[2].post_message(&String::from("from the third"), [])?;
/// let (key, ev) = set.recv::<String>()?;
/// assert_eq!(key, keys[2]);
/// assert_eq!(ev?.data, "from the third");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PortSet {
    epoll: OwnedFd,
    members: Slab<Member>,
    ready: VecDeque<PortKey>,
    events: Vec<Readiness>,
    examined: u64,
    /// Spin-then-arm policy of `wait` (the ports' own strategies are not used here).
    strategy: Waiter,
    /// Scratch list of members looked at in one `wait`.
    idle: Vec<PortKey>,
    /// Spins in a row that found nothing, and a counter for the occasional probe.
    spins_failed: u32,
    spin_probe: u32,
    /// The set's epoll descriptor watched for async waits, made by the first one.
    pub(super) watch: std::cell::OnceCell<super::fd::FdWatch>,
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortSet")
            .field("len", &self.members.len())
            .field("queued", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Drop for PortSet {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.release(self.epoll.as_fd());
        }
    }
}

impl PortSet {
    /// True when members wait in the ready queue to be looked at (a `try_wait` that
    /// returned `None` left doorbells for the next look).
    pub(super) fn has_queued(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The set's epoll instance.
    pub(super) fn epoll_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// True when the set busy-polls: it never arms its members, so its descriptor never
    /// becomes readable.
    pub(super) fn busy_polls(&self) -> bool {
        self.strategy.spin_budget().is_none()
    }
}

/// A port that could not join a [`PortSet`], handed back with the reason.
#[derive(Debug)]
pub struct InsertError {
    /// Why the port could not join.
    pub error: Error,
    /// The port, untouched: nothing queued on it was lost.
    pub port: Box<MessagePort>,
}

impl InsertError {
    /// The port, handed back untouched (as [`PostError::into_inner`] hands back a transfer
    /// list).
    ///
    /// [`PostError::into_inner`]: crate::PostError::into_inner
    pub fn into_inner(self) -> MessagePort {
        *self.port
    }
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the port could not join the set: {}", self.error)
    }
}

impl std::error::Error for InsertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl PortSet {
    /// An empty set.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the kernel refuses an epoll instance (descriptor limit).
    pub fn new() -> Result<PortSet, Error> {
        let epoll = sys::epoll_new().map_err(|e| Error::os("epoll_create1", e))?;
        Ok(PortSet {
            epoll,
            members: Slab::default(),
            ready: VecDeque::new(),
            events: Vec::with_capacity(64),
            examined: 0,
            strategy: Waiter::new(WaitStrategy::Adaptive),
            idle: Vec::new(),
            spins_failed: 0,
            spin_probe: 0,
            watch: std::cell::OnceCell::new(),
        })
    }

    /// Adds `port` and returns its key. Messages already queued on it are reported by the
    /// next wait.
    ///
    /// The port needs its channel's socket to be rung; a channel whose two ports never left
    /// their process creates it now (two descriptors).
    ///
    /// # Errors
    ///
    /// [`InsertError`] with the port when the kernel refuses the socket or the epoll
    /// registration (descriptor or memory limits).
    pub fn insert(&mut self, port: MessagePort) -> Result<PortKey, InsertError> {
        let Some(key) = self.members.next_key() else {
            let e = std::io::Error::other("a PortSet holds at most 2^32 ports");
            return Err(InsertError {
                error: Error::os("PortSet::insert", e),
                port: Box::new(port),
            });
        };
        let key = PortKey(key);
        let registered = match port.news_fd() {
            // The channel's socket pair, created now if its ports never left the process.
            Err(e) => Err(Error::os("socketpair", e)),
            Ok(fd) => sys::epoll_watch(self.epoll.as_fd(), fd, key.token())
                .map_err(|e| Error::os("epoll_ctl", e)),
        };
        if let Err(error) = registered {
            return Err(InsertError {
                error,
                port: Box::new(port),
            });
        }
        self.members.insert(Member {
            port,
            queued: true,
            hung_up: false,
            news: true,
        });
        self.ready.push_back(key);
        Ok(key)
    }

    /// Removes the port of `key` and hands it back, with whatever is still queued on it.
    /// `None` if `key` is not (or no longer) a member.
    pub fn remove(&mut self, key: PortKey) -> Option<MessagePort> {
        let member = self.members.remove(key.0)?;
        if let Ok(fd) = member.port.news_fd() {
            sys::epoll_unwatch(self.epoll.as_fd(), fd);
        }
        member.port.disarm();
        // A stale key left in `ready` is skipped by its generation.
        Some(member.port)
    }

    /// The port of `key`, to post on it or receive from it directly.
    ///
    /// A port handed out is looked at again by the next wait: receiving from it directly
    /// can consume the news the set was waiting for, so the set does not trust what it
    /// knew of it.
    pub fn get(&mut self, key: PortKey) -> Option<&MessagePort> {
        let m = self.member_mut(key)?;
        m.news = true;
        if !std::mem::replace(&mut m.queued, true) {
            self.ready.push_back(key);
        }
        self.member(key).map(|m| &m.port)
    }

    /// How many ports are in the set.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the set has no ports.
    pub fn is_empty(&self) -> bool {
        self.members.len() == 0
    }

    /// The keys of all members, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = PortKey> + '_ {
        self.members.keys().map(PortKey)
    }

    /// Blocks until a member has a message queued or its peer is gone, and returns its
    /// key. The message stays queued: receive it with [`get`](Self::get) or use
    /// [`recv`](Self::recv).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `epoll_wait` fails (it does not, short of a kernel bug).
    /// An empty set waits forever, as a receive on a port nobody posts to would.
    pub fn wait(&mut self) -> Result<PortKey, Error> {
        self.wait_deadline(None).map(|k| k.expect("no deadline"))
    }

    /// As [`wait`](Self::wait), giving up after `timeout`: `Ok(None)` then.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<PortKey>, Error> {
        // A timeout too long to represent is no timeout.
        self.wait_deadline(Instant::now().checked_add(timeout))
    }

    /// Looks without waiting: the key of a member that has a message or a gone peer now.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn try_wait(&mut self) -> Result<Option<PortKey>, Error> {
        self.wait_deadline(Some(Instant::now()))
    }

    /// Waits for a message on any member and receives it: the member's key, and what a
    /// receive on that port returned (a message, a `messageerror`, or `Disconnected` when
    /// its peer is gone; remove such a port).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait): the kernel refused to wait (which does not happen short
    /// of a kernel bug). What a member's receive returned is the inner `Result`.
    #[allow(clippy::type_complexity)]
    pub fn recv<T: Message>(
        &mut self,
    ) -> Result<(PortKey, Result<MessageEvent<T>, RecvError>), Error> {
        loop {
            let key = self.wait()?;
            if let Some(got) = self.receive_from(key) {
                return Ok(got);
            }
        }
    }

    /// Receives from a member `wait` reported. `None` in the one case where it has nothing
    /// after all: its peer hung up but the kernel's liveness answer said it is alive.
    #[allow(clippy::type_complexity)]
    pub(super) fn receive_from<T: Message>(
        &self,
        key: PortKey,
    ) -> Option<(PortKey, Result<MessageEvent<T>, RecvError>)> {
        let port = &self.member(key).expect("wait returns members").port;
        match port.try_recv::<T>() {
            Ok(ev) => Some((key, Ok(ev))),
            Err(e) => e.settled().map(|e| (key, Err(e))),
        }
    }

    /// As [`recv`](Self::recv), giving up after `timeout` with `Ok(None)` (what
    /// [`MessagePort::recv_timeout`] reports as `Timeout`).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    #[allow(clippy::type_complexity)]
    pub fn recv_timeout<T: Message>(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(PortKey, Result<MessageEvent<T>, RecvError>)>, Error> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let Some(key) = self.wait_deadline(deadline)? else {
                return Ok(None);
            };
            if let Some(got) = self.receive_from(key) {
                return Ok(Some(got));
            }
        }
    }

    /// How `wait` waits when no member is readable: [`WaitStrategy::Adaptive`] (the
    /// default) spins a few microseconds on the members that were active, if there are at
    /// most 8 of them, then sleeps in the kernel; [`WaitStrategy::Block`] sleeps at once
    /// (each post to a waiting member then costs its writer one system call);
    /// [`WaitStrategy::Spin`] spins for at most the given time; [`WaitStrategy::BusyPoll`]
    /// never sleeps, spinning on the active members and asking the kernel about the others
    /// between spins.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy.set_strategy(strategy);
    }

    /// How many member ports `wait` has looked at since the set was made: what a wake-up
    /// costs, counted instead of timed (tests and benches use it).
    #[doc(hidden)]
    pub fn ports_examined(&self) -> u64 {
        self.examined
    }

    fn member(&self, key: PortKey) -> Option<&Member> {
        self.members.get(key.0)
    }

    fn member_mut(&mut self, key: PortKey) -> Option<&mut Member> {
        self.members.get_mut(key.0)
    }

    /// The next ready member, waiting until `deadline` (`None`: forever).
    pub(crate) fn wait_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<PortKey>, Error> {
        loop {
            let now = Instant::now();
            let may_spin = deadline.is_none_or(|d| d > now);
            let spin_until = may_spin.then(|| deadline.unwrap_or(now + BUSY_SLICE));
            match self.next_ready(spin_until) {
                Next::Ready(key) => return Ok(Some(key)),
                Next::Busy => {
                    self.collect(Some(Duration::ZERO))?;
                    continue;
                }
                _ => {}
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(t) if !t.is_zero() => Some(t),
                    _ => {
                        // Deadline passed: one last non-blocking look at the kernel.
                        self.collect(Some(Duration::ZERO))?;
                        return Ok(match self.next_ready(None) {
                            Next::Ready(key) => Some(key),
                            _ => None,
                        });
                    }
                },
            };
            self.collect(timeout)?;
        }
    }

    /// Moves the kernel's reports into the ready queue.
    fn collect(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let r = sys::epoll_wait(self.epoll.as_fd(), timeout, &mut events);
        for ev in &events {
            let key = PortKey::from_token(ev.token);
            if let Some(m) = self.member_mut(key) {
                m.hung_up |= ev.hung_up;
                m.news = true;
                if !m.queued {
                    m.queued = true;
                    self.ready.push_back(key);
                }
            }
        }
        self.events = events;
        r.map_err(|e| Error::os("epoll_wait", e))
    }

    /// Looks at the queued members (the ones with news, or returned lately); when none is
    /// readable, spins on them a while (they are the active ones), then arms them. Returns
    /// a readable member (requeued at the back), or why there is none.
    fn next_ready(&mut self, spin_until: Option<Instant>) -> Next {
        let mut idle = std::mem::take(&mut self.idle);
        idle.clear();
        match self.look(&mut idle) {
            Look::Found(key) => return self.found(key, idle),
            Look::MoreDoorbells => {
                // Arm the others, but do not sleep while doorbells wait to be drained.
                self.arm_all(&mut idle);
                self.idle = idle;
                return Next::Busy;
            }
            Look::Empty => {}
        }
        let budget = self.strategy.spin_budget();
        match self.spin(&idle, spin_until, budget) {
            Spun::Found(key) => return self.found(key, idle),
            Spun::BusyPolling => {
                // Busy-polling: never arm; look at the kernel for the others and go on.
                self.ready.extend(idle.iter().copied());
                self.idle = idle;
                return Next::Busy;
            }
            Spun::Nothing => {}
        }
        // Arm: each member asks its writer for a doorbell, then looks once more.
        while let Some(key) = idle.pop() {
            let m = self.member_mut(key).expect("idle members are members");
            if m.port.ready_or_arm(false) {
                return self.found(key, idle);
            }
            m.queued = false;
        }
        self.idle = idle;
        if budget.is_none() {
            // Busy-polling never sleeps: poll the kernel instead.
            return Next::Busy;
        }
        Next::Armed
    }

    /// One look at each queued member: drains its doorbells and asks whether it is
    /// readable. The ones found empty go to `idle`; members put back during this look are
    /// looked at by the next one.
    fn look(&mut self, idle: &mut Vec<PortKey>) -> Look {
        let mut more_doorbells = false;
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(m) = self.member_mut(key) else {
                continue; // removed since it was queued
            };
            let hung_up = std::mem::take(&mut m.hung_up);
            let more = std::mem::take(&mut m.news) && m.port.drain_doorbells();
            let readable = m.port.readable_now(hung_up);
            // A flood of doorbells: drain the rest at the next look, after the others.
            m.news |= more;
            self.examined += 1;
            if readable {
                return Look::Found(key);
            }
            if more {
                self.ready.push_back(key);
                more_doorbells = true;
            } else {
                idle.push(key);
            }
        }
        if more_doorbells {
            Look::MoreDoorbells
        } else {
            Look::Empty
        }
    }

    /// Spins on the few members that were active (a post then costs the writer no system
    /// call and us no sleep), within the strategy's budget.
    fn spin(
        &mut self,
        idle: &[PortKey],
        spin_until: Option<Instant>,
        budget: Option<Duration>,
    ) -> Spun {
        let spin = spin_until.is_some()
            && !idle.is_empty()
            && idle.len() <= SPIN_MAX_MEMBERS
            && self.spin_pays();
        if !spin || budget == Some(Duration::ZERO) {
            return Spun::Nothing;
        }
        let start = Instant::now();
        let limit = budget.map_or(BUSY_SLICE, |b| b.min(BUSY_SLICE));
        loop {
            for _ in 0..16 {
                for &key in idle {
                    if self.member(key).is_some_and(|m| m.port.readable_now(false)) {
                        self.strategy.adapt(true);
                        self.spins_failed = 0;
                        return Spun::Found(key);
                    }
                }
                std::hint::spin_loop();
            }
            let now = Instant::now();
            if now - start >= limit || spin_until.is_some_and(|u| now >= u) {
                break;
            }
        }
        self.strategy.adapt(false);
        self.spins_failed = self.spins_failed.saturating_add(1);
        if budget.is_none() {
            Spun::BusyPolling
        } else {
            Spun::Nothing
        }
    }

    /// Whether to spin before sleeping. With the adaptive strategy, after 4 spins in a row
    /// found nothing only every 16th wait spins, to notice when spinning pays again:
    /// measured with 1,000 members each woken in turn by another thread, even a 2 µs spin
    /// that fails makes the wake-up 15–20 µs slower than sleeping at once (the woken
    /// poster is scheduled on the spinning core).
    fn spin_pays(&mut self) -> bool {
        if self.strategy.strategy() != WaitStrategy::Adaptive || self.spins_failed < 4 {
            return true;
        }
        self.spin_probe = self.spin_probe.wrapping_add(1);
        self.spin_probe % 16 == 0
    }

    /// Arms the members looked at and found empty (requeuing any that turn out readable
    /// meanwhile), then requeues `key` at the back. Left queued unarmed instead, the empty
    /// members would be looked at again by every wait while others are busy: O(members).
    fn found(&mut self, key: PortKey, mut idle: Vec<PortKey>) -> Next {
        self.arm_all(&mut idle);
        self.ready.push_back(key);
        self.idle = idle;
        Next::Ready(key)
    }

    /// Arms every member of `idle` (emptying it): each leaves the queue, or stays queued if
    /// it turned readable meanwhile.
    fn arm_all(&mut self, idle: &mut Vec<PortKey>) {
        for k in idle.drain(..) {
            let m = self.member_mut(k).expect("idle members are members");
            if m.port.ready_or_arm(false) {
                self.ready.push_back(k);
            } else {
                m.queued = false;
            }
        }
    }
}

/// What [`PortSet::next_ready`] found.
/// What one look at the queued members found.
enum Look {
    Found(PortKey),
    /// None readable, and some have doorbells left to drain.
    MoreDoorbells,
    Empty,
}

/// What a spin on the active members found.
enum Spun {
    Found(PortKey),
    /// Nothing, and the strategy never sleeps.
    BusyPolling,
    Nothing,
}

enum Next {
    Ready(PortKey),
    /// Every member is armed: wait for the kernel.
    Armed,
    /// Busy-polling: nothing yet, nothing armed; look at the kernel without waiting.
    Busy,
}

/// Spin only when this few members were active: spinning looks at each of them.
const SPIN_MAX_MEMBERS: usize = 8;
/// Longest spin between two looks at the kernel.
const BUSY_SLICE: Duration = Duration::from_micros(100);
