//! The errors of setup calls and receives: one type per operation, each variant actionable.
//! This module is the bottom of the crate: every layer may use it, it uses none.
//! ([`PostError`](crate::PostError) hands ports back, so it lives with the port.)

use std::fmt;
use std::io;

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
    /// [`declare_stable_name`](crate::declare_stable_name) was given an empty name, or
    /// the type already has another stable name (which stays).
    StableName {
        /// The type.
        type_name: &'static str,
        /// Its stable name: the one declared before, or the empty one refused.
        name: &'static str,
    },
    /// No process of this user serves this endpoint name.
    NoSuchEndpoint(String),
    /// A `BroadcastChannel` name already has
    /// [`MAX_BROADCAST_MEMBERS`](crate::MAX_BROADCAST_MEMBERS) open channels.
    TooManyMembers(String),
    /// The port belongs to another process: this process is a copy of it made by `fork`
    /// without `exec` (see [`PostErrorKind::WrongProcess`](crate::PostErrorKind::WrongProcess)).
    WrongProcess,
}

impl Error {
    /// The operating system's error inside, for a caller that reports `io::Error`s.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Error::Os { source, .. } => source,
            other => io::Error::other(other),
        }
    }

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
            Error::StableName {
                type_name,
                name: "",
            } => {
                write!(f, "an empty stable name for {type_name}")
            }
            Error::StableName { type_name, name } => {
                write!(f, "{type_name} already has the stable name {name:?}")
            }
            Error::InvalidName(name) => write!(
                f,
                "invalid endpoint name {name:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'"
            ),
            Error::NameInUse(name) => write!(f, "endpoint {name:?} is already served"),
            Error::NoSuchEndpoint(name) => write!(f, "no process serves endpoint {name:?}"),
            Error::TooManyMembers(name) => write!(
                f,
                "BroadcastChannel {name:?} already has the most open channels it can have"
            ),
            Error::WrongProcess => f.write_str(
                "the port belongs to another process (this one is a fork of it): \
                 inherited ports cannot be used after fork without exec",
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
    /// The archive nests pointers (boxes, vectors, strings, ...) deeper than the receiving
    /// port accepts ([`MessagePort::set_max_depth`](crate::MessagePort::set_max_depth)):
    /// validating it could overflow the stack.
    TooDeep {
        /// The port's limit when the message arrived.
        max_depth: usize,
    },
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
            MessageError::TooDeep { max_depth } => {
                write!(
                    f,
                    "message nests deeper than this port's limit of {max_depth} levels"
                )
            }
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

        impl $name {
            /// True when the peer is gone and its queue drained.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected)
            }

            /// True when a message arrived but could not be decoded (the web's
            /// `messageerror`): the port still works.
            pub fn is_message_error(&self) -> bool {
                matches!(self, $name::MessageError(_))
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
    /// Only from [`MessagePort::recv_async`](crate::MessagePort::recv_async),
    /// [`BroadcastChannel::recv_async`](crate::BroadcastChannel::recv_async) and their
    /// streams: the kernel refused what waiting without polling needs (the reactor thread,
    /// its epoll registration, or the channel's socket; a broadcast channel's bell waiter
    /// thread; descriptor or memory limits).
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

impl TryRecvError {
    /// True when nothing is queued and the peer is alive.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }

    /// What a waiting receive makes of this: `None` for `Empty` (wait on), the error to
    /// return otherwise.
    pub(crate) fn settled(self) -> Option<RecvError> {
        match self {
            TryRecvError::Empty => None,
            TryRecvError::Disconnected => Some(RecvError::Disconnected),
            TryRecvError::MessageError(e) => Some(RecvError::MessageError(e)),
        }
    }
}

impl RecvTimeoutError {
    /// True when nothing arrived before the timeout and the peer is alive.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }
}

impl From<RecvError> for RecvTimeoutError {
    /// A receive that ended before its deadline: `Os` (only async receives report it)
    /// becomes `Disconnected`, since the port cannot wait any more.
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::MessageError(e) => RecvTimeoutError::MessageError(e),
            _ => RecvTimeoutError::Disconnected,
        }
    }
}

impl From<RecvTimeoutError> for RecvError {
    /// An untimed wait never times out, so only `Disconnected` and `MessageError` occur.
    fn from(e: RecvTimeoutError) -> Self {
        match e {
            RecvTimeoutError::MessageError(e) => RecvError::MessageError(e),
            _ => RecvError::Disconnected,
        }
    }
}
