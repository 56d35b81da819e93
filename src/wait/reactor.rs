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

struct Entry {
    generation: u32,
    waker: Option<Waker>,
    hung_up: bool,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Entry>,
    free: Vec<u32>,
}

struct Reactor {
    epoll: OwnedFd,
    entries: Mutex<Entries>,
}

impl Reactor {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
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
                    let (index, generation) = split(ev.token);
                    match entries.slots.get_mut(index as usize) {
                        Some(e) if e.generation == generation => {
                            e.hung_up |= ev.hung_up;
                            wakers.extend(e.waker.take());
                        }
                        _ => {} // released since the kernel reported it
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

fn split(token: u64) -> (u32, u32) {
    (token as u32, (token >> 32) as u32)
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
        entries: Mutex::new(Entries::default()),
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
pub(crate) struct Registration {
    index: u32,
    generation: u32,
}

impl Registration {
    /// Watches `fd` (a port's socket) for news.
    pub(crate) fn new(fd: BorrowedFd<'_>) -> io::Result<Registration> {
        let r = reactor()?;
        let (index, generation) = {
            let mut entries = r.entries();
            let index = match entries.free.pop() {
                Some(i) => i,
                None => {
                    let i = u32::try_from(entries.slots.len())
                        .map_err(|_| io::Error::other("too many async ports"))?;
                    entries.slots.push(Entry {
                        generation: 0,
                        waker: None,
                        hung_up: false,
                    });
                    i
                }
            };
            (index, entries.slots[index as usize].generation)
        };
        let token = (u64::from(generation) << 32) | u64::from(index);
        if let Err(e) = sys::epoll_watch(r.epoll.as_fd(), fd, token) {
            r.entries().free.push(index);
            return Err(e);
        }
        Ok(Registration { index, generation })
    }

    /// Leaves `waker` to be woken at the next news; returns whether a hang-up was reported
    /// since the last call.
    pub(crate) fn set_waker(&self, waker: &Waker) -> bool {
        let r = registered();
        let mut entries = r.entries();
        let e = &mut entries.slots[self.index as usize];
        debug_assert_eq!(e.generation, self.generation);
        match &mut e.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        std::mem::take(&mut e.hung_up)
    }

    /// Forgets the waker left by a receive that was cancelled.
    pub(crate) fn clear_waker(&self) {
        let r = registered();
        let mut entries = r.entries();
        entries.slots[self.index as usize].waker = None;
    }

    /// Stops watching `fd` (the socket given to [`new`](Self::new)) and frees the entry.
    fn release_entry(self, fd: BorrowedFd<'_>) {
        let r = registered();
        sys::epoll_unwatch(r.epoll.as_fd(), fd);
        let mut entries = r.entries();
        let e = &mut entries.slots[self.index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.waker = None;
        e.hung_up = false;
        entries.free.push(self.index);
    }
}

impl crate::port::SocketWatcher for Registration {
    fn release(self: Box<Self>, sock: BorrowedFd<'_>) {
        self.release_entry(sock);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The reactor a registration lives in (it exists: the registration was made in it).
fn registered() -> &'static Reactor {
    reactor().expect("a registration exists only once the reactor runs")
}
