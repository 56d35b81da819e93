//! The shared-memory segment of one channel: a versioned header, two ring control
//! blocks and two data areas. docs/layout.md is the format specification; the
//! compile-time assertions below pin this file to it.

use std::cell::UnsafeCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};

use memmap2::MmapRaw;

use crate::error::Error;
use crate::shm::ring::{RingCtrl, RingMem};
use crate::sys;
use crate::sys::sync::AtomicU32;

/// `b"SHMPORT\0"` read as a little-endian `u64`.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMPORT\0");
/// Bumped on any change to the layout or the record format.
pub(crate) const LAYOUT_VERSION: u32 = 3;
/// Offset of the first data area: the header and control blocks get a page of their own.
pub(crate) const DATA_OFFSET: usize = 4096;
/// Ring capacities are whole multiples of this, so data areas stay page-aligned.
pub(crate) const CAPACITY_GRANULE: usize = 4096;
/// Smallest ring capacity accepted.
pub(crate) const MIN_CAPACITY: usize = CAPACITY_GRANULE;
/// Largest ring capacity accepted (record lengths and offsets are `u32`).
pub(crate) const MAX_CAPACITY: usize = 1 << 30;
/// Default ring capacity per direction: the whole channel fits in 252 KiB (P6) and each
/// ring holds over 1,500 records of 64 payload bytes.
pub(crate) const DEFAULT_CAPACITY: usize = 124 * 1024;

/// The fixed header at offset 0 of every segment.
///
/// Fields above `closed` are written once by the creator before the segment is shared and
/// are only ever read through volatile copies, then checked. `closed[i]` is set to 1 when
/// the port on side `i` closes; it pairs (Release store / Acquire load) with the peer's
/// drain-then-disconnect check.
#[repr(C, align(128))]
pub(crate) struct Header {
    pub magic: u64,
    pub version: u32,
    pub data_offset: u32,
    pub ring_capacity: u32,
    pub reserved0: u32,
    pub segment_len: u64,
    pub reserved1: UnsafeCell<[u8; 96]>,
    pub closed: [AtomicU32; 2],
    pub reserved2: UnsafeCell<[u8; 120]>,
    pub rings: [RingCtrl; 2],
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == 768);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, version) == 8);
    assert!(offset_of!(Header, data_offset) == 12);
    assert!(offset_of!(Header, ring_capacity) == 16);
    assert!(offset_of!(Header, segment_len) == 24);
    assert!(offset_of!(Header, closed) == 128);
    assert!(offset_of!(Header, rings) == 256);
    assert!(size_of::<Header>() <= DATA_OFFSET);
};

/// One end of a channel: side 0 writes ring 0 and reads ring 1, side 1 the reverse. Its
/// `closed` flag and socket slot are its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Side(u8);

impl Side {
    pub(crate) const ZERO: Side = Side(0);
    pub(crate) const ONE: Side = Side(1);

    /// The side numbered `n`, if there is one (0 or 1).
    pub(crate) fn new(n: usize) -> Option<Side> {
        (n <= 1).then_some(Side(n as u8))
    }

    /// The other end.
    pub(crate) fn peer(self) -> Side {
        Side(self.0 ^ 1)
    }

    /// 0 or 1: its number on the wire, and the index of the ring it writes.
    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A mapped channel segment. Only raw pointers into it are handed out.
pub(crate) struct Segment {
    map: MmapRaw,
    fd: OwnedFd,
    capacity: usize,
    identity: (u64, u64),
    /// In-process rendezvous for the channel's socket pair, created lazily: the end left
    /// here for side `i` is picked up by the port on side `i` of this mapping.
    sockets: std::sync::Mutex<[Option<OwnedFd>; 2]>,
}

// SAFETY: the mapping is reached only through raw pointers and atomics; the segment's
// plain fields are immutable after construction.
unsafe impl Send for Segment {}
// SAFETY: as above: every access to the shared bytes goes through atomics or through the
// ring protocol, which gives each byte range one writer at a time.
unsafe impl Sync for Segment {}

impl Segment {
    /// Total mapped length for a ring capacity.
    pub(crate) fn len_for(capacity: usize) -> usize {
        DATA_OFFSET + 2 * capacity
    }

    /// Rounds a requested capacity up to the granule and checks its range.
    pub(crate) fn checked_capacity(requested: usize) -> Result<usize, Error> {
        let rounded = requested
            .checked_next_multiple_of(CAPACITY_GRANULE)
            .filter(|c| (MIN_CAPACITY..=MAX_CAPACITY).contains(c))
            .filter(|_| requested > 0);
        rounded.ok_or(Error::InvalidCapacity {
            requested,
            min: MIN_CAPACITY,
            max: MAX_CAPACITY,
        })
    }

    /// Creates and initializes a new segment with two rings of `capacity` bytes each.
    pub(crate) fn create(capacity: usize) -> Result<Segment, Error> {
        let len = Self::len_for(capacity);
        // The error names the step that failed (memfd_create, ftruncate, ...).
        let fd = sys::create_shared_memory("shmport-channel", len as u64).map_err(Error::from)?;
        let map = sys::map_shared(fd.as_fd(), len).map_err(|e| Error::os("mmap", e))?;
        let hdr = map.as_mut_ptr().cast::<Header>();
        // SAFETY: the mapping is at least DATA_OFFSET >= size_of::<Header>() bytes, page
        // aligned (so aligned for Header), fresh from memfd (zero-filled, which is a valid
        // state for every atomic), and not yet shared with anyone: no other writer exists.
        unsafe {
            ptr::addr_of_mut!((*hdr).magic).write(MAGIC);
            ptr::addr_of_mut!((*hdr).version).write(LAYOUT_VERSION);
            ptr::addr_of_mut!((*hdr).data_offset).write(DATA_OFFSET as u32);
            ptr::addr_of_mut!((*hdr).ring_capacity).write(capacity as u32);
            ptr::addr_of_mut!((*hdr).segment_len).write(len as u64);
        }
        let identity = sys::file_identity(fd.as_fd()).map_err(|e| Error::os("fstat", e))?;
        Ok(Segment {
            map,
            fd,
            capacity,
            identity,
            sockets: Default::default(),
        })
    }

    /// Maps a segment received from another process and validates its header.
    ///
    /// The length comes from the kernel, not from the header; every header field is copied
    /// once and checked against it, so a hostile creator cannot make us index outside the
    /// mapping.
    pub(crate) fn open(fd: OwnedFd) -> Result<Segment, Error> {
        let (map, len) = super::map_received(&fd, DATA_OFFSET + 2 * MIN_CAPACITY)?;
        let hdr = map.as_ptr().cast::<Header>();
        // SAFETY: the mapping holds at least size_of::<Header>() bytes (checked above) and
        // is page aligned. Volatile reads copy each field once; a concurrent writer can give
        // us any value, which the checks below reject.
        let (magic, version, data_offset, capacity, segment_len) = unsafe {
            (
                ptr::addr_of!((*hdr).magic).read_volatile(),
                ptr::addr_of!((*hdr).version).read_volatile(),
                ptr::addr_of!((*hdr).data_offset).read_volatile(),
                ptr::addr_of!((*hdr).ring_capacity).read_volatile(),
                ptr::addr_of!((*hdr).segment_len).read_volatile(),
            )
        };
        check_header(magic, version, data_offset, capacity, segment_len, len)?;
        let identity = sys::file_identity(fd.as_fd()).map_err(|e| Error::os("fstat", e))?;
        Ok(Segment {
            map,
            fd,
            capacity: capacity as usize,
            identity,
            sockets: Default::default(),
        })
    }

    fn header(&self) -> *const Header {
        self.map.as_ptr().cast()
    }

    /// The descriptor of the shared-memory object, for handing to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket end left for side `side` by its peer, or a new pair: one end for `side`,
    /// the other left for the peer.
    pub(crate) fn take_or_create_socket(&self, side: Side) -> std::io::Result<OwnedFd> {
        let mut slots = self
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mine) = slots[side.index()].take() {
            return Ok(mine);
        }
        let (mine, theirs) = sys::socket_pair()?;
        slots[side.peer().index()] = Some(theirs);
        Ok(mine)
    }

    /// The socket end left for side `side`, if its peer created the pair.
    pub(crate) fn take_deposited_socket(&self, side: Side) -> Option<OwnedFd> {
        let mut slots = self
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots[side.index()].take()
    }

    /// Which shared-memory object this is: equal for every mapping of the same channel.
    pub(crate) fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// The ring capacity of each direction, in bytes (validated).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The `closed` flag of `side`.
    pub(crate) fn closed_flag(&self, side: Side) -> &AtomicU32 {
        // SAFETY: the header is in bounds and aligned (checked at create/open); atomics may
        // be shared with other processes; a side's index is 0 or 1.
        unsafe { &(*self.header()).closed[side.index()] }
    }

    /// The control block of the ring `writer` writes.
    pub(crate) fn ring_ctrl(&self, writer: Side) -> &RingCtrl {
        // SAFETY: in bounds and aligned (checked at create/open); every shared field of a
        // RingCtrl is an atomic.
        unsafe { &(*self.header()).rings[writer.index()] }
    }

    /// Raw access to the ring `writer` writes. Valid while `self` lives.
    pub(crate) fn ring(&self, writer: Side) -> RingMem {
        let idx = writer.index();
        let base = self.map.as_mut_ptr();
        // SAFETY: header and data areas are in bounds: len >= DATA_OFFSET + 2 * capacity
        // was checked at create/open.
        unsafe {
            let ctrl = ptr::addr_of!((*self.header()).rings[idx]);
            let data = base.add(DATA_OFFSET + idx * self.capacity);
            RingMem::new(
                NonNull::new_unchecked(ctrl.cast_mut()),
                NonNull::new_unchecked(data),
                self.capacity,
            )
        }
    }
}

/// Validates header fields copied out of a segment against its real length.
pub(crate) fn check_header(
    magic: u64,
    version: u32,
    data_offset: u32,
    capacity: u32,
    segment_len: u64,
    real_len: usize,
) -> Result<(), Error> {
    if magic != MAGIC {
        return Err(Error::InvalidSegment("bad magic number"));
    }
    if version != LAYOUT_VERSION {
        return Err(Error::InvalidSegment("unsupported layout version"));
    }
    if data_offset as usize != DATA_OFFSET {
        return Err(Error::InvalidSegment("unexpected data offset"));
    }
    let capacity = capacity as usize;
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) || capacity % CAPACITY_GRANULE != 0 {
        return Err(Error::InvalidSegment("ring capacity out of range"));
    }
    if segment_len != real_len as u64 || Segment::len_for(capacity) != real_len {
        return Err(Error::InvalidSegment(
            "segment length does not match its header",
        ));
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn segment_from_bytes(bytes: &[u8]) -> Result<Segment, Error> {
        let fd = rustix::fs::memfd_create(
            "shmport-test",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).unwrap();
        rustix::fs::fcntl_add_seals(
            &file,
            rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
        )
        .unwrap();
        Segment::open(OwnedFd::from(file))
    }

    pub(crate) fn valid_image(capacity: usize) -> Vec<u8> {
        let mut img = vec![0u8; Segment::len_for(capacity)];
        img[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        img[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        img[12..16].copy_from_slice(&(DATA_OFFSET as u32).to_le_bytes());
        img[16..20].copy_from_slice(&(capacity as u32).to_le_bytes());
        let len = img.len() as u64;
        img[24..32].copy_from_slice(&len.to_le_bytes());
        img
    }

    #[test]
    fn a_well_formed_segment_opens() {
        assert_eq!(
            segment_from_bytes(&valid_image(8192)).unwrap().capacity(),
            8192
        );
    }

    #[test]
    fn a_segment_that_could_shrink_is_refused() {
        let fd = rustix::fs::memfd_create("shmport-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(&valid_image(8192)).unwrap();
        assert!(matches!(
            Segment::open(OwnedFd::from(file)),
            Err(Error::InvalidSegment(
                "segment is not sealed against shrinking"
            ))
        ));
    }

    #[test]
    fn a_segment_with_a_bad_magic_number_is_refused() {
        let mut img = valid_image(8192);
        img[0] ^= 1;
        assert!(matches!(
            segment_from_bytes(&img),
            Err(Error::InvalidSegment("bad magic number"))
        ));
    }

    #[test]
    fn a_segment_of_another_layout_version_is_refused() {
        let mut img = valid_image(8192);
        img[8] = 99;
        assert!(matches!(
            segment_from_bytes(&img),
            Err(Error::InvalidSegment(_))
        ));
    }

    #[test]
    fn a_truncated_segment_is_refused() {
        let img = valid_image(8192);
        assert!(matches!(
            segment_from_bytes(&img[..img.len() - 4096]),
            Err(Error::InvalidSegment(_))
        ));
        assert!(matches!(
            segment_from_bytes(&img[..100]),
            Err(Error::InvalidSegment(_))
        ));
    }

    #[test]
    fn a_header_claiming_more_capacity_than_the_object_holds_is_refused() {
        let mut img = valid_image(8192);
        img[16..20].copy_from_slice(&(1u32 << 29).to_le_bytes());
        assert!(matches!(
            segment_from_bytes(&img),
            Err(Error::InvalidSegment(_))
        ));
    }

    #[test]
    fn a_capacity_off_the_granule_is_refused() {
        let mut img = valid_image(8192);
        img[16..20].copy_from_slice(&8000u32.to_le_bytes());
        assert!(matches!(
            segment_from_bytes(&img),
            Err(Error::InvalidSegment(_))
        ));
    }
}
