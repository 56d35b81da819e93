//! The process's async reactor: one thread, `shmport-reactor`, that waits in epoll on the
//! sockets of ports with a pending receive future and wakes their tasks.
//!
//! It is independent of any async runtime: a future registers its port's socket once,
//! leaves its `Waker` here when it returns `Pending`, and arms the port's doorbell (see
//! `MessagePort::ready_or_arm`). The writer's post rings the doorbell, the socket becomes
//! readable, this thread wakes the task. Nothing polls while nobody posts.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Waker;

use crate::sys::{self, Readiness};

use super::slab::{Key, Slab};

struct Entry {
    waker: Option<Waker>,
    hung_up: bool,
}

struct Reactor {
    epoll: OwnedFd,
    entries: Mutex<Slab<Entry>>,
}

impl Reactor {
    fn entries(&self) -> std::sync::MutexGuard<'_, Slab<Entry>> {
        // A panic elsewhere never leaves an entry half-written: keep going.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut events: Vec<Readiness> = Vec::with_capacity(64);
        let mut wakers: Vec<Waker> = Vec::with_capacity(64);
        loop {
            events.clear();
            if sys::epoll_wait(self.epoll.as_fd(), None, &mut events).is_err() {
                // EINTR is reported as no events; anything else would repeat at once.
                std::thread::yield_now();
                continue;
            }
            {
                let mut entries = self.entries();
                for ev in &events {
                    // None: released since the kernel reported it.
                    if let Some(e) = entries.get_mut(Key::from_token(ev.token)) {
                        e.hung_up |= ev.hung_up;
                        wakers.extend(e.waker.take());
                    }
                }
            }
            // Wake outside the lock: a waker may run the task inline. A waker that panics
            // must not take the reactor (and every other task's wake-ups) down with it.
            for w in wakers.drain(..) {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
            }
        }
    }
}

/// The reactor, started on first use. (A process forked without exec inherits the epoll
/// instance but not the thread: async receives there are not supported.)
fn reactor() -> io::Result<&'static Reactor> {
    static REACTOR: OnceLock<Arc<Reactor>> = OnceLock::new();
    static STARTING: Mutex<()> = Mutex::new(());
    if let Some(r) = REACTOR.get() {
        return Ok(r);
    }
    let _guard = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = REACTOR.get() {
        return Ok(r);
    }
    let r = Arc::new(Reactor {
        epoll: sys::epoll_new()?,
        entries: Mutex::new(Slab::default()),
    });
    let runner = Arc::clone(&r);
    // On failure `r` drops here and closes its epoll instance; the next call tries again.
    std::thread::Builder::new()
        .name("shmport-reactor".into())
        .spawn(move || runner.run())?;
    Ok(REACTOR.get_or_init(|| r))
}

/// A port's place in the reactor: its socket is watched, and a task can leave its waker.
/// Released explicitly by the port ([`release`](Self::release)), which owns the socket.
#[derive(Debug)]
pub(crate) struct Registration(Key);

impl Registration {
    /// Watches `fd` (a port's socket) for news.
    pub(crate) fn new(fd: BorrowedFd<'_>) -> io::Result<Registration> {
        let r = reactor()?;
        let empty = Entry {
            waker: None,
            hung_up: false,
        };
        let key = r
            .entries()
            .insert(empty)
            .ok_or_else(|| io::Error::other("too many async ports"))?;
        if let Err(e) = sys::epoll_watch(r.epoll.as_fd(), fd, key.token()) {
            r.entries().remove(key);
            return Err(e);
        }
        Ok(Registration(key))
    }

    /// Leaves `waker` to be woken at the next news; returns whether a hang-up was reported
    /// since the last call.
    pub(crate) fn set_waker(&self, waker: &Waker) -> bool {
        let mut entries = registered().entries();
        let Some(e) = entries.get_mut(self.0) else {
            return false; // unreachable: only `release` removes the entry
        };
        match &mut e.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        std::mem::take(&mut e.hung_up)
    }

    /// Forgets the waker left by a receive that was cancelled.
    pub(crate) fn clear_waker(&self) {
        if let Some(e) = registered().entries().get_mut(self.0) {
            e.waker = None;
        }
    }
}

impl crate::port::SocketWatcher for Registration {
    /// Stops watching `sock` (the socket given to [`new`](Registration::new)) and frees
    /// the entry.
    fn release(self: Box<Self>, sock: BorrowedFd<'_>) {
        let r = registered();
        sys::epoll_unwatch(r.epoll.as_fd(), sock);
        r.entries().remove(self.0);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The reactor a registration lives in (it exists: the registration was made in it).
fn registered() -> &'static Reactor {
    reactor().expect("a registration exists only once the reactor runs")
}
