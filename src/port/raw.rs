//! Messages as archives: received and posted without decoding, for forwarding.

use rkyv::util::AlignedVec;

use crate::error::TryRecvError;

use super::*;

impl MessagePort {
    /// Receives the next record's archive and type tag without decoding it (a
    /// `BroadcastChannel` keeps it while it waits to post), copied into private memory.
    pub(crate) fn try_recv_raw(&self) -> Result<(AlignedVec<16>, u64), TryRecvError> {
        let mut copy = |bytes: &[u8], tag: u64| {
            let mut v = AlignedVec::<16>::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            Ok((v, tag))
        };
        self.try_recv_with(true, &mut copy).map(|ev| ev.data)
    }
}
