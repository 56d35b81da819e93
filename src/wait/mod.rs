//! Waiting outside a single blocking receive: many ports at once (`PortSet`), async
//! receives woken by a reactor thread, and the `on_message` dispatch thread.

pub(crate) mod dispatch;
pub(crate) mod future;
pub(crate) mod portset;
pub(crate) mod reactor;
mod slab;
