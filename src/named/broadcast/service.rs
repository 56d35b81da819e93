//! The doorkeeper: one thread per process that answers members joining any broadcast
//! name this process is a member of, so that a join never waits for the members to post
//! or receive.
//!
//! Each member's slot name is a listener registered here; a joiner connects to one and
//! gets the name's segment (one descriptor) in reply. The thread sleeps in `epoll_wait`
//! and costs nothing while nobody joins. It starts with the first `BroadcastChannel` of
//! the process and lives as long as the process. (A child made by `fork` without `exec`
//! has no doorkeeper: broadcast channels are not usable there, as ports are not.)

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::shm::fanout::Registry;
use crate::sys;

/// The first bytes of the doorkeeper's answer.
pub(super) const HELLO: &[u8; 8] = b"shmpbc02";

/// How long a joiner waits for a member's doorkeeper to answer before trying another
/// (a process stopped by a debugger, say).
const ANSWER_PATIENCE: Duration = Duration::from_secs(2);

struct Doorkeeper {
    epoll: OwnedFd,
    next: AtomicU64,
    doors: Mutex<HashMap<u64, Door>>,
    orphans: Mutex<Vec<Orphans>>,
}

struct Door {
    listener: OwnedFd,
    reg: Arc<Registry>,
    /// The body of a large message, handed out instead of the segment.
    body: Option<OwnedFd>,
}

/// Bodies whose member closed before every reader fetched them: kept until the member's
/// slot is reclaimed (every reader is done with its ring), then dropped.
struct Orphans {
    reg: Arc<Registry>,
    slot: usize,
    closed_word: u32,
    /// Held for their drop, which stops serving them.
    _bodies: Vec<Registration>,
}

static DOORKEEPER: OnceLock<Result<Doorkeeper, String>> = OnceLock::new();

fn doorkeeper() -> Result<&'static Doorkeeper, Error> {
    let started = DOORKEEPER.get_or_init(|| {
        let epoll = sys::epoll_new().map_err(|e| e.to_string())?;
        let keeper = Doorkeeper {
            epoll,
            next: AtomicU64::new(1),
            doors: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
        };
        std::thread::Builder::new()
            .name("shmport-broadcast".into())
            .spawn(serve)
            .map_err(|e| e.to_string())?;
        Ok(keeper)
    });
    started.as_ref().map_err(|why| {
        Error::os(
            "starting the broadcast doorkeeper",
            std::io::Error::other(why.clone()),
        )
    })
}

/// A listener served by the doorkeeper; dropping it closes the listener (and frees its
/// name) before returning.
pub(super) struct Registration(u64);

/// Has the doorkeeper answer joiners connecting to `listener` with `reg`'s descriptor.
pub(super) fn register(listener: OwnedFd, reg: Arc<Registry>) -> Result<Registration, Error> {
    add_door(listener, reg, None)
}

/// Has the doorkeeper answer readers connecting to `listener` with `body`.
pub(super) fn register_body(
    listener: OwnedFd,
    body: OwnedFd,
    reg: Arc<Registry>,
) -> Result<Registration, Error> {
    add_door(listener, reg, Some(body))
}

fn add_door(
    listener: OwnedFd,
    reg: Arc<Registry>,
    body: Option<OwnedFd>,
) -> Result<Registration, Error> {
    let keeper = doorkeeper()?;
    sys::set_nonblocking(listener.as_fd()).map_err(|e| Error::os("fcntl", e))?;
    let token = keeper.next.fetch_add(1, Ordering::Relaxed);
    let mut doors = keeper.doors.lock().unwrap_or_else(|p| p.into_inner());
    sys::epoll_watch(keeper.epoll.as_fd(), listener.as_fd(), token)
        .map_err(|e| Error::os("epoll_ctl", e))?;
    let door = Door {
        listener,
        reg,
        body,
    };
    // Connections that arrived before the watch: edge-triggered epoll would not report
    // them.
    door.serve();
    doors.insert(token, door);
    Ok(Registration(token))
}

/// Keeps serving `bodies` of the member of `slot` (which closed at `closed_word`) until
/// its ring is reclaimed.
pub(super) fn adopt(reg: Arc<Registry>, slot: usize, closed_word: u32, bodies: Vec<Registration>) {
    if bodies.is_empty() {
        return;
    }
    let Ok(keeper) = doorkeeper() else { return };
    let mut orphans = keeper.orphans.lock().unwrap_or_else(|p| p.into_inner());
    orphans.push(Orphans {
        reg,
        slot,
        closed_word,
        _bodies: bodies,
    });
}

/// Drops the orphaned bodies nobody can still need; true while some are kept.
fn tidy_orphans(keeper: &Doorkeeper) -> bool {
    let mut orphans = keeper.orphans.lock().unwrap_or_else(|p| p.into_inner());
    orphans.retain(|o| {
        o.reg
            .slot(o.slot)
            .word
            .load(crate::sys::sync::Ordering::Acquire)
            == o.closed_word
    });
    !orphans.is_empty()
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Ok(keeper) = doorkeeper() else { return };
        let mut doors = keeper.doors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(door) = doors.remove(&self.0) {
            sys::epoll_unwatch(keeper.epoll.as_fd(), door.listener.as_fd());
        }
    }
}

/// The doorkeeper thread.
fn serve() {
    // The keeper is set right after this thread is spawned; wait for it.
    let keeper = loop {
        if let Some(Ok(k)) = DOORKEEPER.get() {
            break k;
        }
        std::thread::yield_now();
    };
    let mut ready = Vec::new();
    loop {
        ready.clear();
        // Orphans adopted meanwhile are looked at within a second; kept ones every 100 ms.
        let timeout = Duration::from_millis(if tidy_orphans(keeper) { 100 } else { 1000 });
        if sys::epoll_wait(keeper.epoll.as_fd(), Some(timeout), &mut ready).is_err() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let doors = keeper.doors.lock().unwrap_or_else(|p| p.into_inner());
        for r in &ready {
            if let Some(door) = doors.get(&r.token) {
                door.serve();
            }
        }
    }
}

impl Door {
    /// Answers every connection waiting with the door's descriptor.
    fn serve(&self) {
        let answer = self.body.as_ref().map_or(self.reg.fd(), |b| b.as_fd());
        // WouldBlock: nobody is waiting. Anything else (a reset, a descriptor limit): the
        // next connection triggers another look.
        while let Ok(conn) = sys::endpoint_accept(self.listener.as_fd()) {
            if sys::peer_is_same_user(conn.as_fd()) {
                let _ = sys::send_with_fds(conn.as_fd(), HELLO, &[answer], false);
            }
        }
    }
}

/// Asks the member holding `address` for the segment. `None` when nobody holds it, or the
/// holder is not of our user, or does not answer in time.
pub(super) fn ask(address: &str, spare: &mut Option<OwnedFd>) -> Option<OwnedFd> {
    let conn = sys::endpoint_connect_nonblocking(address, spare).ok()?;
    if !sys::peer_is_same_user(conn.as_fd()) {
        return None;
    }
    let give_up = Instant::now() + ANSWER_PATIENCE;
    let mut backoff = Duration::from_micros(10);
    while !sys::readable_now(conn.as_fd()) {
        if Instant::now() >= give_up {
            return None;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(2));
    }
    let mut buf = [0u8; 8];
    let got = sys::recv_with_fds(conn.as_fd(), &mut buf).ok()?;
    let mut fds = got.fds;
    (got.len == HELLO.len() && &buf == HELLO && fds.len() == 1).then(|| fds.remove(0))
}
