//! Message framing: rkyv archives tagged with a type fingerprint.
//!
//! A record of kind [`KIND_MESSAGE`] carries one rkyv archive (root at the end, as rkyv
//! writes it) and, in its tag, a fingerprint of the posted type. The fingerprint is what
//! makes a wrong-type read an error (S6): bytecheck alone can accept a `String` archive as a
//! valid `u64`.

use std::any::TypeId;
use std::cell::Cell;
use std::num::NonZeroUsize;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{self, Source};
use rkyv::ser::allocator::{Arena, ArenaHandle};
use rkyv::ser::writer::Buffer;
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::validation::Validator;
use rkyv::validation::archive::ArchiveValidator;
use rkyv::validation::shared::SharedValidator;
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
        Archived: for<'a> CheckBytes<HighValidator<'a, Invalid>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Failure>>
    + for<'a, 'b> Serialize<HighSerializer<&'b mut Bounded, ArenaHandle<'a>, rancor::Error>>
    + 'static
{
}

impl<T> Message for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, Invalid>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Failure>>
        + for<'a, 'b> Serialize<HighSerializer<&'b mut Bounded, ArenaHandle<'a>, rancor::Error>>
        + 'static
{
}

/// The fingerprint of `T`: FNV-1a over its name (its stable name if one was declared,
/// else its type name) and its archived size and alignment.
///
/// With type names, stable across processes built from the same source with the same
/// compiler; with stable names ([`declare_stable_name`]), across separately built binaries
/// whose types have the same archived layout.
pub(crate) fn fingerprint_of<T: Message>() -> u64 {
    stable_fingerprint::<T>(name_of::<T>())
}

/// FNV-1a, 64-bit.
pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Stable names declared by this process, by type; `ANY_STABLE` says whether to look.
static STABLE_NAMES: std::sync::RwLock<Vec<(TypeId, &'static str)>> =
    std::sync::RwLock::new(Vec::new());
static ANY_STABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The name `T`'s fingerprint hashes: its declared stable name, or its type name.
pub(crate) fn name_of<T: ?Sized + 'static>() -> &'static str {
    if ANY_STABLE.load(std::sync::atomic::Ordering::Acquire) {
        let id = TypeId::of::<T>();
        let names = STABLE_NAMES
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&(_, name)) = names.iter().find(|(t, _)| *t == id) {
            return name;
        }
    }
    std::any::type_name::<T>()
}

/// Declares a stable name for message type `T`, used instead of its type name in the
/// fingerprint that type-checks every message of `T` (S6).
///
/// The type name (`my_crate::proto::Frame`) is what the fingerprint hashes by default:
/// the same in two processes built from one source with one compiler, but not promised
/// across compiler versions, and changed by moving the type to another module. Two
/// programs built separately (a plugin and its host, two releases of a service, the two
/// ends of a [bridge to another host](https://docs.rs/shmport-zenoh)) declare the same
/// name for the type in both, before its first message is posted or received:
///
/// ```
/// use shmport::rkyv::{Archive, Deserialize, Serialize};
///
/// #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
/// struct Frame { seq: u64 }
///
/// shmport::declare_stable_name::<Frame>("com.example.Frame/1")?;
/// assert_eq!(
///     shmport::RawMessage::fingerprint_of::<Frame>(),
///     shmport::stable_fingerprint::<Frame>("com.example.Frame/1"),
/// );
/// # Ok::<(), shmport::Error>(())
/// ```
///
/// The fingerprint still covers the archived size and alignment, so two layouts that
/// differ there never pass for each other; a layout change that keeps both needs a new
/// name (a version suffix, as above). Declaring the same name again is a no-op.
///
/// # Errors
///
/// [`Error::StableName`](crate::Error::StableName) when `T` already has another stable
/// name, or `name` is empty.
pub fn declare_stable_name<T: ?Sized + 'static>(
    name: &'static str,
) -> Result<(), crate::error::Error> {
    let type_name = std::any::type_name::<T>();
    if name.is_empty() {
        return Err(crate::error::Error::StableName { type_name, name });
    }
    let id = TypeId::of::<T>();
    let mut names = STABLE_NAMES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match names.iter().find(|(t, _)| *t == id) {
        Some(&(_, old)) if old == name => Ok(()),
        Some(&(_, old)) => Err(crate::error::Error::StableName {
            type_name,
            name: old,
        }),
        None => {
            names.push((id, name));
            ANY_STABLE.store(true, std::sync::atomic::Ordering::Release);
            Ok(())
        }
    }
}

/// The fingerprint a message of `T` carries once `name` is its stable name, whether or not
/// this process declared it: what a forwarder or a bridge compares a
/// [`RawMessage`](crate::RawMessage)'s fingerprint with.
pub fn stable_fingerprint<T: Message>(name: &str) -> u64 {
    let mut h = Fnv::new();
    h.eat(name.as_bytes());
    h.eat(&(std::mem::size_of::<T::Archived>() as u64).to_le_bytes());
    h.eat(&(std::mem::align_of::<T::Archived>() as u64).to_le_bytes());
    h.0
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

/// Serializes `value` into `area` (a pooled buffer this process holds, for a message too
/// large for the ring); `None` if it does not fit, or if serializing fails (the slow path
/// then reports why). `area` is far below [`MAX_ARCHIVE_LEN`], so no offset can overflow.
pub(crate) fn encode_into_bytes<T: Message>(
    value: &T,
    area: &mut [u8],
    arena: &mut Arena,
) -> Option<usize> {
    use rkyv::ser::Positional;
    debug_assert!(area.len() <= MAX_ARCHIVE_LEN);
    let writer = Buffer::from(area);
    rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Failure>(value, writer, arena.acquire())
        .ok()
        .map(|w| w.pos())
}

/// The largest archive shmport writes: 2 GiB minus 64 KiB.
///
/// The wire format stores relative pointers as signed 32-bit offsets (`pointer_width_32`),
/// and rkyv panics (or, for positions past 4 GiB, silently truncates) when an offset does
/// not fit. While every byte written lies below this limit, every offset between two
/// positions fits, with 64 KiB to spare for a pointer inside an archived struct that is
/// being resolved at the current position.
pub(crate) const MAX_ARCHIVE_LEN: usize = (1 << 31) - (1 << 16);

/// The slow path's writer: a scratch vector that refuses to grow past [`MAX_ARCHIVE_LEN`],
/// so serialization stops with an error before rkyv could meet an offset it cannot store.
///
/// Public only because it appears in [`Message`]'s bounds; it cannot be built outside
/// shmport.
#[derive(Debug)]
pub struct Bounded {
    out: AlignedVec<16>,
    refused: bool,
}

impl Positional for Bounded {
    #[inline]
    fn pos(&self) -> usize {
        self.out.len()
    }
}

impl<E: Source> Writer<E> for Bounded {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        // `out.len() <= MAX_ARCHIVE_LEN` always holds, so the subtraction cannot wrap.
        if bytes.len() > MAX_ARCHIVE_LEN - self.out.len() {
            self.refused = true;
            return Err(E::new(ArchiveTooLarge));
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

#[derive(Debug)]
struct ArchiveTooLarge;

impl std::fmt::Display for ArchiveTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the archive would exceed {MAX_ARCHIVE_LEN} bytes")
    }
}

impl std::error::Error for ArchiveTooLarge {}

/// Why [`encode_to_vec`] failed.
#[derive(Debug)]
pub(crate) enum EncodeError {
    /// The value's own serialization failed (S5).
    Value(rancor::Error),
    /// The archive would exceed [`MAX_ARCHIVE_LEN`].
    TooLarge,
}

/// Serializes `value` into `out` (cleared first): the slow path, when the ring has no room
/// or the message is too large for it.
///
/// No panic of rkyv's escapes: the writer stops at [`MAX_ARCHIVE_LEN`], and, as a last
/// resort for a type whose archived struct puts a pointer more than 64 KiB into itself, a
/// panic raised by rkyv's infallible offset writing (a `rancor::Panic`) is caught and
/// reported as `TooLarge`; the arena is then replaced, since it was left mid-use. Panics of
/// the value's own code are resumed, not swallowed. (With `panic = "abort"` nothing can
/// be caught; the limit still holds for every ordinary type.) After `TooLarge` the scratch
/// vector is freed, so a refused giant does not stay allocated.
pub(crate) fn encode_to_vec<T: Message>(
    value: &T,
    out: &mut AlignedVec<16>,
    arena: &mut Arena,
) -> Result<(), EncodeError> {
    let mut bounded = Bounded {
        out: std::mem::take(out),
        refused: false,
    };
    bounded.out.clear();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            value,
            &mut bounded,
            arena.acquire(),
        )
        .map(drop)
    }));
    let result = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) if bounded.refused => Err(EncodeError::TooLarge),
        Ok(Err(e)) => Err(EncodeError::Value(e)),
        Err(payload) if is_rkyv_offset_panic(&*payload) => {
            *arena = Arena::new();
            Err(EncodeError::TooLarge)
        }
        Err(payload) => std::panic::resume_unwind(payload),
    };
    *out = match result {
        Err(EncodeError::TooLarge) => AlignedVec::new(),
        _ => bounded.out,
    };
    result
}

/// True for the panic rkyv raises when an infallible step (writing a relative pointer)
/// fails: `rancor::Panic` formats it as "created a new `Panic` from: ...".
fn is_rkyv_offset_panic(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    text.is_some_and(|t| t.starts_with("created a new `Panic` from"))
}

/// How many levels of pointers (boxes, vectors, strings, ...) a received archive may nest
/// by default; see [`MessagePort::set_max_depth`](crate::MessagePort::set_max_depth).
///
/// rkyv's validator and deserializer recurse once per level: this bound is what keeps a
/// hostile archive from overflowing the receiver's stack. At this depth, validating and
/// deserializing the nested types measured (docs/design.md, "Limits and hostile inputs")
/// take at most about 60 KiB of stack in release builds and 670 KiB in debug builds, of
/// the 2 MiB a spawned thread has.
pub(crate) const DEFAULT_MAX_DEPTH: usize = 512;

/// Validates `bytes` as an archive of `T` nesting at most `max_depth` levels.
fn validate<T: Message>(bytes: &[u8], max_depth: usize) -> Result<&T::Archived, MessageError> {
    // rkyv counts the root as one subtree, and fails when its budget reaches 0.
    let limit = NonZeroUsize::new(max_depth.saturating_add(2));
    let mut validator = Validator::new(
        ArchiveValidator::with_max_depth(bytes, limit),
        SharedValidator::new(),
    );
    rkyv::api::access_with_context::<T::Archived, _, Invalid>(bytes, &mut validator).map_err(|e| {
        if e.too_deep {
            MessageError::TooDeep { max_depth }
        } else {
            MessageError::Invalid(rancor::Error::new(e))
        }
    })
}

/// The error of validation: like rancor's `Failure` (nothing allocated, no message), but
/// it remembers whether the failure was rkyv's depth limit, which rkyv reports only as a
/// trace of a private type.
///
/// Public only because it appears in [`Message`]'s bounds.
#[derive(Debug)]
pub struct Invalid {
    too_deep: bool,
}

/// True for rkyv's `ExceededMaximumSubtreeDepth` (pinned by a test: a deep archive is
/// `TooDeep`, not `Invalid`).
fn is_depth_limit<R: ?Sized>() -> bool {
    std::any::type_name::<R>().ends_with("ExceededMaximumSubtreeDepth")
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.too_deep {
            "the archive nests too deeply"
        } else {
            "the archive is invalid"
        })
    }
}

impl std::error::Error for Invalid {}

impl rancor::Trace for Invalid {
    fn trace<R>(self, _: R) -> Self
    where
        R: std::fmt::Debug + std::fmt::Display + Send + Sync + 'static,
    {
        Invalid {
            too_deep: self.too_deep || is_depth_limit::<R>(),
        }
    }
}

impl Source for Invalid {
    fn new<T: std::error::Error + Send + Sync + 'static>(_: T) -> Self {
        Invalid {
            too_deep: is_depth_limit::<T>(),
        }
    }
}

fn check_tag<T: Message>(tag: u64, fingerprints: &FingerprintCache) -> Result<(), MessageError> {
    if tag != fingerprints.get::<T>() {
        return Err(MessageError::TypeMismatch {
            expected: std::any::type_name::<T>(),
        });
    }
    Ok(())
}

/// Validates an archive copied out of the ring and returns its root, without deserializing.
pub(crate) fn access<'b, T: Message>(
    bytes: &'b [u8],
    tag: u64,
    fingerprints: &FingerprintCache,
    max_depth: usize,
) -> Result<&'b T::Archived, MessageError> {
    check_tag::<T>(tag, fingerprints)?;
    validate::<T>(bytes, max_depth)
}

/// Validates and deserializes an archive copied out of the ring. Deserializing recurses as
/// validation does, so `max_depth` bounds both.
pub(crate) fn decode<T: Message>(
    bytes: &[u8],
    tag: u64,
    fingerprints: &FingerprintCache,
    max_depth: usize,
) -> Result<T, MessageError> {
    let archived = access::<T>(bytes, tag, fingerprints, max_depth)?;
    rkyv::api::high::deserialize::<T, rancor::Error>(archived).map_err(MessageError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::nest::{Nest, Shape};

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Decodes `archive` as a `Nest` with the default limit, as a receive would.
    fn decode_nest(archive: &[u8]) -> Result<Nest, MessageError> {
        let mut copy = AlignedVec::<16>::new();
        copy.extend_from_slice(archive);
        let fingerprints = FingerprintCache::new();
        let tag = fingerprint_of::<Nest>();
        decode::<Nest>(&copy, tag, &fingerprints, DEFAULT_MAX_DEPTH)
    }

    /// Runs `f` on a thread with a 2 MiB stack, the default for spawned threads.
    fn on_a_2_mib_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn max_depth_counts_levels_of_pointers() {
        let fingerprints = FingerprintCache::new();
        let levels = |bytes: &AlignedVec, tag, limit| {
            let mut copy = AlignedVec::<16>::new();
            copy.extend_from_slice(bytes);
            decode::<Vec<Vec<u8>>>(&copy, tag, &fingerprints, limit).is_ok()
        };
        let two = rkyv::to_bytes::<rancor::Error>(&vec![vec![1u8]]).unwrap();
        let tag = fingerprint_of::<Vec<Vec<u8>>>();
        assert!(levels(&two, tag, 2));
        assert!(!levels(&two, tag, 1));
    }

    #[test]
    fn a_nest_one_level_past_the_limit_is_too_deep_and_one_at_it_decodes() {
        on_a_2_mib_stack(|| {
            let at = Shape::chain(DEFAULT_MAX_DEPTH).archive();
            assert!(decode_nest(&at).is_ok());
            let past = Shape::chain(DEFAULT_MAX_DEPTH + 1).archive();
            assert!(matches!(
                decode_nest(&past),
                Err(MessageError::TooDeep {
                    max_depth: DEFAULT_MAX_DEPTH
                })
            ));
        });
    }

    /// The decoder's property: for archives deep (up to a million levels), wide (up to
    /// 100,000 children), both, and corrupted at random, decoding on a 2 MiB stack returns
    /// (never overflows, never panics); a well-formed archive decodes exactly when its
    /// depth is within the limit.
    #[test]
    fn deep_and_wide_archives_decode_or_fail_cleanly_on_a_2_mib_stack() {
        on_a_2_mib_stack(|| {
            let mut shapes = Vec::new();
            for levels in [1, 2, 100, 511, 512, 513, 1_000, 10_000, 100_000, 1_000_000] {
                shapes.push(Shape::chain(levels));
            }
            for width in [1, 1_000, 100_000] {
                shapes.push(Shape::wide(width));
            }
            for (levels, extra) in [(10, 100), (500, 3), (600, 3), (5_000, 2)] {
                shapes.push(Shape::comb(levels, extra));
            }
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            for shape in &shapes {
                let depth = shape.depth();
                let archive = shape.archive();
                let decoded = decode_nest(&archive);
                if depth <= DEFAULT_MAX_DEPTH {
                    assert!(decoded.is_ok(), "depth {depth}: {decoded:?}");
                } else {
                    assert!(
                        matches!(decoded, Err(MessageError::TooDeep { .. })),
                        "depth {depth}"
                    );
                }
                // Corrupt copies: any outcome but a crash.
                for _ in 0..20 {
                    let mut bad = archive.clone();
                    for _ in 0..1 + xorshift(&mut rng) % 4 {
                        let at = (xorshift(&mut rng) % bad.len() as u64) as usize;
                        bad[at] ^= 1 << (xorshift(&mut rng) % 8);
                    }
                    let _ = decode_nest(&bad);
                }
            }
        });
    }

    #[test]
    fn an_offset_panic_of_rkyv_is_recognised_and_others_are_not() {
        let rkyv_panic = std::panic::catch_unwind(|| {
            let _: rancor::Panic = Source::new(ArchiveTooLarge);
        })
        .unwrap_err();
        assert!(is_rkyv_offset_panic(&*rkyv_panic));
        let other = std::panic::catch_unwind(|| panic!("a handler's own bug")).unwrap_err();
        assert!(!is_rkyv_offset_panic(&*other));
    }
}
