//! The hardware floor: one cache line bounced between two processes (or two threads). The
//! pinger stores an odd value and waits for the next even one, the echoer waits for the odd
//! one and stores the next even one: each round trip moves the line to the other core and
//! back, which is the least any shared-memory message can cost.
//!
//! Between processes the line lives in a page of a memfd that the parent creates before it
//! starts the child and lets the child inherit (the only descriptor of ours without
//! close-on-exec, for the time of the spawn); its number travels in [`FLOOR_FD_ENV`]. Both
//! processes map it shared and touch its first 8 bytes only through `AtomicU64`, never
//! through a reference to plain memory.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::rtt::{Echoer, Pinger};
use super::spin;
use crate::Result;
use crate::frame::{FrameSink, FrameSource};

/// The environment variable that names the inherited descriptor in the child.
pub const FLOOR_FD_ENV: &str = "SHMPORT_COMPARE_FLOOR_FD";

const NAME: &CStr = c"shmport-compare-floor";
const LEN: usize = 4096;

/// A shared page whose first 8 bytes are the bounced counter.
pub struct SharedLine {
    ptr: NonNull<u8>,
    fd: OwnedFd,
}

impl SharedLine {
    /// A fresh page, for the parent: call [`SharedLine::pass_to`] on the child's command
    /// and [`SharedLine::spawned`] once it started.
    pub fn create() -> Result<SharedLine> {
        // SAFETY: a NUL-terminated name and no flags: the descriptor stays open across exec
        // until `spawned` sets close-on-exec.
        let fd = unsafe { libc::memfd_create(NAME.as_ptr(), 0) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()).into());
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(fd.try_clone()?).set_len(LEN as u64)?;
        SharedLine::map(fd)
    }

    /// Tells the child which descriptor to map.
    pub fn pass_to(&self, cmd: &mut Command) {
        cmd.env(FLOOR_FD_ENV, self.fd.as_raw_fd().to_string());
    }

    /// Marks the descriptor close-on-exec again, so no later child inherits it.
    pub fn spawned(&self) -> Result<()> {
        // SAFETY: fcntl on a descriptor we own; F_SETFD takes an int flag.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(format!("fcntl: {}", std::io::Error::last_os_error()).into());
        }
        Ok(())
    }

    fn map(fd: OwnedFd) -> Result<SharedLine> {
        // SAFETY: a fresh shared mapping of LEN bytes of a memfd at least that long; no
        // existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()).into());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or("mmap returned null")?;
        Ok(SharedLine { ptr, fd })
    }

    /// The bounced counter.
    pub fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned (so aligned for a u64), LEN >= 8 bytes long and
        // lives as long as `self`; every access to these 8 bytes, in this process and the
        // other, goes through an `AtomicU64`, so there is no non-atomic access to race with.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().cast::<u64>()) }
    }
}

impl Drop for SharedLine {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this (we hold the only pointer).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), LEN) };
    }
}

/// The child's mapping of the page its parent passed, mapped on first use.
pub fn inherited() -> Result<&'static SharedLine> {
    // The pointer is only dereferenced atomically, so sharing it across threads is sound;
    // OnceLock needs Sync, which a wrapper provides.
    struct Shared(SharedLine);
    // SAFETY: SharedLine's memory is reached only through AtomicU64 (see `counter`).
    unsafe impl Sync for Shared {}
    // SAFETY: as above; the descriptor and the mapping may be closed from any thread.
    unsafe impl Send for Shared {}
    static LINE: OnceLock<std::result::Result<Shared, String>> = OnceLock::new();
    LINE.get_or_init(|| adopt().map(Shared).map_err(|e| e.to_string()))
        .as_ref()
        .map(|s| &s.0)
        .map_err(|e| e.clone().into())
}

fn adopt() -> Result<SharedLine> {
    let raw: i32 = std::env::var(FLOOR_FD_ENV)
        .map_err(|_| format!("{FLOOR_FD_ENV} is not set"))?
        .parse()?;
    // Adopt the number only if it is the memfd the parent made (and so ours to own).
    let target = std::fs::read_link(format!("/proc/self/fd/{raw}"))?;
    let want = format!("/memfd:{}", NAME.to_str()?);
    if !target.to_string_lossy().starts_with(&want) {
        return Err(format!("descriptor {raw} is {target:?}, not the floor's memfd").into());
    }
    // SAFETY: the descriptor is open (its /proc link exists), is the inherited memfd, and
    // nothing else in this process knows its number.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if std::fs::File::from(fd.try_clone()?).metadata()?.len() < LEN as u64 {
        return Err("the floor's memfd is too short".into());
    }
    SharedLine::map(fd)
}

/// One side of the bounce, over a counter in a [`SharedLine`] or in a thread's memory.
pub struct End<'a> {
    counter: &'a AtomicU64,
}

impl<'a> End<'a> {
    /// The pinger's side: starts the count again (before the echoer is told to go).
    pub fn pinger(counter: &'a AtomicU64) -> End<'a> {
        counter.store(0, Ordering::Relaxed);
        End { counter }
    }

    /// The echoer's side.
    pub fn echoer(counter: &'a AtomicU64) -> End<'a> {
        End { counter }
    }

    fn wait_for(&self, value: u64) -> Result<()> {
        // Acquire: pairs with the other side's Release store of `value`.
        spin::until(|| Ok((self.counter.load(Ordering::Acquire) == value).then_some(())))
    }
}

impl Pinger for End<'_> {
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        // Release: pairs with the echoer's Acquire load in `wait_for`.
        self.counter.store(2 * seq + 1, Ordering::Release);
        self.wait_for(2 * seq + 2)
    }
}

impl Echoer for End<'_> {
    fn echo(&mut self, seq: u64) -> Result<()> {
        self.wait_for(2 * seq + 1)?;
        // Release: pairs with the pinger's Acquire load in `wait_for`.
        self.counter.store(2 * seq + 2, Ordering::Release);
        Ok(())
    }
}

impl FrameSink for End<'_> {
    fn send(&mut self, _tag: u64) -> Result<()> {
        Err("the floor measures round trips only".into())
    }

    fn wait_ack(&mut self) -> Result<u64> {
        Err("the floor measures round trips only".into())
    }
}

impl FrameSource for End<'_> {
    fn recv(&mut self) -> Result<u64> {
        Err("the floor measures round trips only".into())
    }

    fn ack(&mut self, _consumed: u64) -> Result<()> {
        Ok(())
    }
}

/// A cache line of a thread's own memory, for the floor between threads.
#[repr(align(128))]
#[derive(Default)]
pub struct Line(pub AtomicU64);
