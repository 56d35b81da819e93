//! Handing this end of the channel to a new owner (a child process, an endpoint's caller,
//! a transfer) and taking one over: one wire form, one departure, one arrival.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::Error;
use crate::shm::heap::{self, Heap};
use crate::shm::segment::{Segment, Side};
use crate::shm::wake::WaitStrategy;
use crate::sys;
use crate::wire::transfer::MAX_HEAPS_PER_CHANNEL;

use super::MessagePort;

/// What carries one end of a channel to a new owner: the segment's descriptor, the end's
/// socket, and which side of the segment the end is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortWire<'a> {
    pub segment: BorrowedFd<'a>,
    pub socket: BorrowedFd<'a>,
    pub side: Side,
}

/// A move of a port's end in progress: the port has published its state and is marked
/// moved. Dropped without [`complete`](Departure::complete), the move is undone and the
/// handle owns its end again.
#[must_use = "dropping a Departure undoes the move"]
pub(crate) struct Departure<'a> {
    port: &'a MessagePort,
}

impl Departure<'_> {
    /// The end now lives elsewhere: dropping the handle will close nothing.
    pub(crate) fn complete(self) {
        std::mem::forget(self);
    }
}

impl Drop for Departure<'_> {
    fn drop(&mut self) {
        self.port.moved.set(false);
    }
}

impl MessagePort {
    /// The descriptors that carry this end elsewhere (its socket is created on first need).
    pub(crate) fn wire(&self) -> std::io::Result<PortWire<'_>> {
        Ok(PortWire {
            segment: self.seg.fd(),
            socket: self.socket()?,
            side: self.side,
        })
    }

    /// Starts moving this end: publishes what this handle has consumed, so the new owner
    /// starts where we stopped, and marks the handle moved.
    pub(crate) fn depart(&self) -> Departure<'_> {
        if let Ok(mut rx) = self.rx.try_borrow_mut() {
            rx.flush();
        }
        self.moved.set(true);
        Departure { port: self }
    }

    /// Takes over an end that arrived as descriptors: checks that `socket` is a socket,
    /// opens and validates the segment, and attaches to `side` from its published state.
    ///
    /// `heaps` is the heap table of the ring it reads, as [`heap_table_to_carry`] gave it
    /// where it came from: the records queued for it may name those heaps by index.
    ///
    /// [`heap_table_to_carry`]: Self::heap_table_to_carry
    pub(crate) fn arrive(
        segment: OwnedFd,
        socket: OwnedFd,
        side: usize,
        heaps: Vec<OwnedFd>,
    ) -> Result<Self, Error> {
        let side = Side::new(side).filter(|_| heaps.len() <= MAX_HEAPS_PER_CHANNEL);
        let Some(side) = side.filter(|_| sys::is_socket(socket.as_fd())) else {
            return Err(Error::BadBootstrap("a port's descriptors are malformed"));
        };
        let table = heaps
            .into_iter()
            .map(|fd| heap::adopt(fd).map(Some))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::InvalidSegment)?;
        let seg = Segment::open(segment)?;
        let port = MessagePort::attach(Arc::new(seg), side, Some(socket), WaitStrategy::default())?;
        *port.heaps_received.borrow_mut() = table;
        Ok(port)
    }

    /// The heap table of the ring this port reads, for a move: up to its first lost entry
    /// (whose writer has been asked to start over, so nothing after it is needed).
    pub(crate) fn heap_table_to_carry(&self) -> Vec<Arc<Heap>> {
        let table = self.heaps_received.borrow();
        table.iter().map_while(Clone::clone).collect()
    }

    /// This end's socket, created with its peer's on first need. A channel whose two ports
    /// live in one process needs none until one of them leaves (spawned or transferred)
    /// or posts a transfer; the first to need one creates the pair and leaves the other
    /// end with the segment, where the peer port picks it up.
    pub(super) fn socket(&self) -> std::io::Result<BorrowedFd<'_>> {
        if let Some(s) = self.sock.get() {
            return Ok(s.as_fd());
        }
        let mine = self.seg.take_or_create_socket(self.side)?;
        Ok(self.sock.get_or_init(|| mine).as_fd())
    }
}
