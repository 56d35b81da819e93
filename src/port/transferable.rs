//! `Transferable`: what a transfer list holds.

use crate::shm::buffer::ArrayBuffer;

use super::MessagePort;

/// Something that can be moved, not copied, with a message: the web's transferable objects.
///
/// Build one with `.into()` from a [`MessagePort`] or an [`ArrayBuffer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Transferable {
    /// A port: its end of its channel moves, queued messages included. (Boxed: a port is
    /// a few hundred bytes, a buffer a few words.)
    Port(Box<MessagePort>),
    /// A buffer in shared memory: its region moves, its bytes stay where they are.
    Buffer(ArrayBuffer),
}

impl From<MessagePort> for Transferable {
    fn from(port: MessagePort) -> Self {
        Transferable::Port(Box::new(port))
    }
}

impl From<ArrayBuffer> for Transferable {
    fn from(buf: ArrayBuffer) -> Self {
        Transferable::Buffer(buf)
    }
}

impl Transferable {
    /// The port, if this is one (as a transfer list handed back by
    /// [`PostError::into_inner`](crate::PostError::into_inner) holds them).
    pub fn into_port(self) -> Option<MessagePort> {
        match self {
            Transferable::Port(p) => Some(*p),
            Transferable::Buffer(_) => None,
        }
    }

    /// The buffer, if this is one.
    pub fn into_buffer(self) -> Option<ArrayBuffer> {
        match self {
            Transferable::Buffer(b) => Some(b),
            Transferable::Port(_) => None,
        }
    }

    /// Starts moving this object: a port publishes its state and is marked moved (dropping
    /// its handle then closes nothing), a pooled buffer's slot goes in transit. `false`
    /// when the slot was rewritten by another process: nothing was done.
    pub(super) fn begin_move(&self) -> bool {
        match self {
            Transferable::Port(p) => {
                p.depart().complete();
                true
            }
            Transferable::Buffer(b) => b.begin_send(),
        }
    }

    /// Undoes [`begin_move`](Self::begin_move): the move did not happen.
    pub(super) fn undo_move(&self) {
        match self {
            Transferable::Port(p) => p.moved.set(false),
            Transferable::Buffer(b) => b.unsend(),
        }
    }
}
