//! The formats of what crosses between processes, apart from the ring itself: the message
//! codec and type fingerprints, transfer records and their items, doorbells, names.

pub(crate) mod codec;
pub(crate) mod doorbell;
pub(crate) mod naming;
#[cfg(any(test, fuzzing))]
pub(crate) mod nest;
pub(crate) mod transfer;
