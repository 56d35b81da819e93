//! With the `serde` feature: messages of serde types, carried in postcard's compact
//! format and type-checked like rkyv messages.
//!
//! Why postcard: a stable, documented wire format (1.0, with a specification), compact
//! (variable-length integers, no field names), with no dependencies beyond
//! serde, and maintained for embedded and IPC use, where this crate's users come from.
//! bincode 1 is in maintenance and bincode 2 changed its format and API.

use std::time::{Duration, Instant};

use ::serde::Serialize;
use ::serde::de::DeserializeOwned;
use rkyv::rancor::Source;

use crate::error::{MessageError, RecvError, RecvTimeoutError, TryRecvError};
use crate::wire::codec::{Fnv, name_of};

use super::*;

/// The fingerprint a serde message of `T` carries: FNV-1a over a format tag and `T`'s
/// name (its [stable name](crate::declare_stable_name) if declared, else its type name).
/// It never equals an rkyv fingerprint of the same type, so a serde message received as
/// an rkyv one (or the reverse) is a type mismatch.
pub fn serde_fingerprint_of<T: ?Sized + 'static>() -> u64 {
    let mut h = Fnv::new();
    h.eat(b"postcard\0");
    h.eat(name_of::<T>().as_bytes());
    h.0
}

thread_local! {
    /// Where a serde post encodes (reused: no allocation per post once it has grown).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn decode_serde<T: DeserializeOwned + 'static>(bytes: &[u8], tag: u64) -> Result<T, MessageError> {
    if tag != serde_fingerprint_of::<T>() {
        return Err(MessageError::TypeMismatch {
            expected: std::any::type_name::<T>(),
        });
    }
    postcard::from_bytes(bytes).map_err(|e| MessageError::Invalid(rkyv::rancor::Error::new(e)))
}

impl MessagePort {
    /// Posts a value of any serde type, encoded with postcard, with `transfer` moving
    /// alongside as for [`post_message`](Self::post_message). Receive it with
    /// [`recv_serde`](Self::recv_serde) as the same type.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Job { id: u32, tags: Vec<String> }
    ///
    /// let ch = shmport::MessageChannel::new()?;
    /// let job = Job { id: 7, tags: vec!["urgent".into()] };
    /// ch.port1.post_serde(&job, [])?;
    /// assert_eq!(ch.port2.recv_serde::<Job>()?.data, job);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message); [`PostErrorKind::Encode`] when the
    /// value's `Serialize` fails.
    pub fn post_serde<T: Serialize + ?Sized + 'static>(
        &self,
        msg: &T,
        transfer: impl IntoIterator<Item = Transferable>,
    ) -> Result<(), PostError> {
        let list: Vec<Transferable> = transfer.into_iter().collect();
        SCRATCH.with(|scratch| {
            // A post from inside a `Serialize` impl finds the scratch taken: use a new one.
            let mut fresh = Vec::new();
            let mut held = scratch.try_borrow_mut();
            let buf = match held.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut fresh,
            };
            buf.clear();
            let encoded = postcard::to_extend(msg, std::mem::take(buf));
            match encoded {
                Ok(bytes) => {
                    *buf = bytes;
                    self.post_raw(buf, serde_fingerprint_of::<T>(), list)
                }
                Err(e) => {
                    let kind = PostErrorKind::Encode(rkyv::rancor::Error::new(e));
                    Err(PostError::new(kind, list))
                }
            }
        })
    }

    /// Receives the next message as a serde type posted by
    /// [`post_serde`](Self::post_serde), waiting as [`recv`](Self::recv) does.
    ///
    /// Postcard's decoder recurses once per level of nesting, with no limit of its own:
    /// receive types whose nesting is bounded (no `Box<Self>` recursion) from peers you
    /// do not trust; [`max_depth`](Self::max_depth) applies to rkyv messages only.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv): a message posted as another type, or bytes postcard
    /// refuses, are a [`MessageError`] for that message; the port keeps working.
    pub fn recv_serde<T: DeserializeOwned + 'static>(&self) -> Result<MessageEvent<T>, RecvError> {
        Self::untimed(self.recv_until(None, &mut decode_serde::<T>))
    }

    /// [`recv_serde`](Self::recv_serde), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_serde_timeout<T: DeserializeOwned + 'static>(
        &self,
        timeout: Duration,
    ) -> Result<MessageEvent<T>, RecvTimeoutError> {
        self.recv_until(Instant::now().checked_add(timeout), &mut decode_serde::<T>)
    }

    /// [`recv_serde`](Self::recv_serde) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_serde<T: DeserializeOwned + 'static>(
        &self,
    ) -> Result<MessageEvent<T>, TryRecvError> {
        self.try_recv_now(&mut decode_serde::<T>)
    }
}
