//! `PostError`: why a post failed, with the transfer list handed back.

use std::fmt;

use super::Transferable;

/// Why a post failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PostErrorKind {
    /// The peer's ring is full (only from `try_post_message`, or from
    /// `post_message_timeout` when the timeout passed).
    Full,
    /// The peer is gone: nobody will ever receive this message (S16).
    Disconnected,
    /// The value could not be encoded (S5); nothing was sent.
    Encode(rkyv::rancor::Error),
    /// The transfer list is invalid (the web's `DataCloneError`, S7/S8); nothing moved.
    DataClone(&'static str),
    /// `post_message` was called on this port from inside the serialization of another
    /// message on the same port.
    Reentrant,
    /// The operating system refused what the post needed (shared memory for a large
    /// message's body, the descriptor-passing socket).
    Os(std::io::Error),
    /// The object was closed: posting to a closed
    /// [`BroadcastChannel`](crate::BroadcastChannel) (the web's `InvalidStateError`).
    Closed,
    /// The message's archive would exceed `max` bytes
    /// ([`MessagePort::MAX_MESSAGE_LEN`](crate::MessagePort::MAX_MESSAGE_LEN)): the wire
    /// format's offsets are 32-bit. Serialization stopped at the limit; nothing was sent.
    TooLarge {
        /// The largest archive a message may have, in bytes.
        max: usize,
    },
    /// The port belongs to another process: this process is a copy made by `fork`
    /// without `exec`, which shares the parent's shared memory and descriptors. Using an
    /// inherited port would corrupt the parent's channel, so it is refused; spawn processes
    /// with [`spawn`](crate::spawn) instead. Nothing was sent.
    WrongProcess,
}

/// A failed post: why it failed, and every transferable handed back untouched.
///
/// `Send + Sync + 'static` even though it may hold ports (which are not `Sync`): the
/// transfer list sits behind a mutex, so `?` works into `Box<dyn Error + Send + Sync>`.
pub struct PostError {
    kind: PostErrorKind,
    transfer: std::sync::Mutex<Vec<Transferable>>,
}

impl PostError {
    pub(crate) fn new(kind: PostErrorKind, transfer: Vec<Transferable>) -> Self {
        PostError {
            kind,
            transfer: std::sync::Mutex::new(transfer),
        }
    }

    /// Why the post failed.
    pub fn kind(&self) -> &PostErrorKind {
        &self.kind
    }

    /// True when the ring was full (`try_post_message` only); retrying later may succeed.
    pub fn is_full(&self) -> bool {
        matches!(self.kind, PostErrorKind::Full)
    }

    /// True when the peer is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self.kind, PostErrorKind::Disconnected)
    }

    /// Hands back the transfer list, in the order it was given.
    pub fn into_inner(self) -> Vec<Transferable> {
        self.transfer
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostError")
            .field("kind", &self.kind)
            .field(
                "transferables",
                &self.transfer.lock().map_or(0, |t| t.len()),
            )
            .finish()
    }
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PostErrorKind::Full => f.write_str("the peer's ring is full"),
            PostErrorKind::Disconnected => f.write_str("the peer port is closed"),
            PostErrorKind::Encode(e) => write!(f, "message could not be encoded: {e}"),
            PostErrorKind::DataClone(why) => write!(f, "DataCloneError: {why}"),
            PostErrorKind::Os(e) => write!(f, "the operating system refused: {e}"),
            PostErrorKind::Closed => f.write_str("InvalidStateError: the channel is closed"),
            PostErrorKind::TooLarge { max } => {
                write!(
                    f,
                    "the message is too large: its archive would exceed {max} bytes"
                )
            }
            PostErrorKind::WrongProcess => f.write_str(
                "the port belongs to another process (this one is a fork of it): \
                 inherited ports cannot be used after fork without exec",
            ),
            PostErrorKind::Reentrant => {
                f.write_str("post_message re-entered on the same port during serialization")
            }
        }
    }
}

impl std::error::Error for PostError {}
