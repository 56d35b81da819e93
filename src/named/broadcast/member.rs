//! One open `BroadcastChannel`: its ring, the rings it reads, and what it took in while a
//! post waited.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use super::body::{Bodies, KIND_BODY, MAX_BODIES};
use super::inbound::{Inbound, KIND_WHOLE, Step};
use super::join::Joined;
use super::outbound::Outbound;
use super::service::{self, Registration};
use super::table::{self, ACTIVE, CLOSED, LIVE};
use crate::error::{Error, MessageError};
use crate::shm::bell;
use crate::shm::fanout::Registry;
use crate::shm::ring::Producer;
use crate::shm::wake::{LIVENESS_INTERVAL, WaitStrategy, Waiter, next_nap};
use crate::sys::sync::Ordering;
use crate::wire::codec::{self, Message};

/// Messages a receive takes from one ring in a row before it looks at the next first.
const STREAK: u32 = 64;

/// How long a receive spins before it sleeps. A fan-out usually runs more processes than
/// cores, and a reader spinning longer holds a core its writer needs: measured with the
/// comparison crate's `fanout` on 2 cores, a fixed 20 µs gave 10-30% more posts/s to 4
/// subscribers than the ports' adaptive spin (2-100 µs), and as many to one. The spin
/// also yields the core every 64 looks (`sched_yield`, see `Member::spin`).
const SPIN: Duration = Duration::from_micros(20);

/// How often a post waiting for room takes in what the others sent us.
const DRAIN_EVERY: Duration = Duration::from_millis(1);

/// Most bytes a member holds in its backlog (messages taken in while its posts waited for
/// room); past it, a post waits without taking more in. Each entry counts its archive's
/// length plus this much for its bookkeeping.
const BACKLOG_LIMIT: usize = 64 << 20;
const BACKLOG_ENTRY_COST: usize = 64;

/// What a waiting post waits for.
#[derive(Clone, Copy)]
enum Need {
    /// Room for a record of this many payload bytes.
    Room(usize),
    /// Fewer than `MAX_BODIES` bodies in flight.
    Bodies,
}

/// Where the message `Member::next` found is.
pub(super) enum Found {
    /// In `Member::incoming`, with this tag.
    Incoming(u64),
    /// Taken in earlier by a waiting post.
    Backlog(AlignedVec<16>, u64),
}

type Backlogged = Result<(AlignedVec<16>, u64), MessageError>;

pub(super) struct Member {
    reg: Arc<Registry>,
    name: String,
    me: usize,
    epoch: u32,
    /// The generation last acted on.
    seen: u32,
    out: Outbound,
    inbound: Vec<Inbound>,
    /// The reader to look at first next time (round robin, for fairness among writers),
    /// and how many messages in a row came from it.
    next: usize,
    streak: u32,
    /// The archive of the last message taken from a ring.
    pub incoming: AlignedVec<16>,
    /// The length of the last archive posted: the room an in-place post asks for.
    size_hint: usize,
    backlog: VecDeque<Backlogged>,
    backlog_bytes: usize,
    post_waiter: Waiter,
    /// The next slot a sleeping receive checks the liveness of.
    probe: usize,
    /// Bodies of our large messages that readers may still fetch.
    bodies: Bodies,
    /// Kept to the end: dropping them frees our names.
    _names: Vec<Registration>,
}

impl Member {
    pub(super) fn new(name: &str, joined: Joined) -> Result<Member, Error> {
        let Joined {
            reg,
            slot,
            epoch,
            names,
        } = joined;
        let producer = Producer::attach(reg.ring(slot)).map_err(|c| Error::InvalidSegment(c.0))?;
        let mut m = Member {
            seen: reg.generation().load(Ordering::Acquire).wrapping_sub(1),
            reg,
            name: name.to_owned(),
            me: slot,
            epoch,
            out: Outbound::new(producer),
            inbound: Vec::new(),
            next: 0,
            streak: 0,
            incoming: AlignedVec::new(),
            size_hint: 0,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            post_waiter: Waiter::new(WaitStrategy::Adaptive),
            probe: 0,
            bodies: Bodies::default(),
            _names: names,
        };
        m.sync();
        Ok(m)
    }

    /// Acts on membership changes since the last look: one load when there are none
    /// (inlined into every post and look for messages; the catching up is not).
    #[inline]
    fn sync(&mut self) {
        // Acquire: pairs with the Release bump in `table::bump`.
        let g = self.reg.generation().load(Ordering::Acquire);
        if g != self.seen {
            self.resync(g);
        }
    }

    #[cold]
    #[inline(never)]
    fn resync(&mut self, g: u32) {
        self.seen = g;
        let let_in = self.out.sync(&self.reg, self.me);
        self.sync_inbound();
        self.forget_finished();
        if let_in {
            table::bump(&self.reg); // the members let in start reading
        }
    }

    /// Starts reading the rings we were let into, marks closed those whose writer left,
    /// forgets those we were dropped from.
    fn sync_inbound(&mut self) {
        let (reg, me) = (&*self.reg, self.me);
        self.inbound.retain(|ib| {
            let (e, s) = table::read(reg, ib.slot);
            let c = reg.cursor(ib.slot, me);
            e == ib.epoch
                && matches!(s, LIVE | CLOSED)
                && c.state.load(Ordering::Relaxed) == ACTIVE
                && c.epoch.load(Ordering::Relaxed) == self.epoch
        });
        for j in (0..reg.slots()).filter(|&j| j != me) {
            let (e, s) = table::read(reg, j);
            if !matches!(s, LIVE | CLOSED) {
                continue;
            }
            if let Some(ib) = self.inbound.iter_mut().find(|ib| ib.slot == j) {
                ib.closed = s == CLOSED;
                continue;
            }
            let c = reg.cursor(j, me);
            // Acquire: pairs with the writer's Release store of ACTIVE (its position).
            if c.state.load(Ordering::Acquire) != ACTIVE
                || c.epoch.load(Ordering::Relaxed) != self.epoch
            {
                continue;
            }
            match Inbound::attach(reg, j, e, me) {
                Some(mut ib) => {
                    ib.closed = s == CLOSED;
                    self.inbound.push(ib);
                }
                None => table::done_reading(reg, j, me, self.epoch),
            }
        }
    }

    /// Posts `msg` serialized straight into our ring, if the ring has room now for a
    /// record the size of the last one and the archive fits in the room there is
    /// (`Producer::write_in_place`): the usual case, with no scratch copy (as a port's
    /// post). `false`, having written nothing, otherwise: the
    /// caller encodes the message and hands it to [`post`](Self::post).
    #[inline]
    pub(super) fn try_post_in_place<T: Message>(
        &mut self,
        msg: &T,
        fingerprint: u64,
        arena: &mut Arena,
    ) -> bool {
        self.sync();
        if self.size_hint > self.out.producer.mem().max_payload() {
            return false;
        }
        let encode = |area: &mut [_]| codec::encode_into(msg, area, arena);
        let producer = &mut self.out.producer;
        let Some(len) = producer.write_in_place(self.size_hint, KIND_WHOLE, fingerprint, encode)
        else {
            return false;
        };
        self.size_hint = len;
        bell::ring(self.reg.bell(), self.reg.sleepers());
        true
    }

    /// Posts one archive: written once in our ring, read by every member.
    pub(super) fn post(&mut self, archive: &[u8], fingerprint: u64) -> Result<(), Error> {
        self.sync();
        self.size_hint = archive.len();
        if archive.len() <= self.out.producer.mem().max_payload() {
            self.write(archive, KIND_WHOLE, fingerprint);
        } else {
            self.post_body(archive, fingerprint)?;
        }
        bell::ring(self.reg.bell(), self.reg.sleepers());
        Ok(())
    }

    /// Posts a message too large for a record: its body apart, a record naming it.
    fn post_body(&mut self, archive: &[u8], fingerprint: u64) -> Result<(), Error> {
        self.out.refresh(&self.reg, self.me);
        self.bodies.drop_passed(self.out.low());
        if self.bodies.len() >= MAX_BODIES {
            self.wait_for(Need::Bodies);
        }
        let (record, served) = self
            .bodies
            .publish(&self.name, &self.reg, self.me, self.epoch, archive)?;
        self.write(&record, KIND_BODY, fingerprint);
        self.bodies.keep(self.out.producer.position(), served);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8], kind: u32, tag: u64) {
        if self.out.producer.try_write(bytes, kind, tag) {
            return;
        }
        if !self.out.room_for(&self.reg, self.me, bytes.len()) {
            self.wait_for(Need::Room(bytes.len()));
        }
        let written = self.out.producer.try_write(bytes, kind, tag);
        debug_assert!(written, "room was found for the record");
    }

    /// Whether what a waiting post needs is there now.
    fn satisfied(
        out: &mut Outbound,
        bodies: &mut Bodies,
        reg: &Registry,
        me: usize,
        need: Need,
    ) -> bool {
        match need {
            Need::Room(len) => out.room_for(reg, me, len),
            Need::Bodies => {
                out.refresh(reg, me);
                bodies.drop_passed(out.low());
                bodies.len() < MAX_BODIES
            }
        }
    }

    /// Waits until the slowest reader leaves what `need` says. Meanwhile takes in what
    /// the others sent us, so that members posting to each other faster than they receive
    /// do not wait for each other for good, and lets go of readers found dead.
    fn wait_for(&mut self, need: Need) {
        // Readers asleep on what we wrote so far must wake to make room.
        bell::ring(self.reg.bell(), self.reg.sleepers());
        let mut next_probe = Instant::now() + LIVENESS_INTERVAL;
        loop {
            self.drain_incoming();
            self.sync();
            let reg = self.reg.clone();
            let (out, bodies, me) = (&mut self.out, &mut self.bodies, self.me);
            if Self::satisfied(out, bodies, &reg, me, need) {
                return;
            }
            let mem = reg.ring(me);
            let deadline = Instant::now() + DRAIN_EVERY;
            let done = self.post_waiter.wait(
                &mem.ctrl().writer_sleeping,
                Some(deadline),
                || Self::satisfied(out, bodies, &reg, me, need).then_some(()),
                || None,
            );
            if done.is_some() {
                return;
            }
            if Instant::now() >= next_probe {
                next_probe = Instant::now() + LIVENESS_INTERVAL;
                let slowest: Vec<(usize, u32)> = self.out.slowest().collect();
                for (k, e) in slowest {
                    if table::is_dead(&self.name, k) {
                        table::reap(&reg, k, e);
                    }
                }
            }
        }
    }

    /// Takes every message queued for us into the backlog (up to its limit).
    fn drain_incoming(&mut self) {
        self.sync();
        let mut i = 0;
        while i < self.inbound.len() {
            let mut finished = false;
            while self.backlog_bytes < BACKLOG_LIMIT {
                let mut archive = AlignedVec::new();
                match self.inbound[i].take(&self.name, &mut archive) {
                    Step::Got(got) => {
                        self.backlog_bytes += archive.len() + BACKLOG_ENTRY_COST;
                        self.backlog.push_back(got.map(|tag| (archive, tag)));
                    }
                    Step::Empty => break,
                    Step::Done => {
                        finished = true;
                        break;
                    }
                    Step::Poisoned(why) => {
                        self.backlog.push_back(Err(MessageError::Corrupt(why)));
                        finished = true;
                        break;
                    }
                }
            }
            if finished {
                self.forget(i);
            } else {
                self.inbound[i].flush();
                i += 1;
            }
        }
    }

    /// Stops reading the rings whose writers left with nothing left for us.
    fn forget_finished(&mut self) {
        let mut i = 0;
        while i < self.inbound.len() {
            if self.inbound[i].finished() {
                self.forget(i);
            } else {
                i += 1;
            }
        }
    }

    /// Stops reading ring `i` (drained after its writer left, or poisoned).
    fn forget(&mut self, i: usize) {
        let ib = self.inbound.swap_remove(i);
        table::done_reading(&self.reg, ib.slot, self.me, self.epoch);
    }

    /// The receive's first look: the next whole message of the ring the last one came
    /// from, if that is where the next message is (into [`Member::incoming`]; its tag),
    /// else `None` having taken nothing, and [`try_next`](Self::try_next) looks
    /// everywhere. Inlined into the receive, so that a message arriving in a stream costs
    /// no walk over the rings and no `Found` to build and match.
    #[inline]
    pub(super) fn try_next_quick(&mut self) -> Option<u64> {
        if !self.backlog.is_empty() {
            return None;
        }
        self.sync();
        let tag = self
            .inbound
            .get_mut(self.next)?
            .try_take_whole(&mut self.incoming)?;
        self.took_from(self.next);
        Some(tag)
    }

    /// Counts a message taken from ring `i`: the next look starts there again (the next
    /// record is likely there, and the others' empty rings cost a look each), but not
    /// for more than [`STREAK`] in a row. `next` may then be one past the last ring;
    /// `try_next` brings it back within them.
    #[inline]
    fn took_from(&mut self, i: usize) {
        self.streak += 1;
        self.next = i;
        if self.streak >= STREAK {
            self.streak = 0;
            self.next = i + 1;
        }
    }

    /// The next message from any ring (or the backlog), without waiting.
    pub(super) fn try_next(&mut self) -> Option<Result<Found, MessageError>> {
        if let Some(entry) = self.backlog.pop_front() {
            let entry = entry.map(|(archive, tag)| {
                self.backlog_bytes -= archive.len() + BACKLOG_ENTRY_COST;
                Found::Backlog(archive, tag)
            });
            return Some(entry);
        }
        self.sync();
        let mut n = self.inbound.len();
        let mut k = 0;
        while k < n {
            // `(next + k) % n` without a division (tens of cycles per look): `next` is
            // at most the count before a `forget`, so at most two laps over `n`.
            let mut i = self.next + k;
            while i >= n {
                i -= n;
            }
            match self.inbound[i].take(&self.name, &mut self.incoming) {
                Step::Got(got) => {
                    self.took_from(i);
                    return Some(got.map(Found::Incoming));
                }
                Step::Empty => k += 1,
                Step::Done => {
                    self.forget(i);
                    n -= 1;
                }
                Step::Poisoned(why) => {
                    self.forget(i);
                    return Some(Err(MessageError::Corrupt(why)));
                }
            }
        }
        None
    }

    /// Waits for the next message until `deadline` (`None`: for as long as it takes).
    pub(super) fn next(
        &mut self,
        deadline: Option<Instant>,
    ) -> Option<Result<Found, MessageError>> {
        if let Some(found) = self.try_next() {
            return Some(found);
        }
        if let Some(found) = self.spin(deadline) {
            return Some(found);
        }
        loop {
            let nap = next_nap(deadline)?;
            let reg = self.reg.clone();
            if let Some(found) = bell::sleep(reg.bell(), reg.sleepers(), nap, || self.try_next()) {
                return Some(found);
            }
            if let Some(found) = self.try_next() {
                return Some(found);
            }
            self.probe_one();
        }
    }

    /// The next message, or else (after announcing a sleeper on the bell and looking once
    /// more) `Err` with the bell's value to sleep on: the first half of a sleep whose second
    /// half another thread does (`wait/bell_waiter.rs`).
    pub(super) fn next_or_announce(&mut self) -> Result<Result<Found, MessageError>, u32> {
        if let Some(found) = self.try_next() {
            return Ok(found);
        }
        let seen = bell::announce(self.reg.bell(), self.reg.sleepers());
        self.try_next().ok_or(seen)
    }

    /// The name's segment, for a thread that sleeps on its bell.
    pub(super) fn registry(&self) -> Arc<Registry> {
        self.reg.clone()
    }

    /// The spin phase of a wait: [`SPIN`] at most, then the caller sleeps.
    fn spin(&mut self, deadline: Option<Instant>) -> Option<Result<Found, MessageError>> {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
                if let Some(found) = self.try_next() {
                    return Some(found);
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) || now - start >= SPIN {
                return None;
            }
            // Let a runnable thread have this core: usually there is none and the call
            // returns at once, but a fan-out often runs more processes than cores, and
            // the one that could post the next message may be waiting for this one.
            std::thread::yield_now();
        }
    }

    /// Checks whether one other member is still alive (one per sleep, in turn), so that a
    /// killed member is forgotten even when nobody asks.
    pub(super) fn probe_one(&mut self) {
        let slots = self.reg.slots();
        for _ in 0..slots {
            let k = self.probe;
            self.probe = (self.probe + 1) % slots;
            if k == self.me {
                continue;
            }
            if let Some(e) = table::live_epoch(&self.reg, k) {
                if table::is_dead(&self.name, k) {
                    table::reap(&self.reg, k, e);
                }
                return;
            }
        }
    }

    /// How many other members are live now, after forgetting the dead and finishing with
    /// the rings of those that left with nothing left for us.
    pub(super) fn peers(&mut self) -> usize {
        for k in (0..self.reg.slots()).filter(|&k| k != self.me) {
            if let Some(e) = table::live_epoch(&self.reg, k) {
                if table::is_dead(&self.name, k) {
                    table::reap(&self.reg, k, e);
                }
            }
        }
        self.sync();
        self.forget_finished();
        (0..self.reg.slots())
            .filter(|&k| k != self.me && table::live_epoch(&self.reg, k).is_some())
            .count()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Our names go first (the doorkeeper stops handing out the segment for us), then
        // the slot closes: what we posted stays readable until every reader took it.
        self._names.clear();
        let closed = table::word(self.epoch, CLOSED);
        service::adopt(self.reg.clone(), self.me, closed, self.bodies.take());
        table::leave(&self.reg, self.me, self.epoch);
    }
}
