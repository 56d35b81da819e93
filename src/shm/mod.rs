//! Shared memory: the mapped segment and its header, the SPSC ring of records, the pooled
//! heaps and `ArrayBuffer` regions, and the futex word waiters sleep on. Nothing here knows
//! what a message or a port is.

pub(crate) mod bell;
pub(crate) mod buffer;
pub(crate) mod fanout;
pub(crate) mod heap;
pub(crate) mod polling;
pub(crate) mod ring;
pub(crate) mod segment;
pub(crate) mod wake;

use std::os::fd::{AsFd, OwnedFd};

use crate::error::Error;
use crate::sys;

/// Maps a shared-memory object received from another process, whole: its length as the
/// kernel reports it (at least `min_len`), sealed against shrinking so that the mapping
/// cannot lose pages under us. The caller then copies and checks its header.
pub(crate) fn map_received(
    fd: &OwnedFd,
    min_len: usize,
) -> Result<(memmap2::MmapRaw, usize), Error> {
    let len = sys::object_len(fd.as_fd()).map_err(|e| Error::os("fstat", e))?;
    let len = usize::try_from(len).map_err(|_| Error::InvalidSegment("segment too large"))?;
    if len < min_len {
        return Err(Error::InvalidSegment("segment shorter than its header"));
    }
    if !sys::is_sealed_against_shrinking(fd.as_fd()) {
        return Err(Error::InvalidSegment(
            "segment is not sealed against shrinking",
        ));
    }
    let map = sys::map_shared(fd.as_fd(), len).map_err(|e| Error::os("mmap", e))?;
    Ok((map, len))
}
