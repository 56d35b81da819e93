//! Shared memory: the mapped segment and its header, the SPSC ring of records, the pooled
//! heaps and `ArrayBuffer` regions, and the futex word waiters sleep on. Nothing here knows
//! what a message or a port is.

pub(crate) mod bell;
pub(crate) mod buffer;
pub(crate) mod fanout;
pub(crate) mod heap;
pub(crate) mod ring;
pub(crate) mod segment;
pub(crate) mod wake;
