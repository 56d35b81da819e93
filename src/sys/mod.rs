//! Every operating-system call shmport makes, behind one set of names.
//!
//! The layers above never see `cfg`: a second operating system is a second file exporting
//! the same functions (the shape ipc-channel's `platform` module uses).

pub(crate) mod sync;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;
#[cfg(target_os = "linux")]
mod linux_drain;
#[cfg(target_os = "linux")]
pub(crate) use linux_drain::drain_byte_messages;

// Under `--cfg loom` the futex and the asymmetric barrier are models loom can explore (and
// `linux` leaves them out).
#[cfg(loom)]
mod loom_futex;
#[cfg(loom)]
pub(crate) use loom_futex::{
    futex_wait, futex_wake, light_barrier, register_for_remote_barriers, remote_barrier,
};

#[cfg(not(target_os = "linux"))]
compile_error!("shmport supports Linux only for now (macOS is planned)");
