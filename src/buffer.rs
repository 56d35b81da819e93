//! `ArrayBuffer`: bytes in shared memory, movable between processes without a copy.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use memmap2::MmapRaw;

use crate::Error;
use crate::platform;

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
    region: Option<(MmapRaw, OwnedFd)>,
    len: usize,
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
        if len == 0 {
            return Ok(ArrayBuffer { region: None, len });
        }
        let fd = platform::create_shared_memory("shmport-buffer", len as u64)
            .map_err(|e| Error::os("memfd_create", e))?;
        let map = platform::map_shared(fd.as_fd(), len).map_err(|e| Error::os("mmap", e))?;
        Ok(ArrayBuffer {
            region: Some((map, fd)),
            len,
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
            return Ok(ArrayBuffer { region: None, len });
        }
        let size =
            platform::object_len(fd.as_fd()).map_err(|_| "buffer region cannot be inspected")?;
        if (size as u128) < len as u128 {
            return Err("buffer descriptor is longer than its region");
        }
        if !platform::is_sealed_against_shrinking(fd.as_fd()) {
            return Err("buffer region is not sealed against shrinking");
        }
        let map =
            platform::map_shared(fd.as_fd(), len).map_err(|_| "buffer region cannot be mapped")?;
        Ok(ArrayBuffer {
            region: Some((map, fd)),
            len,
        })
    }

    /// The descriptor of the region, for handing it to another process.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.region.as_ref().map(|(_, fd)| fd.as_fd())
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
            Some((map, _)) => unsafe { NonNull::new_unchecked(map.as_mut_ptr()) },
            None => NonNull::dangling(),
        }
    }
}

impl Deref for ArrayBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping holds `len` bytes (or len is 0 and the pointer dangling, which
        // is valid for an empty slice). This handle is the only owner of the region in this
        // process; see docs/safety.md for what a hostile process that maps it can do.
        unsafe { std::slice::from_raw_parts(self.ptr().as_ptr(), self.len) }
    }
}

impl DerefMut for ArrayBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only live slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr().as_ptr(), self.len) }
    }
}

impl fmt::Debug for ArrayBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayBuffer")
            .field("len", &self.len)
            .finish()
    }
}
