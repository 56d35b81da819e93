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
