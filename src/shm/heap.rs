//! Pooled shared heaps for `ArrayBuffer`s up to 64 MiB and out-of-ring message bodies.
//!
//! A heap is one sealed memfd cut into equal slots, with one state word per slot:
//!
//! ```text
//! offset 0     HeapHeader (64 bytes): magic b"SHMHEAP\0", version, slot_size, slots,
//!              data_offset, the creator's PID namespace
//! offset 64    slot states: AtomicU64 x slots   (state in bits 0..2, generation in bits 2..32,
//!                                                the holder's pid in bits 32..64)
//! data_offset  slots x slot_size bytes (page aligned)
//! ```
//!
//! A slot is `FREE`, `OWNED` (some process holds a buffer on it) or `IN_TRANSIT` (posted,
//! not yet received). An owned slot's word names the process holding it, so the creator
//! can take back the slots of a holder that was killed (see [`Heap::reclaim_dead_holders`]). The allocating process takes a free slot with a compare-and-swap
//! (bumping the generation); whoever drops the buffer last, in whichever process, sets it
//! free again, so the allocator reuses it without a system call. A transfer moves the
//! state from `OWNED(g)` to `IN_TRANSIT(g)` at the sender and back to `OWNED(g)` at the
//! receiver with a compare-and-swap: a stale or replayed descriptor (wrong generation, or a
//! slot not in transit) fails that swap and is a `messageerror`, never a second owner.
//!
//! Receivers map a heap once and share the mapping by the object's identity, so a stream
//! of buffers from one heap costs one `mmap`.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use memmap2::MmapRaw;

use crate::sys;
use crate::sys::sync::{AtomicU64, Ordering};

const MAGIC: u64 = u64::from_le_bytes(*b"SHMHEAP\0");
const VERSION: u32 = 3;
const HEADER: usize = 64;
const PAGE: usize = 4096;

/// Slot sizes of the pooled classes, up to 64 MiB; larger buffers get a region of
/// their own. Steps of 4 below 256 KiB, then of 2, so a frame of a little more than a power
/// of two (a 1 MiB `Vec<u8>`'s archive, say) takes a slot of twice its size, not four times.
/// A heap's pages are allocated by the kernel on first touch, so a class's heap costs
/// memory only for the slots that have been used; a used slot stays resident for reuse (no
/// page faults the next time).
pub(crate) const CLASSES: [usize; 12] = [
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
];
/// Slots per heap of each class: about 1 MiB of small slots, then a few large ones, so a
/// pipeline with a few frames in flight needs one heap per class.
const SLOTS: [u32; 12] = [256, 128, 64, 16, 16, 16, 8, 8, 8, 8, 4, 4];

/// Classes of this slot size and up allocate first-fit.
const FIRST_FIT_FROM: usize = 256 << 10;

/// Classes of this slot size and up have the pages of their free slots released by
/// [`trim`]; smaller slots are cheap to keep resident.
const TRIM_FROM: usize = 256 << 10;

const FREE: u32 = 0;
const OWNED: u32 = 1;
const IN_TRANSIT: u32 = 2;
const STATE_MASK: u32 = 3;

/// A slot's state word: the holder (0: none, or unknown) in the high half, then the
/// generation and the state. One compare-and-swap moves all three, so a word that names a
/// holder names the process that wrote it last.
fn word(state: u32, generation: u32, holder: u32) -> u64 {
    (u64::from(holder) << 32) | u64::from((generation << 2) | state)
}

fn state_of(word: u64) -> u32 {
    word as u32 & STATE_MASK
}

fn generation_of(word: u64) -> u32 {
    word as u32 >> 2
}

fn holder_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// A mapped heap, in the process that created it or in one that received a buffer of it.
pub(crate) struct Heap {
    map: MmapRaw,
    fd: OwnedFd,
    slot_size: usize,
    slots: u32,
    identity: (u64, u64),
    /// Whether this process shares the creator's PID namespace: only then does it write
    /// its pid as a slot's holder (and only then can the creator check that pid).
    same_pid_namespace: bool,
    /// The slots this process holds, one bit each: process-private, never shared. One
    /// `Heap` exists per heap and process while anything of it is alive (`Pools::mapped`).
    held: Box<[std::sync::atomic::AtomicU64]>,
}

// SAFETY: the mapping is reached through atomics (slot states) and through slot byte
// ranges owned by exactly one `ArrayBuffer` at a time (the slot protocol above).
unsafe impl Send for Heap {}
// SAFETY: as above.
unsafe impl Sync for Heap {}

impl Heap {
    fn data_offset(slots: u32) -> usize {
        (HEADER + 8 * slots as usize).next_multiple_of(PAGE)
    }

    /// The length of a heap of `class`.
    fn len_of(class: usize) -> usize {
        Self::data_offset(SLOTS[class]) + SLOTS[class] as usize * CLASSES[class]
    }

    fn create(class: usize) -> std::io::Result<Heap> {
        let (slot_size, slots) = (CLASSES[class], SLOTS[class]);
        let len = Self::len_of(class);
        let fd = sys::create_shared_memory("shmport-heap", len as u64)?;
        let map = sys::map_shared(fd.as_fd(), len)?;
        let base = map.as_mut_ptr();
        // SAFETY: the mapping is `len >= HEADER` bytes, page aligned, zero-filled and not yet
        // shared: plain writes of the immutable header fields.
        unsafe {
            base.cast::<u64>().write(MAGIC);
            base.add(8).cast::<u32>().write(VERSION);
            base.add(12).cast::<u32>().write(slot_size as u32);
            base.add(16).cast::<u32>().write(slots);
            base.add(20)
                .cast::<u32>()
                .write(Self::data_offset(slots) as u32);
            base.add(24).cast::<u64>().write(sys::pid_namespace());
        }
        let identity = sys::file_identity(fd.as_fd())?;
        Ok(Heap {
            map,
            fd,
            slot_size,
            slots,
            identity,
            same_pid_namespace: sys::pid_namespace() != 0,
            held: held_bits(slots),
        })
    }

    /// Maps a heap received from another process after checking its header against the
    /// object's real size and seals.
    fn open(fd: OwnedFd) -> Result<Heap, &'static str> {
        let len = sys::object_len(fd.as_fd()).map_err(|_| "heap cannot be inspected")?;
        let len = usize::try_from(len).map_err(|_| "heap too large")?;
        if len < PAGE || !sys::is_sealed_against_shrinking(fd.as_fd()) {
            return Err("heap too short or not sealed");
        }
        let map = sys::map_shared(fd.as_fd(), len).map_err(|_| "heap cannot be mapped")?;
        let base = map.as_ptr();
        // SAFETY: the mapping holds at least one page (checked), so the 24 header bytes are
        // in bounds; volatile copies, checked below.
        let (magic, version, slot_size, slots, data, pid_namespace) = unsafe {
            (
                base.cast::<u64>().read_volatile(),
                base.add(8).cast::<u32>().read_volatile(),
                base.add(12).cast::<u32>().read_volatile(),
                base.add(16).cast::<u32>().read_volatile(),
                base.add(20).cast::<u32>().read_volatile(),
                base.add(24).cast::<u64>().read_volatile(),
            )
        };
        let class = CLASSES.iter().position(|&c| c == slot_size as usize);
        let ok = magic == MAGIC
            && version == VERSION
            && class.is_some_and(|c| SLOTS[c] == slots)
            && data as usize == Self::data_offset(slots)
            && len == Self::data_offset(slots) + slots as usize * slot_size as usize;
        if !ok {
            return Err("heap header does not match its object");
        }
        let identity = sys::file_identity(fd.as_fd()).map_err(|_| "heap cannot be inspected")?;
        Ok(Heap {
            map,
            fd,
            slot_size: slot_size as usize,
            slots,
            identity,
            // The creator's namespace as it wrote it: a peer that lies only makes its
            // heap's slots unreclaimable, or reclaimable while we hold them, which the held
            // bits refuse (see `reclaim_dead_holders`).
            same_pid_namespace: pid_namespace != 0 && pid_namespace == sys::pid_namespace(),
            held: held_bits(slots),
        })
    }

    fn state(&self, slot: u32) -> &AtomicU64 {
        debug_assert!(slot < self.slots);
        // SAFETY: `slot < slots` (callers check), so the word at HEADER + 8 * slot lies in
        // the state table inside the mapping, 8-aligned (the mapping is page aligned);
        // slot states are only ever accessed atomically.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(HEADER + 8 * slot as usize)
                .cast::<AtomicU64>()
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn state_for_tests(&self, slot: u32) -> &AtomicU64 {
        self.state(slot)
    }

    /// The holder this process writes into the words of the slots it holds: its pid, or 0
    /// ("unknown", never reclaimed) outside the creator's PID namespace.
    fn me(&self) -> u32 {
        if self.same_pid_namespace {
            sys::current_pid()
        } else {
            0
        }
    }

    /// The first byte of slot `slot`.
    pub(crate) fn slot_ptr(&self, slot: u32) -> NonNull<u8> {
        debug_assert!(slot < self.slots);
        let off = Self::data_offset(self.slots) + slot as usize * self.slot_size;
        // SAFETY: `slot < slots`, so the slot lies inside the mapping, whose base is not null.
        unsafe { NonNull::new_unchecked(self.map.as_mut_ptr().add(off)) }
    }

    /// The heap's object identity (device, inode): the same in every process.
    pub(crate) fn identity(&self) -> (u64, u64) {
        self.identity
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Takes a free slot: `(slot, generation)`.
    fn try_take(&self, start: u32) -> Option<(u32, u32)> {
        let me = self.me();
        for i in 0..self.slots {
            let slot = (start + i) % self.slots;
            let cur = self.state(slot).load(Ordering::Relaxed);
            if state_of(cur) != FREE {
                continue;
            }
            let generation = generation_of(cur).wrapping_add(1) & (u32::MAX >> 2);
            // Acquire: pairs with the Release in `release`, so the previous owner's writes
            // to the slot's bytes happen before ours.
            if self
                .state(slot)
                .compare_exchange(
                    cur,
                    word(OWNED, generation, me),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Some((slot, generation));
            }
        }
        None
    }

    /// Frees a slot owned under `generation`. A state that does not match (rewritten by a
    /// buggy peer) is left alone: the slot leaks rather than gaining two owners.
    pub(crate) fn release(&self, slot: u32, generation: u32) {
        // Release: pairs with the Acquire in `try_take`.
        let _ = self.state(slot).compare_exchange(
            word(OWNED, generation, self.me()),
            word(FREE, generation, 0),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Marks an owned slot as posted. False if it was not owned under `generation`.
    pub(crate) fn send(&self, slot: u32, generation: u32) -> bool {
        // Release: pairs with the receiver's Acquire in `receive`: our writes to the bytes
        // happen before its reads.
        self.state(slot)
            .compare_exchange(
                word(OWNED, generation, self.me()),
                word(IN_TRANSIT, generation, 0),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Undoes [`send`](Self::send) after a failed post.
    pub(crate) fn unsend(&self, slot: u32, generation: u32) {
        let _ = self.state(slot).compare_exchange(
            word(IN_TRANSIT, generation, 0),
            word(OWNED, generation, self.me()),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Takes ownership of a slot that arrived in a message; `Err` for a forged, stale or
    /// replayed descriptor.
    pub(crate) fn receive(&self, slot: u32, generation: u32, len: u64) -> Result<(), &'static str> {
        if slot >= self.slots || len > self.slot_size as u64 || generation > u32::MAX >> 2 {
            return Err("buffer descriptor out of the heap's bounds");
        }
        if !self.hold(slot) {
            return Err("buffer descriptor names a slot this process already holds");
        }
        // Acquire: pairs with the sender's Release in `send`.
        self.state(slot)
            .compare_exchange(
                word(IN_TRANSIT, generation, 0),
                word(OWNED, generation, self.me()),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .map(|_| ())
            .map_err(|_| {
                self.forget_held(slot);
                "stale or replayed buffer descriptor"
            })
    }

    /// Frees a slot still in transit under `generation`, whose receiver is gone (its
    /// port's last descriptor closed without receiving it). True when it was freed; false
    /// when somebody received it meanwhile (or the word was rewritten).
    fn reclaim_in_transit(&self, slot: u32, generation: u32) -> bool {
        // AcqRel: like a drop (Release) for the next allocation, and ordered after the
        // sender's writes.
        self.state(slot)
            .compare_exchange(
                word(IN_TRANSIT, generation, 0),
                word(FREE, generation, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Hands the pages of every free slot back to the kernel (they read as zero when
    /// touched again); the bytes of the slots released. A slot this process holds is
    /// never released, whatever its state word says: a peer that marks one of our live
    /// buffers free must not get its bytes zeroed under us.
    fn release_free_pages(&self) -> usize {
        let mut released = 0;
        for slot in 0..self.slots {
            let free = state_of(self.state(slot).load(Ordering::Relaxed)) == FREE;
            if !free || self.is_held(slot) {
                continue;
            }
            let at = Self::data_offset(self.slots) + slot as usize * self.slot_size;
            if sys::release_pages(self.fd(), at as u64, self.slot_size as u64).is_ok() {
                released += self.slot_size;
            }
        }
        released
    }

    /// Frees the owned slots whose holder no longer exists (a process killed while it held
    /// buffers of this heap): the number freed. Only the creator calls it, when a class has
    /// no free slot. A word names the process that wrote it last, and nobody but that
    /// holder moves an owned slot on, so "owned by `p`" with `p` gone means nobody holds
    /// it: the compare-and-swap expects the whole word, holder included, and fails if the
    /// slot changed hands since it was read. A pid reused by a new process reads as alive
    /// (the slot stays taken: a leak, never a second owner). A slot this process holds is
    /// never freed, whatever its word says.
    fn reclaim_dead_holders(&self, liveness: &mut Liveness) -> u32 {
        let me = self.me();
        let mut freed = 0;
        for slot in 0..self.slots {
            let cur = self.state(slot).load(Ordering::Relaxed);
            let holder = holder_of(cur);
            if state_of(cur) != OWNED || holder == 0 || holder == me || self.is_held(slot) {
                continue;
            }
            if liveness.exists(holder) {
                continue;
            }
            // Acquire: whatever the dead holder wrote to the slot happens before our reuse.
            let reclaimed = self.state(slot).compare_exchange(
                cur,
                word(FREE, generation_of(cur), 0),
                Ordering::Acquire,
                Ordering::Relaxed,
            );
            freed += u32::from(reclaimed.is_ok());
        }
        freed
    }

    /// Records that this process holds `slot` (allocated or received); `false` when it
    /// already did. A peer that rewrites a slot's state (to "free", or to "in transit" and
    /// sends it back) cannot make us hold a second buffer on it.
    fn hold(&self, slot: u32) -> bool {
        let bit = 1u64 << (slot % 64);
        let word = &self.held[slot as usize / 64];
        word.fetch_or(bit, std::sync::atomic::Ordering::Relaxed) & bit == 0
    }

    /// Whether this process holds `slot`.
    fn is_held(&self, slot: u32) -> bool {
        let bit = 1u64 << (slot % 64);
        self.held[slot as usize / 64].load(std::sync::atomic::Ordering::Relaxed) & bit != 0
    }

    /// Ends this process's hold on a slot (it was freed or sent on).
    pub(crate) fn forget_held(&self, slot: u32) {
        let bit = 1u64 << (slot % 64);
        let word = &self.held[slot as usize / 64];
        word.fetch_and(!bit, std::sync::atomic::Ordering::Relaxed);
    }

    /// Restores the hold on a slot whose sending failed.
    pub(crate) fn hold_again(&self, slot: u32) {
        self.hold(slot);
    }
}

/// Which processes exist, asked of the kernel once per pid per reclaim sweep.
#[derive(Default)]
struct Liveness(Vec<(u32, bool)>);

impl Liveness {
    fn exists(&mut self, pid: u32) -> bool {
        if let Some(&(_, alive)) = self.0.iter().find(|(p, _)| *p == pid) {
            return alive;
        }
        let alive = sys::process_exists(pid);
        self.0.push((pid, alive));
        alive
    }
}

/// A pooled slot this process posted, remembered by the sending port until it knows the
/// receiver took it: if the receiving end is gone first (its process was killed), the
/// sender frees it ([`SlotInTransit::reclaim`]).
pub(crate) struct SlotInTransit {
    heap: Arc<Heap>,
    slot: u32,
    generation: u32,
}

impl SlotInTransit {
    pub(crate) fn new(heap: &Arc<Heap>, slot: u32, generation: u32) -> Self {
        SlotInTransit {
            heap: Arc::clone(heap),
            slot,
            generation,
        }
    }

    /// Still in transit: nobody has received it yet.
    pub(crate) fn pending(&self) -> bool {
        self.heap.state(self.slot).load(Ordering::Relaxed) == word(IN_TRANSIT, self.generation, 0)
    }

    /// Frees the slot if nobody received it; call once its receiver is gone for good.
    pub(crate) fn reclaim(&self) -> bool {
        self.heap.reclaim_in_transit(self.slot, self.generation)
    }
}

/// One clear bit per slot.
fn held_bits(slots: u32) -> Box<[std::sync::atomic::AtomicU64]> {
    (0..slots.div_ceil(64))
        .map(|_| Default::default())
        .collect()
}

/// This process's heaps, per class, for allocation; and every heap it has mapped, by
/// identity, so a heap is mapped once while anything holds it.
struct Pools {
    own: [Vec<Arc<Heap>>; CLASSES.len()],
    next: [u32; CLASSES.len()],
    /// Weak: a received heap is unmapped, and its descriptor closed, once no buffer of it
    /// and no channel that names it (`port`'s heap tables) is alive here. This process's
    /// own heaps stay alive in `own`.
    mapped: HashMap<(u64, u64), Weak<Heap>>,
    /// `mapped`'s size at which gone heaps are next swept out.
    sweep_at: usize,
    /// Bytes of the heaps this process created, and the most it may create.
    pool_bytes: usize,
    limit: usize,
}

/// The pool's default limit: 1 GiB of heaps.
const DEFAULT_POOL_LIMIT: usize = 1 << 30;

/// Caps the bytes of heaps this process creates (heaps already made stay).
pub(crate) fn set_pool_limit(bytes: usize) {
    pools(|p| p.limit = bytes);
}

/// Releases the pages of every free slot of [`TRIM_FROM`] bytes and up in this process's
/// heaps; the bytes of the slots released. Only this process allocates from its heaps, under the
/// pools' lock held here, so no slot found free is taken meanwhile; one freed by another
/// process during the sweep is released at the next.
pub(crate) fn trim() -> usize {
    pools(|p| {
        let mut released = 0;
        // `own` is indexed by class: a class's slot size is `CLASSES[class]`.
        for (heaps, _) in p.own.iter().zip(CLASSES).filter(|&(_, s)| s >= TRIM_FROM) {
            for heap in heaps {
                released += heap.release_free_pages();
            }
        }
        released
    })
}

static POOLS: Mutex<Option<Pools>> = Mutex::new(None);

fn pools<R>(f: impl FnOnce(&mut Pools) -> R) -> R {
    let mut guard = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    let pools = guard.get_or_insert_with(|| Pools {
        own: Default::default(),
        next: [0; CLASSES.len()],
        mapped: HashMap::new(),
        sweep_at: 16,
        pool_bytes: 0,
        limit: DEFAULT_POOL_LIMIT,
    });
    f(pools)
}

/// The class that holds `len` bytes, if it is pooled.
pub(crate) fn class_for(len: usize) -> Option<usize> {
    CLASSES.iter().position(|&c| len <= c)
}

/// Allocates a slot of class `class`: from a heap with a free slot, or a new heap.
///
/// `Ok(None)` when no heap has a free slot and a new one would take the pool past its
/// limit ([`set_pool_limit`]).
pub(crate) fn allocate(class: usize) -> std::io::Result<Option<(Arc<Heap>, u32, u32)>> {
    pools(|p| {
        // Small slots round-robin (a short scan); large ones first-fit from slot 0, so a
        // pipeline keeps reusing the few slots whose pages are already resident.
        let start = if CLASSES[class] < FIRST_FIT_FROM {
            p.next[class]
        } else {
            0
        };
        if let Some(taken) = p.take_own(class, start) {
            return Ok(Some(taken));
        }
        // Every slot is taken: some may be held by processes that were killed.
        let mut liveness = Liveness::default();
        let reclaimed: u32 = p.own[class]
            .iter()
            .map(|heap| heap.reclaim_dead_holders(&mut liveness))
            .sum();
        if reclaimed > 0 {
            event!(
                debug,
                "pool: took back {reclaimed} slots of {} bytes from holders that are gone",
                CLASSES[class]
            );
            if let Some(taken) = p.take_own(class, start) {
                return Ok(Some(taken));
            }
        }
        let len = Heap::len_of(class);
        if p.pool_bytes + len > p.limit {
            return Ok(None);
        }
        let heap = Arc::new(Heap::create(class)?);
        p.pool_bytes += len;
        let (slot, generation) = heap
            .try_take(0)
            .ok_or_else(|| std::io::Error::other("new heap full"))?;
        heap.hold(slot);
        p.remember(&heap);
        p.own[class].push(Arc::clone(&heap));
        p.next[class] = slot + 1;
        Ok(Some((heap, slot, generation)))
    })
}

/// The mapping of a received heap: the one this process already has, or mapped now.
pub(crate) fn adopt(fd: OwnedFd) -> Result<Arc<Heap>, &'static str> {
    let identity = sys::file_identity(fd.as_fd()).map_err(|_| "heap cannot be inspected")?;
    if let Some(h) = pools(|p| p.mapped.get(&identity).and_then(Weak::upgrade)) {
        return Ok(h); // `fd` closes here: the mapping we have is enough
    }
    let heap = Arc::new(Heap::open(fd)?);
    Ok(pools(|p| {
        match p.mapped.get(&identity).and_then(Weak::upgrade) {
            Some(raced) => raced,
            None => {
                p.remember(&heap);
                heap
            }
        }
    }))
}

impl Pools {
    /// A free slot of one of this process's heaps of `class`, taken and held.
    fn take_own(&mut self, class: usize, start: u32) -> Option<(Arc<Heap>, u32, u32)> {
        for heap in &self.own[class] {
            while let Some((slot, generation)) = heap.try_take(start) {
                // A slot we hold that a peer marked free is not free: skip it (it stays
                // taken; the peer only made it leak).
                if heap.hold(slot) {
                    self.next[class] = slot.wrapping_add(1);
                    return Some((Arc::clone(heap), slot, generation));
                }
            }
        }
        None
    }

    /// Records `heap` as mapped, and forgets the heaps that are gone (amortized: when the
    /// table has doubled since the last sweep).
    fn remember(&mut self, heap: &Arc<Heap>) {
        if self.mapped.len() >= self.sweep_at {
            self.mapped.retain(|_, h| h.strong_count() > 0);
            self.sweep_at = (2 * self.mapped.len()).max(16);
        }
        self.mapped.insert(heap.identity, Arc::downgrade(heap));
    }
}

/// Zeroes `len` bytes of a freshly taken slot (it may hold an earlier owner's data).
///
/// # Safety
///
/// `ptr` is the start of a slot the caller owns (no other handle reads or writes it), of
/// at least `len` bytes.
pub(crate) unsafe fn zero(ptr: NonNull<u8>, len: usize) {
    // SAFETY: our contract.
    unsafe { ptr::write_bytes(ptr.as_ptr(), 0, len) };
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The pid of a process that has exited and been reaped.
    fn a_pid_that_is_gone() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    /// A heap of 16 slots whose every slot was taken here and then, as a receiver would,
    /// made `OWNED` by `holder`.
    fn a_heap_owned_by(holder: u32) -> Heap {
        let heap = Heap::create(3).unwrap();
        while let Some((slot, generation)) = heap.try_take(0) {
            heap.state(slot)
                .store(word(OWNED, generation, holder), Ordering::Relaxed);
        }
        heap
    }

    #[test]
    fn the_slots_of_a_holder_that_is_gone_are_taken_back() {
        let heap = a_heap_owned_by(a_pid_that_is_gone());
        assert_eq!(heap.reclaim_dead_holders(&mut Liveness::default()), 16);
        assert!(heap.try_take(0).is_some());
    }

    #[test]
    fn the_slots_of_a_live_holder_stay_taken() {
        let heap = a_heap_owned_by(std::os::unix::process::parent_id());
        assert_eq!(heap.reclaim_dead_holders(&mut Liveness::default()), 0);
        assert!(heap.try_take(0).is_none());
    }

    #[test]
    fn a_slot_of_unknown_holder_or_in_transit_stays_taken() {
        let heap = a_heap_owned_by(0);
        let generation = generation_of(heap.state(1).load(Ordering::Relaxed));
        heap.state(1)
            .store(word(IN_TRANSIT, generation, 0), Ordering::Relaxed);
        assert_eq!(heap.reclaim_dead_holders(&mut Liveness::default()), 0);
    }

    #[test]
    fn a_slot_this_process_holds_is_never_taken_back_whatever_its_word_says() {
        let heap = a_heap_owned_by(a_pid_that_is_gone());
        assert!(heap.hold(5));
        assert_eq!(heap.reclaim_dead_holders(&mut Liveness::default()), 15);
        assert_eq!(
            state_of(heap.state(5).load(Ordering::Relaxed)),
            OWNED,
            "the slot we hold was freed"
        );
    }
}
