//! Message framing: rkyv archives tagged with a type fingerprint.
//!
//! A record of kind [`KIND_MESSAGE`] carries one rkyv archive (root at the end, as rkyv
//! writes it) and, in its tag, a fingerprint of the posted type. The fingerprint is what
//! makes a wrong-type read an error (S6): bytecheck alone can accept a `String` archive as a
//! valid `u64`.

use std::any::TypeId;
use std::cell::Cell;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::{Arena, ArenaHandle};
use rkyv::ser::writer::Buffer;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::MessageError;

/// Record kind of an inline message.
pub(crate) const KIND_MESSAGE: u32 = 2;

/// A type that can be posted through a [`MessagePort`](crate::MessagePort).
///
/// Implemented for every type that derives rkyv's `Archive`, `Serialize` and
/// `Deserialize` with `bytecheck` validation, as `#[derive(Archive, Serialize,
/// Deserialize)]` from [`shmport::rkyv`](crate::rkyv) does. Standard types (integers,
/// `String`, `Vec<T>`, tuples, `Option`, ...) are messages already.
///
/// ```
/// use shmport::rkyv::{Archive, Deserialize, Serialize};
///
/// #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
/// struct Frame {
///     seq: u64,
///     label: String,
/// }
/// fn assert_message<T: shmport::Message>() {}
/// assert_message::<Frame>();
/// ```
pub trait Message:
    Sized
    + Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Failure>>
    + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + 'static
{
}

impl<T> Message for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Failure>>
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + 'static
{
}

/// The fingerprint of `T`: FNV-1a over its type name and its archived size and alignment.
///
/// Stable across processes built from the same source with the same compiler, which is
/// what two ends of a channel are expected to be.
pub(crate) fn fingerprint_of<T: Message>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(std::any::type_name::<T>().as_bytes());
    eat(&(std::mem::size_of::<T::Archived>() as u64).to_le_bytes());
    eat(&(std::mem::align_of::<T::Archived>() as u64).to_le_bytes());
    h
}

/// A one-entry cache of the last type's fingerprint, so hashing the type name is paid
/// once per type change, not once per message.
#[derive(Debug)]
pub(crate) struct FingerprintCache(Cell<Option<(TypeId, u64)>>);

impl FingerprintCache {
    pub(crate) fn new() -> Self {
        FingerprintCache(Cell::new(None))
    }

    #[inline]
    pub(crate) fn get<T: Message>(&self) -> u64 {
        let id = TypeId::of::<T>();
        match self.0.get() {
            Some((cached, fp)) if cached == id => fp,
            _ => {
                let fp = fingerprint_of::<T>();
                self.0.set(Some((id, fp)));
                fp
            }
        }
    }
}

/// Serializes `value` into `area` (ring memory); `None` if it does not fit.
///
/// `arena` is the port's own scratch allocator for rkyv, so the hot path touches no
/// thread-local state and allocates nothing once the arena has grown to fit.
#[inline]
pub(crate) fn encode_into<T: Message>(
    value: &T,
    area: &mut [std::mem::MaybeUninit<u8>],
    arena: &mut Arena,
) -> Option<usize> {
    use rkyv::ser::Positional;
    let writer = Buffer::from(area);
    rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Failure>(value, writer, arena.acquire())
        .ok()
        .map(|w| w.pos())
}

/// Serializes `value` into `out` (cleared first): the slow path, when the ring has no room
/// or the message is too large for it. Errors are the value's own (S5).
pub(crate) fn encode_to_vec<T: Message>(
    value: &T,
    out: &mut AlignedVec<16>,
    arena: &mut Arena,
) -> Result<(), rancor::Error> {
    out.clear();
    let vec = std::mem::take(out);
    *out = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
        value,
        vec,
        arena.acquire(),
    )?;
    Ok(())
}

/// Validates an archive copied out of the ring and returns its root, without deserializing.
pub(crate) fn access<'b, T: Message>(
    bytes: &'b [u8],
    tag: u64,
    fingerprints: &FingerprintCache,
) -> Result<&'b T::Archived, MessageError> {
    if tag != fingerprints.get::<T>() {
        return Err(MessageError::TypeMismatch {
            expected: std::any::type_name::<T>(),
        });
    }
    rkyv::access::<T::Archived, rancor::Error>(bytes).map_err(MessageError::Invalid)
}

/// Validates and deserializes an archive copied out of the ring.
pub(crate) fn decode<T: Message>(
    bytes: &[u8],
    tag: u64,
    fingerprints: &FingerprintCache,
) -> Result<T, MessageError> {
    if tag != fingerprints.get::<T>() {
        return Err(MessageError::TypeMismatch {
            expected: std::any::type_name::<T>(),
        });
    }
    rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(MessageError::Invalid)
}
