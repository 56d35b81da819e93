//! Two real processes on loopback: the test binary re-runs itself as the remote side.
#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use shmport_zenoh::{Bridge, BridgeConfig};

/// How long a side waits for the other to answer before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A child process that is killed if the test fails before waiting for it.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }

    pub fn wait(mut self) -> ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
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

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A realm of its own for one test, so concurrent tests never see each other's names.
pub fn realm(test: &str) -> String {
    format!("shmport-test/{test}-{}", std::process::id())
}

/// The listening side: a bridge on a fresh loopback port, and that endpoint.
pub fn listening_bridge(realm: &str, config: BridgeConfig) -> (Bridge, String) {
    listening_bridge_on("127.0.0.1", realm, config)
}

/// As [`listening_bridge`], on `host`. A port found free may be taken before the bridge
/// binds it (by another test's outgoing connection): then another port is tried.
pub fn listening_bridge_on(host: &str, realm: &str, config: BridgeConfig) -> (Bridge, String) {
    let mut last = None;
    for _ in 0..20 {
        let endpoint = format!("{host}:{}", free_port());
        match Bridge::open(config.clone().realm(realm).listen(&endpoint)) {
            Ok(bridge) => return (bridge, endpoint),
            Err(e) => last = Some(e),
        }
    }
    panic!("no port to listen on: {last:?}");
}

/// Re-runs this test binary as the remote side of `test`, connecting to `endpoint` in
/// `realm`. Extra environment for the child body goes in `env`.
pub fn spawn_remote(test: &str, endpoint: &str, realm: &str, env: &[(&str, String)]) -> ChildGuard {
    spawn_remote_with(
        Command::new(std::env::current_exe().unwrap()),
        test,
        endpoint,
        realm,
        env,
    )
}

/// As [`spawn_remote`], with the command to run the test binary under (`ip netns exec`).
pub fn spawn_remote_with(
    mut cmd: Command,
    test: &str,
    endpoint: &str,
    realm: &str,
    env: &[(&str, String)],
) -> ChildGuard {
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SZ_REMOTE_ENDPOINT", endpoint)
        .env("SZ_REMOTE_REALM", realm)
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard(Some(cmd.spawn().unwrap()))
}

/// In the remote child, runs `body` with a bridge connected to the parent's endpoint and
/// exits (0 on success, 101 on panic). In the parent, returns without running it.
pub fn as_remote(config: impl FnOnce(BridgeConfig) -> BridgeConfig, body: impl FnOnce(&Bridge)) {
    let (Ok(endpoint), Ok(realm)) = (
        std::env::var("SZ_REMOTE_ENDPOINT"),
        std::env::var("SZ_REMOTE_REALM"),
    ) else {
        return;
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bridge =
            Bridge::open(config(BridgeConfig::new()).realm(&realm).connect(&endpoint)).unwrap();
        body(&bridge);
        bridge.close(PATIENCE);
    }));
    std::process::exit(if outcome.is_ok() { 0 } else { 101 });
}

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap()
}
