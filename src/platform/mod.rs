//! Every operating-system call shmport makes, behind one set of names.
//!
//! The layers above never see `cfg`: a second operating system is a second file exporting
//! the same functions (the shape ipc-channel's `platform` module uses).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("shmport supports Linux only for now (see SPEC §6: macOS is planned)");
