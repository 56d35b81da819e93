//! Another member's ring, seen from one of its readers: records are copied out, checked,
//! then used.

use rkyv::util::AlignedVec;

use super::body::{self, KIND_BODY};
use crate::error::MessageError;
use crate::shm::fanout::Registry;
use crate::shm::ring::{Consumer, RECORD_HEADER, Record};
use crate::shm::wake::wake;
use crate::sys::sync::Ordering;

/// A whole message in one record; the tag is its type fingerprint.
pub(super) const KIND_WHOLE: u32 = 16;

pub(super) struct Inbound {
    pub slot: usize,
    pub epoch: u32,
    consumer: Consumer,
    /// The writer left (or died): once drained, this reader is done.
    pub closed: bool,
}

/// What one look at a ring found.
pub(super) enum Step {
    /// A message (its archive in the caller's buffer, with this tag), or the error its
    /// records make it.
    Got(Result<u64, MessageError>),
    /// Nothing now.
    Empty,
    /// The writer left and everything it posted was taken.
    Done,
    /// The ring's framing is impossible: nothing more can be read from it.
    Poisoned(&'static str),
}

impl Inbound {
    /// Starts reading slot `slot`'s ring where its cursor for us says (its writer put it
    /// there when it let us in). `None` when that position is impossible.
    pub(super) fn attach(reg: &Registry, slot: usize, epoch: u32, me: usize) -> Option<Self> {
        let pos = reg.cursor(slot, me).pos.load(Ordering::Relaxed);
        let consumer = reg.reader(slot, me, pos).ok()?;
        Some(Inbound {
            slot,
            epoch,
            consumer,
            closed: false,
        })
    }

    /// Takes the next message, if one is there, into `out` (`name`: the broadcast's, for
    /// fetching a large message's body).
    pub(super) fn take(&mut self, name: &str, out: &mut AlignedVec<16>) -> Step {
        let record = match self.consumer.peek() {
            Err(corrupt) => return Step::Poisoned(corrupt.0),
            Ok(Some(r)) => r,
            Ok(None) => {
                self.flush();
                let drained = || (self.consumer.unread() as usize) < RECORD_HEADER;
                return if self.closed && drained() {
                    Step::Done
                } else {
                    Step::Empty
                };
            }
        };
        let (kind, tag) = (record.header.kind, record.header.tag);
        let got = match kind {
            KIND_WHOLE => return Step::Got(Ok(self.take_whole(record, out))),
            KIND_BODY => {
                self.consumer.copy_payload(&record, out);
                let named = out.to_vec();
                body::fetch(name, &named, out).map(|()| tag)
            }
            other => Err(MessageError::UnknownKind(other)),
        };
        if self.consumer.release(record) {
            self.wake_writer();
        }
        Step::Got(got)
    }

    /// Takes the next message if it is a whole one (the usual case), into `out`, and
    /// returns its tag; `None`, taking nothing, when the ring is empty or its next record
    /// is anything else ([`take`](Self::take) then says what it is). The receive's first
    /// look, inlined into it: it builds no [`Step`].
    #[inline]
    pub(super) fn try_take_whole(&mut self, out: &mut AlignedVec<16>) -> Option<u64> {
        match self.consumer.peek() {
            Ok(Some(record)) if record.header.kind == KIND_WHOLE => {
                Some(self.take_whole(record, out))
            }
            _ => None,
        }
    }

    #[inline(always)]
    fn take_whole(&mut self, record: Record, out: &mut AlignedVec<16>) -> u64 {
        let tag = record.header.tag;
        self.consumer.copy_payload(&record, out);
        if self.consumer.release(record) {
            self.wake_writer();
        }
        tag
    }

    /// True when the writer left and nothing of what it posted is left for us (looks
    /// without taking anything).
    pub(super) fn finished(&mut self) -> bool {
        self.closed
            && matches!(self.consumer.peek(), Ok(None))
            && (self.consumer.unread() as usize) < RECORD_HEADER
    }

    /// Publishes what was released; wakes the writer if it waits for room.
    pub(super) fn flush(&mut self) {
        if self.consumer.flush() {
            self.wake_writer();
        }
    }

    fn wake_writer(&self) {
        wake(&self.consumer.mem().ctrl().writer_sleeping);
    }
}
