//! `ArrayBuffer`: bytes in shared memory, movable between processes without a copy.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use memmap2::MmapRaw;

use std::sync::Arc;

use crate::error::Error;
use crate::shm::heap::{self, Heap, SlotInTransit};
use crate::sys;

/// A fixed-length byte buffer in shared memory: the web's `ArrayBuffer`.
///
/// ```
/// use shmport::ArrayBuffer;
///
/// let mut buf = ArrayBuffer::new(4096)?;
/// assert!(buf.iter().all(|&b| b == 0));
/// buf[0] = 1;
/// let copy = ArrayBuffer::from_slice(&buf[..2])?;
/// assert_eq!(&copy[..], &[1, 0]);
/// # Ok::<(), shmport::Error>(())
/// ```
pub struct ArrayBuffer {
    region: Region,
    len: usize,
    /// Set when the buffer moved to another port: dropping the handle then frees nothing.
    sent: bool,
    /// The process that allocated or received the buffer. A copy of the handle in a
    /// process forked from it must not free a pooled slot the parent still holds.
    pid: u32,
}

enum Region {
    /// A zero-length buffer.
    Empty,
    /// A slot of a pooled heap (buffers up to 64 KiB).
    Slot {
        heap: Arc<Heap>,
        slot: u32,
        generation: u32,
    },
    /// A region of its own (larger buffers).
    Own(MmapRaw, OwnedFd),
}

/// How a buffer travels: what the receiver needs besides the descriptor.
pub(crate) enum Wire<'a> {
    Empty,
    Slot {
        heap: &'a Arc<Heap>,
        slot: u32,
        generation: u32,
    },
    Own(BorrowedFd<'a>),
}

// SAFETY: the buffer owns its mapping; the handle is unique (not Clone), so moving it to
// another thread moves sole access with it.
unsafe impl Send for ArrayBuffer {}
// SAFETY: `&ArrayBuffer` only gives `&[u8]`; mutation needs `&mut`.
unsafe impl Sync for ArrayBuffer {}

impl ArrayBuffer {
    /// A zero-filled buffer of `len` bytes in shared memory.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the operating system cannot provide the memory (for example a
    /// full `/dev/shm` or a memory limit).
    pub fn new(len: usize) -> Result<ArrayBuffer, Error> {
        Self::allocate(len, true)
    }

    /// A buffer of `len` bytes in shared memory whose contents are **not zeroed**: for a
    /// producer that overwrites every byte (a frame it fills), it saves a pass over the
    /// memory.
    ///
    /// Buffers up to 64 MiB come from this process's pool of shared heaps, whose slots are
    /// reused once every holder (in any process) has dropped the buffer on them: the bytes
    /// are then whatever the last holder left there, which may be data an earlier
    /// receiver wrote. Larger buffers, and the first use of a slot, are zero-filled by the
    /// kernel. Never hand such a buffer to code that might read bytes it did not write
    /// first, if those bytes must not leak between the parties that used the pool.
    ///
    /// ```
    /// let mut frame = shmport::ArrayBuffer::new_unzeroed(1 << 20)?;
    /// frame.fill(7); // every byte written before anyone reads
    /// assert!(frame.iter().all(|&b| b == 7));
    /// # Ok::<(), shmport::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn new_unzeroed(len: usize) -> Result<ArrayBuffer, Error> {
        Self::allocate(len, false)
    }

    /// Caps the shared memory this process's buffer pool may hold, in bytes (default
    /// 1 GiB). Past it, new buffers get a region of their own (a memfd each, as buffers
    /// over 64 MiB always do) instead of a new pooled heap; heaps already made stay.
    ///
    /// ```
    /// shmport::ArrayBuffer::set_pool_limit(256 << 20);
    /// let frame = shmport::ArrayBuffer::new(1 << 20)?; // pooled while under the limit
    /// # drop(frame);
    /// # shmport::ArrayBuffer::set_pool_limit(1 << 30);
    /// # Ok::<(), shmport::Error>(())
    /// ```
    pub fn set_pool_limit(bytes: usize) {
        heap::set_pool_limit(bytes);
    }

    /// Hands the memory of this process's free pooled slots of 256 KiB and up back to the
    /// operating system (their pages are released; the slots stay in the pool and are
    /// faulted in again when reused). Returns the bytes of slots released. Call it after a
    /// burst of large frames, or from an idle timer: the pool never trims by itself.
    ///
    /// ```
    /// drop(shmport::ArrayBuffer::new(4 << 20)?);
    /// let released = shmport::ArrayBuffer::trim_pool();
    /// assert!(released >= 4 << 20);
    /// # Ok::<(), shmport::Error>(())
    /// ```
    pub fn trim_pool() -> usize {
        heap::trim()
    }

    /// A buffer holding a copy of `parts`, one after the other, pooled when it fits a
    /// class: the out-of-ring body of a large message.
    pub(crate) fn body_copy(parts: &[&[u8]]) -> Result<ArrayBuffer, Error> {
        let mut buf = Self::allocate(parts.iter().map(|p| p.len()).sum(), false)?;
        let mut rest = &mut buf[..];
        for part in parts {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(part.len());
            head.copy_from_slice(part);
            rest = tail;
        }
        Ok(buf)
    }

    /// An unzeroed pooled buffer with room for at least `len` bytes (its slot's whole size),
    /// to serialize a large message into; `None` when `len` is larger than any slot, or
    /// the pool cannot grow.
    pub(crate) fn pooled_for(len: usize) -> Option<ArrayBuffer> {
        let class = heap::class_for(len)?;
        Self::allocate(heap::CLASSES[class], false).ok()
    }

    /// Shortens the buffer to its first `len` bytes (a body whose archive is shorter than
    /// the slot it was written into). The slot stays whole in the pool.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn allocate(len: usize, zeroed: bool) -> Result<ArrayBuffer, Error> {
        let pooled = match heap::class_for(len) {
            Some(class) if len > 0 => {
                heap::allocate(class).map_err(|e| Error::os("creating a shared heap", e))?
            }
            _ => None,
        };
        let region = if len == 0 {
            Region::Empty
        } else if let Some((heap, slot, generation)) = pooled {
            // Pooled: no system call once this process has a heap with a free slot.
            if zeroed {
                // SAFETY: the slot was just taken for this buffer (no one else holds it),
                // and `len` fits its class.
                unsafe { heap::zero(heap.slot_ptr(slot), len) };
            }
            Region::Slot {
                heap,
                slot,
                generation,
            }
        } else {
            // Larger than a slot, or the pool is at its limit: a region of its own (the
            // kernel zero-fills it).
            let fd =
                sys::create_shared_memory("shmport-buffer", len as u64).map_err(Error::from)?;
            let map = sys::map_shared(fd.as_fd(), len).map_err(|e| Error::os("mmap", e))?;
            Region::Own(map, fd)
        };
        Ok(ArrayBuffer {
            region,
            len,
            sent: false,
            pid: sys::current_pid(),
        })
    }

    /// A buffer holding a copy of `bytes`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn from_slice(bytes: &[u8]) -> Result<ArrayBuffer, Error> {
        let mut buf = ArrayBuffer::new(bytes.len())?;
        buf.copy_from_slice(bytes);
        Ok(buf)
    }

    /// Adopts a buffer region received from another process: checks the object with the
    /// kernel (large enough, sealed against shrinking) before mapping it.
    pub(crate) fn from_received(fd: OwnedFd, len: u64) -> Result<ArrayBuffer, &'static str> {
        let len = usize::try_from(len).map_err(|_| "buffer length does not fit in memory")?;
        if len == 0 {
            return Ok(ArrayBuffer {
                region: Region::Empty,
                len,
                sent: false,
                pid: sys::current_pid(),
            });
        }
        let size = sys::object_len(fd.as_fd()).map_err(|_| "buffer region cannot be inspected")?;
        if (size as u128) < len as u128 {
            return Err("buffer descriptor is longer than its region");
        }
        if !sys::is_sealed_against_shrinking(fd.as_fd()) {
            return Err("buffer region is not sealed against shrinking");
        }
        let map = sys::map_shared(fd.as_fd(), len).map_err(|_| "buffer region cannot be mapped")?;
        Ok(ArrayBuffer {
            region: Region::Own(map, fd),
            len,
            sent: false,
            pid: sys::current_pid(),
        })
    }

    /// Takes ownership of a pooled slot that arrived in a message, on `heap` (mapped from
    /// the item's descriptor or found in the channel's heap table); fails for a forged,
    /// stale or replayed descriptor.
    pub(crate) fn from_received_slot(
        heap: Arc<Heap>,
        slot: u32,
        generation: u32,
        len: u64,
    ) -> Result<ArrayBuffer, &'static str> {
        heap.receive(slot, generation, len)?;
        Ok(ArrayBuffer {
            region: Region::Slot {
                heap,
                slot,
                generation,
            },
            len: len as usize,
            sent: false,
            pid: sys::current_pid(),
        })
    }

    /// What the receiver needs to rebuild this buffer.
    pub(crate) fn wire(&self) -> Wire<'_> {
        match &self.region {
            Region::Empty => Wire::Empty,
            Region::Own(_, fd) => Wire::Own(fd.as_fd()),
            Region::Slot {
                heap,
                slot,
                generation,
            } => Wire::Slot {
                heap,
                slot: *slot,
                generation: *generation,
            },
        }
    }

    /// Marks a pooled buffer's slot as in transit, just before its descriptor is sent.
    /// False when the slot's state was rewritten by another process.
    pub(crate) fn begin_send(&self) -> bool {
        match &self.region {
            Region::Slot {
                heap,
                slot,
                generation,
            } => {
                let sent = heap.send(*slot, *generation);
                if sent {
                    heap.forget_held(*slot);
                }
                sent
            }
            _ => true,
        }
    }

    /// The pooled slot of a buffer just sent, for its sender to remember (see
    /// [`SlotInTransit`]); `None` for other kinds of buffer.
    pub(crate) fn slot_in_transit(&self) -> Option<SlotInTransit> {
        match &self.region {
            Region::Slot {
                heap,
                slot,
                generation,
            } => Some(SlotInTransit::new(heap, *slot, *generation)),
            _ => None,
        }
    }

    /// Undoes [`begin_send`](Self::begin_send) after a failed post.
    pub(crate) fn unsend(&self) {
        if let Region::Slot {
            heap,
            slot,
            generation,
        } = &self.region
        {
            heap.unsend(*slot, *generation);
            heap.hold_again(*slot);
        }
    }

    /// Drops the handle of a buffer that moved to another port: its memory now belongs to
    /// the receiver, so nothing is freed here.
    pub(crate) fn into_sent(mut self) {
        self.sent = true;
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn ptr(&self) -> NonNull<u8> {
        match &self.region {
            // SAFETY: a successful mapping is never null.
            Region::Own(map, _) => unsafe { NonNull::new_unchecked(map.as_mut_ptr()) },
            Region::Slot { heap, slot, .. } => heap.slot_ptr(*slot),
            Region::Empty => NonNull::dangling(),
        }
    }
}

impl Deref for ArrayBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the region holds `len` bytes (its own mapping, or a slot of at least `len`
        // bytes; or len is 0 and the pointer dangling, which is valid for an empty slice).
        // This handle is the region's only owner (the slot protocol in heap.rs); see
        // docs/safety.md for what a hostile process that maps it can do.
        unsafe { std::slice::from_raw_parts(self.ptr().as_ptr(), self.len) }
    }
}

impl DerefMut for ArrayBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only live slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr().as_ptr(), self.len) }
    }
}

impl Drop for ArrayBuffer {
    fn drop(&mut self) {
        if self.pid != sys::current_pid() {
            return; // a copy in a forked process: the slot is the parent's
        }
        if let (
            false,
            Region::Slot {
                heap,
                slot,
                generation,
            },
        ) = (self.sent, &self.region)
        {
            heap.forget_held(*slot);
            heap.release(*slot, *generation);
        }
    }
}

impl fmt::Debug for ArrayBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayBuffer")
            .field("len", &self.len)
            .finish()
    }
}
