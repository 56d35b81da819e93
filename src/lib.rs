//! The web's Channel Messaging API for native processes, over shared memory.
//!
//! [`MessageChannel::new`] gives two entangled [`MessagePort`]s backed by one shared-memory
//! segment holding two single-producer single-consumer rings, one per direction.
//! [`MessagePort::post_message`] writes an [rkyv] archive of the message straight into the
//! ring; [`MessagePort::recv`] hands back a [`MessageEvent`]. Ports work the same between
//! threads and between processes: [`spawn`] hands a port to a child process, the native
//! analogue of posting a port into an iframe.
//!
//! ```
//! use shmport::MessageChannel;
//! use shmport::rkyv::{Archive, Deserialize, Serialize};
//!
//! #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
//! struct Reading {
//!     sensor: String,
//!     value: f64,
//! }
//!
//! let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
//! let worker = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     while let Ok(ev) = port2.recv::<Reading>() {
//!         port2.post_message(&(ev.data.value * 2.0), [])?;
//!     }
//!     Ok(()) // port1 was dropped: Disconnected ends the loop
//! });
//! port1.post_message(&Reading { sensor: "t1".into(), value: 21.5 }, [])?;
//! assert_eq!(port1.recv::<f64>()?.data, 43.0);
//! drop(port1);
//! worker.join().unwrap().unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Semantics
//!
//! The web's rules, as this crate keeps them. Docs and tests cite them by number.
//!
//! | | Rule |
//! |---|---|
//! | S1 | A new channel's two ports are entangled: a message posted on one arrives at the other. |
//! | S2 | Delivery is FIFO per port and never happens inside the sender's `post_message`. |
//! | S3 | Messages posted before the receiver starts receiving are queued, not dropped. |
//! | S4 | `data` is a deep copy of the posted value; the sender may reuse or drop its value at once. |
//! | S5 | A value that cannot be encoded is rejected by `post_message`, and nothing is sent. |
//! | S6 | A message that cannot be decoded (wrong type, corrupt bytes, an unmappable region) is the web's `messageerror`: an error for that message, which is consumed; the port keeps working. |
//! | S7 | Posting the same object twice, or a port through itself, is impossible (ownership) or an error; nothing moves when a post fails. |
//! | S8 | Posting a port to its own entangled peer is an error that hands everything back. |
//! | S9 | A transferred buffer is gone from the sender; the receiver gets its full length and contents without a copy. |
//! | S10 | A transferred port arrives as a working port entangled with the original peer. |
//! | S11 | Messages queued for a port when it is transferred are delivered first, in order, wherever it goes. |
//! | S12 | Both ports of one channel can be transferred, together or to different processes, and stay entangled. |
//! | S13 | A port whose peer has closed can still be transferred; it arrives disconnected. |
//! | S14 | `close()` is idempotent (it consumes the port); messages posted before the peer closed are still delivered. |
//! | S15 | After the peer closes, drops, exits or is killed, `recv` drains what was queued, then returns `Disconnected`; a blocked `recv` wakes promptly. |
//! | S16 | Posting to a port whose peer is gone is an error that hands ownership back. |
//! | S17 | A closed port cannot be transferred: `close` consumes it, so this is a compile error. |
//!
//! See `docs/design.md` for the architecture and `docs/layout.md` for the shared-memory
//! format.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The layers, bottom to top; each imports only from those below it (`.ci/layers` checks).
#[macro_use]
mod trace; // `event!`: diagnostics through `tracing` (feature), usable by every layer
mod error; // errors of setup and receive calls: imports nothing of the crate
mod named; // meeting by name or by birth: Endpoint, BroadcastChannel, spawn/parent_port
mod port; // MessagePort and MessageChannel, ArrayBuffer transfers, PostError
mod shm; // shared memory: segments, rings, heaps, the futex word and waiting on it
mod sys; // every system call, behind one set of names per operating system
mod wait; // waiting outside a port: PortSet, async receives, on_message dispatch
mod wire; // formats of what crosses between processes: records, transfer items, doorbells

// cargo-fuzz builds with `--cfg fuzzing`; tests/fuzz_corpus.rs replays the corpora so.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(test, loom))]
mod loom_tests;

pub use error::{Error, MessageError, RecvError, RecvTimeoutError, TryRecvError};
pub use named::broadcast::{
    BroadcastChannel, BroadcastMessages, BroadcastRecvFuture, IntoBroadcastMessages,
    MAX_BROADCAST_MEMBERS,
};
pub use named::endpoint::{Endpoint, MAX_ENDPOINT_NAME};
pub use named::process::{BOOTSTRAP_ENV, parent_port, spawn};
#[cfg(feature = "serde")]
pub use port::serde_fingerprint_of;
pub use port::{
    ChannelBuilder, Iter, MessageChannel, MessageEvent, MessagePort, PortStats, PostError,
    PostErrorKind, RawMessage, Transferable, TryIter,
};
pub use shm::buffer::ArrayBuffer;
pub use shm::wake::WaitStrategy;
pub use wait::dispatch::{HandlerPanicked, MessageHandler};
pub use wait::future::{IntoMessages, Messages, PostFuture, RecvFuture};
pub use wait::portset::{InsertError, PortKey, PortSet};
pub use wait::portset_async::WaitFuture;
pub use wait::sink::{PostSink, TransferSink};
pub use wire::codec::{Message, declare_stable_name, stable_fingerprint};

/// The rkyv version shmport speaks; derive your messages' traits from here.
pub use rkyv;

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
