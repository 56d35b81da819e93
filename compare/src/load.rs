//! `--busy-loops N`: N processes that spin for as long as the comparison runs, so that a
//! figure on a busy machine (issue 13's "with two busy-loop processes running") is one
//! command, not a shell loop beside it.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Result;

/// The first argument of a busy-loop process (the binary run again).
pub const CHILD_ARG: &str = "busy-loop";

/// How many busy loops the comparison runs beside it (for the JSON document).
static RUNNING: AtomicU32 = AtomicU32::new(0);

/// The busy-loop processes; killed and reaped when dropped.
pub struct BusyLoops(Vec<Child>);

impl BusyLoops {
    /// Starts `n` busy-loop processes (none for 0).
    pub fn start(n: u32) -> Result<BusyLoops> {
        let mut loops = BusyLoops(Vec::new());
        for _ in 0..n {
            let child = Command::new(std::env::current_exe()?)
                .arg(CHILD_ARG)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            loops.0.push(child);
        }
        RUNNING.store(n, Ordering::Relaxed);
        Ok(loops)
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        RUNNING.store(0, Ordering::Relaxed);
    }
}

/// The busy-loop processes running now.
pub fn running() -> u32 {
    RUNNING.load(Ordering::Relaxed)
}

/// A busy-loop process's life: spins, and ends when its parent has (it is then
/// re-parented), so that a comparison killed before it could kill its loops leaves none.
pub fn spin() -> ! {
    let parent = std::os::unix::process::parent_id();
    loop {
        for _ in 0..(1 << 24) {
            std::hint::black_box(0u64);
        }
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
}
