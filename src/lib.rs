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
//! Delivery is FIFO per port (S2), messages posted before the receiver starts are queued
//! (S3), `data` is a deep copy (S4), a message that cannot be decoded as the requested type
//! is an error for that message only (S6, the web's `messageerror`). Dropping or closing a
//! port, or the death of its process, makes the peer drain what was queued and then get
//! `Disconnected` (S14, S15); posting to a gone peer is an error that hands everything
//! back (S16). `close` consumes the port, so using or transferring a closed port is a
//! compile error rather than the web's runtime error (S17).
//!
//! See `docs/design.md` for the architecture and `docs/layout.md` for the shared-memory
//! format.

#![warn(missing_docs)]

// The layers, bottom to top; each imports only from those below it (`.ci/layers` checks).
mod error; // errors of setup and receive calls: imports nothing of the crate
mod named;
mod port; // MessagePort and MessageChannel, ArrayBuffer transfers, PostError
mod shm; // shared memory: segments, rings, heaps, the futex word and waiting on it
mod sys; // every system call, behind one set of names per operating system
mod wait; // waiting outside a port: PortSet, async receives, on_message dispatch
mod wire; // formats of what crosses between processes: records, transfer items, doorbells // meeting by name or by birth: Endpoint, BroadcastChannel, spawn/parent_port

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(test, loom))]
mod loom_tests;

pub use error::{Error, MessageError, RecvError, RecvTimeoutError, TryRecvError};
pub use named::broadcast::{BroadcastChannel, MAX_BROADCAST_MEMBERS};
pub use named::endpoint::{Endpoint, MAX_ENDPOINT_NAME};
pub use named::process::{BOOTSTRAP_ENV, parent_port, spawn};
pub use port::{
    ChannelBuilder, MessageChannel, MessageEvent, MessagePort, PostError, PostErrorKind,
    Transferable,
};
pub use shm::buffer::ArrayBuffer;
pub use shm::wake::WaitStrategy;
pub use wait::dispatch::{HandlerPanicked, MessageHandler};
pub use wait::future::{Messages, RecvFuture};
pub use wait::portset::{InsertError, PortKey, PortSet};
pub use wire::codec::Message;

/// The rkyv version shmport speaks; derive your messages' traits from here.
pub use rkyv;

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
