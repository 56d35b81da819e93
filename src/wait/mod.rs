//! Waiting outside a single blocking receive: many ports at once (`PortSet`), async
//! receives and posts woken by a reactor thread (or tokio's), and the `on_message`
//! dispatch thread.

pub(crate) mod bell_waiter;
pub(crate) mod dispatch;
pub(crate) mod fd;
pub(crate) mod future;
pub(crate) mod portset;
pub(crate) mod portset_async;
pub(crate) mod reactor;
pub(crate) mod sink;
mod slab;
#[cfg(feature = "tokio")]
mod tokio;
mod watch;
