//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod counting;

use std::process::{Child, Command, ExitStatus};

use shmport::MessagePort;

/// A child process that is killed if the test fails before waiting for it.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn from_child(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    pub fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }

    pub fn wait(mut self) -> ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }

    pub fn kill(mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Re-runs this test binary as a child that runs only `test_name`, handing it `port`.
///
/// Inside the child, the same test function calls [`as_child`] first and takes the child
/// branch.
pub fn spawn_test_child(test_name: &str, port: MessagePort) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::null());
    ChildGuard(Some(shmport::spawn(&mut cmd, port).unwrap()))
}

/// In a child started by [`spawn_test_child`], runs `body` with the parent port and exits
/// the process (0 on success, 101 on panic). In the parent, returns without running it.
pub fn as_child(body: impl FnOnce(MessagePort)) {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_none() {
        return;
    }
    let port = shmport::parent_port().expect("child has a parent port");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(port)));
    std::process::exit(if outcome.is_ok() { 0 } else { 101 });
}

/// A child body: posts `1u8` to say it is up, then waits on its port until the parent
/// kills it.
pub fn post_one_then_park(port: MessagePort) {
    port.post_message(&1u8, []).unwrap();
    let _ = port.recv::<u8>(); // parked until killed
    unreachable!("the parent kills this process");
}

/// The type fingerprint shmport tags a record of `T` with (docs/layout.md, "Kind 2:
/// message"), for tests that write records into a ring themselves.
pub fn fingerprint<T: shmport::Message>() -> u64 {
    shmport::RawMessage::fingerprint_of::<T>()
}

/// In a child started by [`spawn_test_child`]: maps the segment of the port it inherited,
/// through the descriptor number in the bootstrap variable, as a hostile process holding
/// the port could.
pub fn map_inherited_segment() -> memmap2::MmapRaw {
    let boot = std::env::var(shmport::BOOTSTRAP_ENV).unwrap();
    let seg_fd: i32 = boot.split(':').nth(3).unwrap().parse().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{seg_fd}"))
        .unwrap();
    memmap2::MmapOptions::new().map_raw(&file).unwrap()
}

/// The shmport segments this process has mapped, read from /proc/self/maps.
pub fn shmport_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:shmport"))
        .count()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs `body` in a fresh process of this test binary that runs only `test_name`, so that
/// process-wide counts (descriptors, mappings, resident memory) see no other test.
pub fn isolated(test_name: &str, body: impl FnOnce()) {
    const ALONE: &str = "SHMPORT_TEST_ALONE";
    if std::env::var_os(ALONE).is_some() {
        body();
        return;
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{test_name} failed in its own process");
}

/// A waker that unparks the thread that made it.
pub fn unpark_waker() -> std::task::Waker {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())))
}

/// Polls `f` to completion on this thread, parking between polls.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let waker = unpark_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A two-worker multi-thread tokio runtime with I/O and timers.
pub fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
