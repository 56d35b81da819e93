//! What a process spent on a stretch of work: minor page faults and context switches from
//! `getrusage(RUSAGE_SELF)`, and system calls from a `raw_syscalls:sys_enter` perf counter
//! on the measuring thread (where the kernel lets us open one; see README.md).

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use shmport::rkyv::{Archive, Deserialize, Serialize};

/// Where the kernel publishes the id of the tracepoint hit on every system call entry.
const TRACEPOINT_IDS: [&str; 2] = [
    "/sys/kernel/tracing/events/raw_syscalls/sys_enter/id",
    "/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id",
];

/// Counts a process spent between two [`Usage::now`] snapshots.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
#[rkyv(crate = shmport::rkyv)]
pub struct Usage {
    /// Minor page faults (the process's, all threads).
    pub minflt: u64,
    /// Voluntary plus involuntary context switches (the process's, all threads).
    pub csw: u64,
    /// System calls entered by the measuring thread, when a counter could be opened.
    pub syscalls: Option<u64>,
}

impl Usage {
    /// A snapshot of the running totals.
    pub fn now() -> Usage {
        let (minflt, csw) = rusage();
        let syscalls = syscall_counter().map(SyscallCounter::read);
        Usage {
            minflt,
            csw,
            syscalls,
        }
    }

    /// What was spent since `before`, less what taking the two snapshots cost.
    pub fn since(self, before: Usage) -> Usage {
        let syscalls = match (self.syscalls, before.syscalls) {
            (Some(a), Some(b)) => Some(a.saturating_sub(b).saturating_sub(snapshot_cost())),
            _ => None,
        };
        Usage {
            minflt: self.minflt.saturating_sub(before.minflt),
            csw: self.csw.saturating_sub(before.csw),
            syscalls,
        }
    }
}

/// One stretch of work on one side of a transport: how many frames (or round trips) it
/// covered, how long it took, and what it cost.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
#[rkyv(crate = shmport::rkyv)]
pub struct Side {
    pub count: u64,
    pub elapsed_ns: u64,
    pub usage: Usage,
}

/// Per-unit figures of a [`Side`] (per frame, per round trip).
#[derive(Debug, Clone, Copy)]
pub struct PerUnit {
    pub minflt: f64,
    pub csw: f64,
    pub syscalls: Option<f64>,
}

impl Side {
    /// Adds `other`'s stretch to this one, as if they had been one stretch.
    pub fn absorb(&mut self, other: Side) {
        self.count += other.count;
        self.elapsed_ns += other.elapsed_ns;
        self.usage.minflt += other.usage.minflt;
        self.usage.csw += other.usage.csw;
        self.usage.syscalls = match (self.usage.syscalls, other.usage.syscalls) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    pub fn per_unit(&self) -> PerUnit {
        let n = self.count.max(1) as f64;
        PerUnit {
            minflt: self.usage.minflt as f64 / n,
            csw: self.usage.csw as f64 / n,
            syscalls: self.usage.syscalls.map(|s| s as f64 / n),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.count as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }
}

fn rusage() -> (u64, u64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` through a valid pointer; RUSAGE_SELF is a
    // valid `who`, so it cannot fail.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
    // SAFETY: zero-initialised, then filled by the kernel: every field is plain data.
    let ru = unsafe { ru.assume_init() };
    let minflt = ru.ru_minflt as u64;
    let csw = ru.ru_nvcsw as u64 + ru.ru_nivcsw as u64;
    (minflt, csw)
}

/// A perf counter of system call entries of the thread that opened it (and of threads it
/// starts later).
struct SyscallCounter(File);

impl SyscallCounter {
    fn open() -> Option<SyscallCounter> {
        let id: u64 = TRACEPOINT_IDS
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())?
            .trim()
            .parse()
            .ok()?;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: id,
            flags: FLAG_INHERIT,
            ..PerfEventAttr::default()
        };
        // SAFETY: perf_event_open reads `attr.size` bytes from a valid, initialised
        // `perf_event_attr` (the version-0 layout, which every kernel accepts); pid 0 and
        // cpu -1 mean "this thread, any CPU", group -1 means none.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                0,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(SyscallCounter(File::from(fd)))
    }

    fn read(&self) -> u64 {
        let mut count = [0u8; 8];
        (&self.0)
            .read_exact(&mut count)
            .expect("reading the perf counter");
        u64::from_ne_bytes(count)
    }
}

fn syscall_counter() -> Option<&'static SyscallCounter> {
    static COUNTER: OnceLock<Option<SyscallCounter>> = OnceLock::new();
    COUNTER.get_or_init(SyscallCounter::open).as_ref()
}

/// Whether system calls are counted in this process.
pub fn counts_syscalls() -> bool {
    syscall_counter().is_some()
}

/// System calls two back-to-back snapshots count (getrusage and the counter's read):
/// measured once, subtracted from every interval.
fn snapshot_cost() -> u64 {
    static COST: AtomicU64 = AtomicU64::new(u64::MAX);
    let cost = COST.load(Ordering::Relaxed);
    if cost != u64::MAX {
        return cost;
    }
    let a = Usage::now().syscalls.unwrap_or(0);
    let b = Usage::now().syscalls.unwrap_or(0);
    let cost = b.saturating_sub(a);
    COST.store(cost, Ordering::Relaxed);
    cost
}

/// Calibrates [`snapshot_cost`] before any timed work.
pub fn calibrate() {
    snapshot_cost();
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const FLAG_INHERIT: u64 = 1 << 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `struct perf_event_attr`, version 0 (64 bytes); the bit fields are one `u64`.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}
