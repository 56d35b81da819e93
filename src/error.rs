//! One error type per operation, each variant actionable (SPEC §2).

use std::fmt;
use std::io;

use crate::transfer::Transferable;

/// Why a setup call (`MessageChannel::new`, `spawn`, `parent_port`, ...) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a call; `op` names it.
    Os {
        /// The call that failed, for example `"memfd_create"`.
        op: &'static str,
        /// What the operating system said.
        source: io::Error,
    },
    /// The requested ring capacity is outside what the layout supports.
    InvalidCapacity {
        /// What was asked for, in bytes.
        requested: usize,
        /// The smallest capacity accepted.
        min: usize,
        /// The largest capacity accepted.
        max: usize,
    },
    /// This process was not started by [`spawn`](crate::spawn), so it has no parent port.
    NoParentPort,
    /// [`parent_port`](crate::parent_port) was already called in this process.
    ParentPortTaken,
    /// The bootstrap information handed to this process is malformed.
    BadBootstrap(&'static str),
    /// A shared-memory segment failed validation (wrong magic, version or sizes).
    InvalidSegment(&'static str),
    /// An endpoint name is empty, longer than 64 bytes, or has characters other than ASCII
    /// letters, digits, `.`, `_` and `-`.
    InvalidName(String),
    /// A live process of this user already serves this endpoint name.
    NameInUse(String),
    /// No process of this user serves this endpoint name.
    NoSuchEndpoint(String),
    /// A `BroadcastChannel` name already has
    /// [`MAX_BROADCAST_MEMBERS`](crate::MAX_BROADCAST_MEMBERS) open channels.
    TooManyMembers(String),
}

impl Error {
    pub(crate) fn os(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Os {
            op,
            source: source.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os { op, source } => write!(f, "{op} failed: {source}"),
            Error::InvalidCapacity {
                requested,
                min,
                max,
            } => write!(
                f,
                "ring capacity of {requested} bytes is out of range ({min}..={max} bytes)"
            ),
            Error::NoParentPort => f.write_str(
                "this process has no parent port: it was not started with shmport::spawn",
            ),
            Error::ParentPortTaken => {
                f.write_str("parent_port() was already called in this process")
            }
            Error::BadBootstrap(why) => write!(f, "malformed bootstrap information: {why}"),
            Error::InvalidSegment(why) => write!(f, "invalid shared-memory segment: {why}"),
            Error::InvalidName(name) => write!(
                f,
                "invalid endpoint name {name:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'"
            ),
            Error::NameInUse(name) => write!(f, "endpoint {name:?} is already served"),
            Error::NoSuchEndpoint(name) => write!(f, "no process serves endpoint {name:?}"),
            Error::TooManyMembers(name) => write!(
                f,
                "BroadcastChannel {name:?} already has {} open channels",
                crate::MAX_BROADCAST_MEMBERS
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A message that arrived but could not be decoded: the web's `messageerror`.
///
/// The message is consumed; the port keeps working for the next one (S6).
#[derive(Debug)]
#[non_exhaustive]
pub enum MessageError {
    /// The message was posted as another type than the one asked for.
    TypeMismatch {
        /// The type the receiver asked for.
        expected: &'static str,
    },
    /// The archive failed validation (corrupt or hostile bytes).
    Invalid(rkyv::rancor::Error),
    /// A transferred object (port, buffer, out-of-ring body) could not be rebuilt: a
    /// forged, stale or unmappable descriptor. The objects that did arrive are dropped.
    Transfer(&'static str),
    /// The record is of a kind this version of shmport does not know.
    UnknownKind(u32),
    /// The record framing itself was impossible; the channel is poisoned and now reports
    /// `Disconnected`.
    Corrupt(&'static str),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::TypeMismatch { expected } => {
                write!(f, "message was posted as a different type than {expected}")
            }
            MessageError::Invalid(e) => write!(f, "message failed validation: {e}"),
            MessageError::Transfer(why) => write!(f, "transferred object rejected: {why}"),
            MessageError::UnknownKind(k) => write!(f, "record of unknown kind {k}"),
            MessageError::Corrupt(why) => {
                write!(f, "channel poisoned by corrupt shared memory: {why}")
            }
        }
    }
}

impl std::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MessageError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

macro_rules! recv_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* } $(+ $(#[$odoc:meta])* $os:ident)?) => {
        $(#[$doc])*
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// The peer is gone (closed, dropped, exited or killed) and every message it
            /// posted has been received.
            Disconnected,
            /// A message arrived but could not be decoded (the web's `messageerror`); it was
            /// consumed and the port keeps working.
            MessageError(MessageError),
            $($(#[$odoc])* $os(io::Error),)?
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant => f.write_str($text),)*
                    $name::Disconnected => f.write_str("the peer port is closed and its queue drained"),
                    $name::MessageError(e) => write!(f, "messageerror: {e}"),
                    $($name::$os(e) => write!(f, "the operating system refused what waiting needs: {e}"),)?
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::MessageError(e) => Some(e),
                    $($name::$os(e) => Some(e),)?
                    _ => None,
                }
            }
        }

        impl From<MessageError> for $name {
            fn from(e: MessageError) -> Self {
                $name::MessageError(e)
            }
        }
    };
}

recv_error!(
    /// Why [`MessagePort::recv`](crate::MessagePort::recv) (or `recv_async`, or a
    /// [`PortSet`](crate::PortSet) receive) returned no message.
    RecvError {} +
    /// Only from [`MessagePort::recv_async`](crate::MessagePort::recv_async) and its
    /// stream: the kernel refused what waiting without polling needs (the reactor thread,
    /// its epoll registration, or the channel's socket; descriptor or memory limits).
    Os
);
recv_error!(
    /// Why [`MessagePort::try_recv`](crate::MessagePort::try_recv) returned no message.
    TryRecvError {
        /// Nothing is queued and the peer is alive.
        Empty => "no message is queued",
    }
);
recv_error!(
    /// Why [`MessagePort::recv_timeout`](crate::MessagePort::recv_timeout) returned no message.
    RecvTimeoutError {
        /// Nothing arrived before the timeout and the peer is alive.
        Timeout => "timed out waiting for a message",
    }
);

/// Why a post failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PostErrorKind {
    /// The peer's ring is full (only from `try_post_message`).
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
            PostErrorKind::Reentrant => {
                f.write_str("post_message re-entered on the same port during serialization")
            }
        }
    }
}

impl std::error::Error for PostError {}
