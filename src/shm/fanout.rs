//! The shared segment of one `BroadcastChannel` name: a member table and, per member
//! slot, one single-writer many-reader ring with a cursor per reader. docs/layout.md,
//! "Broadcast segment", is the format specification; the assertions below pin this file
//! to it.
//!
//! Every member maps the whole segment read-write, so any member can write any byte of
//! it. Nothing here trusts what it reads: accessors hand out atomics and [`RingMem`]s
//! (whose users check every index and header before use), and slot and reader numbers
//! are checked against the table size the kernel-reported length confirms.

use std::cell::UnsafeCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};

use memmap2::MmapRaw;

use crate::error::Error;
use crate::shm::ring::{Consumer, Corrupt, RingCtrl, RingMem};
use crate::sys;
use crate::sys::sync::{AtomicU32, AtomicU64};

/// `b"SHMPBCST"` read as a little-endian `u64`.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMPBCST");
/// Bumped on any change to this layout.
pub(crate) const VERSION: u32 = 1;
const PAGE: usize = 4096;
/// Bytes of one member-table entry.
const SLOT_BYTES: usize = 64;
/// Bytes of one reader cursor.
const CURSOR_BYTES: usize = 16;
/// Most member slots a segment may have.
pub(crate) const MAX_SLOTS: usize = 1024;
/// Smallest and largest data area of one ring.
const MIN_RING: usize = PAGE;
const MAX_RING: usize = 1 << 30;

/// The header at offset 0. The fields before `generation` are written once by the
/// creator before anyone else maps the segment, then only read through volatile copies
/// and checked against the length the kernel reports.
#[repr(C, align(128))]
pub(crate) struct Header {
    pub magic: u64,
    pub version: u32,
    pub slots: u32,
    pub ring_capacity: u32,
    pub reserved0: u32,
    pub segment_len: u64,
    reserved1: UnsafeCell<[u8; 96]>,
    /// Bumped (Release) after every change of the member table or of a reader cursor's
    /// state; members compare it (Acquire) with the value they last acted on.
    pub generation: AtomicU32,
    reserved2: UnsafeCell<[u8; 124]>,
    /// The futex word sleeping readers wait on: bumped by a writer that found `sleepers`
    /// set.
    pub bell: AtomicU32,
    /// Non-zero while some reader sleeps (or is about to) on `bell`.
    pub sleepers: AtomicU32,
    reserved3: UnsafeCell<[u8; 120]>,
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == 384);
    assert!(offset_of!(Header, slots) == 12);
    assert!(offset_of!(Header, ring_capacity) == 16);
    assert!(offset_of!(Header, segment_len) == 24);
    assert!(offset_of!(Header, generation) == 128);
    assert!(offset_of!(Header, bell) == 256);
    assert!(offset_of!(Header, sleepers) == 260);
};

/// One member-table entry: `word` is `epoch << 3 | state`, so a compare-and-swap names
/// the occupancy it acts on (an epoch is bumped each time the slot is claimed).
#[repr(C, align(64))]
pub(crate) struct Slot {
    pub word: AtomicU32,
    /// The occupant's process id, for diagnostics only (never trusted).
    pub pid: AtomicU32,
    reserved: UnsafeCell<[u8; 56]>,
}

/// A reader's cursor in one ring: its position (bytes of the ring it has released), its
/// state, and the epoch of the reader's own slot when it took the cursor.
#[repr(C, align(16))]
pub(crate) struct Cursor {
    pub pos: AtomicU64,
    pub state: AtomicU32,
    pub epoch: AtomicU32,
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Slot>() == SLOT_BYTES);
    assert!(size_of::<Cursor>() == CURSOR_BYTES);
    assert!(offset_of!(Cursor, state) == 8);
    assert!(offset_of!(Cursor, epoch) == 12);
    assert!(size_of::<RingCtrl>() <= PAGE);
};

/// Where the parts of a segment with `slots` slots and rings of `cap` bytes lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    slots: usize,
    cap: usize,
}

impl Geometry {
    fn table_at(self) -> usize {
        PAGE
    }
    fn rings_at(self) -> usize {
        PAGE + (self.slots * SLOT_BYTES).next_multiple_of(PAGE)
    }
    fn cursors_len(self) -> usize {
        (self.slots * CURSOR_BYTES).next_multiple_of(PAGE)
    }
    /// One ring block: control page, cursor table, data area.
    fn block_len(self) -> usize {
        PAGE + self.cursors_len() + self.cap
    }
    fn block_at(self, k: usize) -> usize {
        self.rings_at() + k * self.block_len()
    }
    fn len(self) -> usize {
        self.rings_at() + self.slots * self.block_len()
    }
}

/// A mapped broadcast segment. Only raw pointers and atomics into it are handed out.
pub(crate) struct Registry {
    map: MmapRaw,
    fd: OwnedFd,
    geo: Geometry,
}

// SAFETY: the mapping is reached only through atomics and through `RingMem`s whose users
// follow the ring protocol; the plain fields are immutable after construction.
unsafe impl Send for Registry {}
// SAFETY: as above.
unsafe impl Sync for Registry {}

impl Registry {
    /// Creates a zeroed segment with `slots` member slots and rings of `cap` bytes.
    pub(crate) fn create(slots: usize, cap: usize) -> Result<Registry, Error> {
        assert!((1..=MAX_SLOTS).contains(&slots) && cap % PAGE == 0 && cap >= MIN_RING);
        let geo = Geometry { slots, cap };
        let fd = sys::create_shared_memory("shmport-broadcast", geo.len() as u64)?;
        let map = sys::map_shared(fd.as_fd(), geo.len()).map_err(|e| Error::os("mmap", e))?;
        let hdr = map.as_mut_ptr().cast::<Header>();
        // SAFETY: the mapping holds more than a page, is page aligned, zero-filled (a valid
        // state for every atomic) and not yet shared: no other access exists.
        unsafe {
            ptr::addr_of_mut!((*hdr).magic).write(MAGIC);
            ptr::addr_of_mut!((*hdr).version).write(VERSION);
            ptr::addr_of_mut!((*hdr).slots).write(slots as u32);
            ptr::addr_of_mut!((*hdr).ring_capacity).write(cap as u32);
            ptr::addr_of_mut!((*hdr).segment_len).write(geo.len() as u64);
        }
        Ok(Registry { map, fd, geo })
    }

    /// Maps a segment received from another member and checks its header against the
    /// length the kernel reports.
    pub(crate) fn open(fd: OwnedFd) -> Result<Registry, Error> {
        let (map, len) = super::map_received(&fd, PAGE)?;
        let hdr = map.as_ptr().cast::<Header>();
        // SAFETY: at least a page is mapped (checked above), page aligned; volatile copies,
        // each checked below, whatever a concurrent writer left there.
        let (magic, version, slots, cap, seg_len) = unsafe {
            (
                ptr::addr_of!((*hdr).magic).read_volatile(),
                ptr::addr_of!((*hdr).version).read_volatile(),
                ptr::addr_of!((*hdr).slots).read_volatile(),
                ptr::addr_of!((*hdr).ring_capacity).read_volatile(),
                ptr::addr_of!((*hdr).segment_len).read_volatile(),
            )
        };
        let geo = check_header(magic, version, slots, cap, seg_len, len)?;
        Ok(Registry { map, fd, geo })
    }

    /// The descriptor, for handing the segment to a joining member.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Member slots in the table.
    pub(crate) fn slots(&self) -> usize {
        self.geo.slots
    }

    fn header(&self) -> *const Header {
        self.map.as_ptr().cast()
    }

    pub(crate) fn generation(&self) -> &AtomicU32 {
        // SAFETY: projects to one atomic field of the page-aligned header (checked at
        // open) without forming a `&Header`, whose plain fields a member may write.
        unsafe { &(*self.header()).generation }
    }

    pub(crate) fn bell(&self) -> &AtomicU32 {
        // SAFETY: as in `generation`.
        unsafe { &(*self.header()).bell }
    }

    pub(crate) fn sleepers(&self) -> &AtomicU32 {
        // SAFETY: as in `generation`.
        unsafe { &(*self.header()).sleepers }
    }

    /// Entry `k` of the member table.
    ///
    /// # Panics
    ///
    /// If `k >= slots()`: slot numbers come from our own scans, never from shared memory.
    pub(crate) fn slot(&self, k: usize) -> &Slot {
        assert!(k < self.geo.slots, "shmport bug: slot {k} out of range");
        // SAFETY: `k < slots`, so the entry lies inside the table (the geometry was checked
        // against the mapped length); aligned to 64 as the table is page aligned; all of
        // its readable fields are atomics.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(self.geo.table_at() + k * SLOT_BYTES)
                .cast::<Slot>()
        }
    }

    /// Reader `reader`'s cursor in the ring of slot `ring`.
    ///
    /// # Panics
    ///
    /// If either number is out of range, as for [`slot`](Self::slot).
    pub(crate) fn cursor(&self, ring: usize, reader: usize) -> &Cursor {
        assert!(ring < self.geo.slots && reader < self.geo.slots);
        let at = self.geo.block_at(ring) + PAGE + reader * CURSOR_BYTES;
        // SAFETY: inside the cursor table of an in-range block, 16-aligned (blocks are
        // page aligned); every field is an atomic.
        unsafe { &*self.map.as_ptr().add(at).cast::<Cursor>() }
    }

    /// The ring of slot `k`.
    pub(crate) fn ring(&self, k: usize) -> RingMem {
        assert!(k < self.geo.slots);
        let at = self.geo.block_at(k);
        // SAFETY: the block's control page holds a RingCtrl (page aligned, atomics only),
        // and its data area `cap` bytes (page aligned, a multiple of 8, at least 4 KiB);
        // both stay mapped while `self` lives, and users hold `self` (an `Arc`) for as long
        // as they use the `RingMem`.
        unsafe {
            let base = self.map.as_mut_ptr().add(at);
            let ctrl = NonNull::new_unchecked(base.cast::<RingCtrl>());
            let data = NonNull::new_unchecked(base.add(PAGE + self.geo.cursors_len()));
            RingMem::new(ctrl, data, self.geo.cap)
        }
    }

    /// A reader of slot `ring`'s ring for member `reader`, from position `pos`,
    /// publishing to its cursor there. The registry must outlive it (callers hold it in an
    /// `Arc` next to the reader), as for [`ring`](Self::ring).
    pub(crate) fn reader(&self, ring: usize, reader: usize, pos: u64) -> Result<Consumer, Corrupt> {
        let cursor = NonNull::from(&self.cursor(ring, reader).pos);
        // SAFETY: the cursor lies in this mapping, valid as long as the ring is (the
        // contract above).
        unsafe { Consumer::attach_reader(self.ring(ring), pos, cursor) }
    }

    /// Bytes of each ring's data area.
    pub(crate) fn ring_capacity(&self) -> usize {
        self.geo.cap
    }

    /// Writes zeros over slot `k`'s ring block (when its pages cannot be released).
    pub(crate) fn zero_ring(&self, k: usize) {
        assert!(k < self.geo.slots);
        // SAFETY: the block lies inside the mapping (geometry checked at open); it belongs
        // to a slot being reclaimed, which no member reads or writes by protocol, and a
        // hostile member writing meanwhile only races on plain bytes of shared memory,
        // which we never read through references.
        unsafe {
            let at = self.map.as_mut_ptr().add(self.geo.block_at(k));
            ptr::write_bytes(at, 0, self.geo.block_len());
        }
    }

    /// Hands the pages of slot `k`'s ring block (control, cursors, data) back to the
    /// kernel: they read as zeros and take no memory until written again.
    pub(crate) fn release_ring(&self, k: usize) -> std::io::Result<()> {
        assert!(k < self.geo.slots);
        let at = self.geo.block_at(k) as u64;
        sys::release_pages(self.fd.as_fd(), at, self.geo.block_len() as u64)
    }
}

/// A sealed shared-memory object holding `bytes`: the body of a message too large for a
/// ring record, handed to readers by descriptor.
pub(crate) fn body_from(bytes: &[u8]) -> Result<OwnedFd, Error> {
    let fd = sys::create_shared_memory("shmport-broadcast-body", bytes.len() as u64)?;
    let map = sys::map_shared(fd.as_fd(), bytes.len()).map_err(|e| Error::os("mmap", e))?;
    // SAFETY: a fresh private object of exactly `bytes.len()` bytes, mapped whole; nobody
    // else has its descriptor yet.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr(), bytes.len()) };
    Ok(fd)
}

/// Copies the first `len` bytes of a body received from a writer into `out` (replacing
/// its contents). The object's size comes from the kernel, and it must be sealed against
/// shrinking, so the copy cannot fault; its bytes are checked by the caller's decoding.
pub(crate) fn copy_body(
    fd: BorrowedFd<'_>,
    len: usize,
    out: &mut rkyv::util::AlignedVec<16>,
) -> Result<(), &'static str> {
    let real = sys::object_len(fd).map_err(|_| "body: fstat failed")?;
    if len == 0 || real < len as u64 || !sys::is_sealed_against_shrinking(fd) {
        return Err("body shorter than its record says, or not sealed");
    }
    let map = sys::map_shared(fd, len).map_err(|_| "body: mmap failed")?;
    out.clear();
    out.reserve(len);
    // SAFETY: `len` bytes are mapped (the object holds at least that many and cannot
    // shrink); `out` has room for them and is private memory. The writer may still be
    // writing (a hostile one): a plain copy of bytes we then validate.
    unsafe {
        ptr::copy_nonoverlapping(map.as_ptr(), out.as_mut_ptr(), len);
        out.set_len(len);
    }
    Ok(())
}

/// The length of a segment with `slots` member slots and rings of `cap` bytes.
#[cfg(fuzzing)]
pub(crate) fn len_for(slots: usize, cap: usize) -> usize {
    Geometry { slots, cap }.len()
}

/// Checks a header's fields against the kernel-reported length `real_len`.
fn check_header(
    magic: u64,
    version: u32,
    slots: u32,
    cap: u32,
    segment_len: u64,
    real_len: usize,
) -> Result<Geometry, Error> {
    if magic != MAGIC {
        return Err(Error::InvalidSegment("not a broadcast segment (bad magic)"));
    }
    if version != VERSION {
        return Err(Error::InvalidSegment(
            "broadcast segment of another version",
        ));
    }
    let (slots, cap) = (slots as usize, cap as usize);
    if !(1..=MAX_SLOTS).contains(&slots) {
        return Err(Error::InvalidSegment("member table size out of range"));
    }
    if !(MIN_RING..=MAX_RING).contains(&cap) || cap % PAGE != 0 {
        return Err(Error::InvalidSegment("ring capacity out of range"));
    }
    let geo = Geometry { slots, cap };
    if segment_len != real_len as u64 || geo.len() != real_len {
        return Err(Error::InvalidSegment(
            "segment length disagrees with header",
        ));
    }
    Ok(geo)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_created_segment_opens_with_the_same_geometry() {
        let reg = Registry::create(8, 8192).unwrap();
        let fd = reg.fd().try_clone_to_owned().unwrap();
        let other = Registry::open(fd).unwrap();
        assert_eq!(other.geo, reg.geo);
        reg.slot(3)
            .word
            .store(11, crate::sys::sync::Ordering::Relaxed);
        assert_eq!(
            other.slot(3).word.load(crate::sys::sync::Ordering::Relaxed),
            11
        );
    }

    #[test]
    fn headers_that_disagree_with_the_object_are_refused() {
        let geo = Geometry {
            slots: 4,
            cap: 4096,
        };
        let ok = |s, c, l| check_header(MAGIC, VERSION, s, c, l as u64, geo.len()).is_ok();
        assert!(ok(4, 4096, geo.len()));
        assert!(!ok(5, 4096, geo.len()), "more slots than the object holds");
        assert!(!ok(0, 4096, geo.len()));
        assert!(!ok(4, 4095, geo.len()));
        assert!(!ok(4, 8192, geo.len()));
        assert!(!ok(4, 4096, geo.len() + 1));
        assert!(check_header(0, VERSION, 4, 4096, geo.len() as u64, geo.len()).is_err());
        assert!(check_header(MAGIC, 9, 4, 4096, geo.len() as u64, geo.len()).is_err());
    }

    #[test]
    fn a_released_ring_reads_as_zeros() {
        let reg = Registry::create(2, 4096).unwrap();
        reg.cursor(1, 0)
            .pos
            .store(99, crate::sys::sync::Ordering::Relaxed);
        reg.release_ring(1).unwrap();
        assert_eq!(
            reg.cursor(1, 0)
                .pos
                .load(crate::sys::sync::Ordering::Relaxed),
            0
        );
    }
}
