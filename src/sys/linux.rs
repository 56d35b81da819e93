//! Linux backend: memfd segments, `SOCK_SEQPACKET` socket pairs for liveness and
//! descriptor passing, and shared (not private) futexes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
#[cfg(not(loom))]
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fstat, ftruncate, memfd_create};
use rustix::io::{Errno, FdFlags, fcntl_getfd, fcntl_setfd};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
#[cfg(not(loom))]
use rustix::thread::futex;

#[cfg(not(loom))]
use crate::sys::sync::AtomicU32;

/// Creates an anonymous shared-memory object of exactly `len` bytes.
///
/// The object has no name, so nothing can leak: the kernel frees it with the last
/// descriptor or mapping, whichever way the processes holding it end. It is sealed
/// against resizing so no holder can turn the others' accesses into `SIGBUS`.
///
/// The error names the step that failed: a size the kernel refuses fails in `ftruncate`,
/// not in `memfd_create`.
pub(crate) fn create_shared_memory(debug_name: &str, len: u64) -> Result<OwnedFd, StepError> {
    let step = |op| {
        move |e: Errno| StepError {
            op,
            source: e.into(),
        }
    };
    let fd = memfd_create(debug_name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(step("memfd_create"))?;
    // Owner-only, like a named object would be: reopening it through /proc needs this too.
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600)).map_err(step("fchmod"))?;
    ftruncate(&fd, len).map_err(step("ftruncate"))?;
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(step("fcntl(F_ADD_SEALS)"))?;
    Ok(fd)
}

/// A system call of a sequence failed: `op` names it.
#[derive(Debug)]
pub(crate) struct StepError {
    pub op: &'static str,
    pub source: io::Error,
}

impl From<StepError> for crate::error::Error {
    fn from(e: StepError) -> Self {
        crate::error::Error::os(e.op, e.source)
    }
}

/// For callers that report an `io::Error`: the kind is kept, the message names the step.
impl From<StepError> for io::Error {
    fn from(e: StepError) -> Self {
        io::Error::new(e.source.kind(), format!("{}: {}", e.op, e.source))
    }
}

/// The size of a shared-memory object, as the kernel reports it (never as a peer wrote it).
pub(crate) fn object_len(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Releases the pages of `[offset, offset + len)` of a shared-memory object (a hole
/// punched in the memfd: the range reads as zeros and takes no memory until written).
pub(crate) fn release_pages(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    fallocate(fd, mode, offset, len).map_err(io::Error::from)
}

/// Maps `len` bytes of `fd` shared and read-write, reachable only through raw pointers.
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw(&fd)
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, close-on-exec.
///
/// One end travels with each port. The kernel reports `POLLHUP` on one end once every
/// descriptor of the other end is closed: that is how a port learns its peer's process
/// died, with no heartbeat and nothing left behind.
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// True once every descriptor of the other end of `sock` is closed.
pub(crate) fn peer_hung_up(sock: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&sock, PollFlags::RDHUP)];
    match poll(
        &mut fds,
        Some(&rustix::thread::futex::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    ) {
        Ok(0) => false,
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR | PollFlags::NVAL),
        // EINTR: ask again next time rather than guess.
        Err(_) => false,
    }
}

/// Sleeps while `*word == expected`, for at most `timeout`; spurious returns are allowed.
///
/// Uses the shared futex variant: the word lives in memory mapped by several processes,
/// and a private futex would key on this address space only. (Under `--cfg loom` the
/// model in `loom_futex.rs` stands in for this and `futex_wake`.)
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::thread::futex::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // EAGAIN (the word already changed), EINTR and ETIMEDOUT all mean "look again".
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// Wakes every waiter sleeping on `word` (there is at most one by protocol).
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

/// Registers this process to take part in [`remote_barrier`]s: from now on, another
/// process's remote barrier runs a full memory barrier on every CPU that runs one of our
/// threads (`membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`). `false` when the
/// kernel (or a seccomp filter) refuses. The registration belongs to the address space:
/// `fork` copies it with the rest (`tests/fork.rs` checks), `exec` drops it.
#[cfg(not(loom))]
pub(crate) fn register_for_remote_barriers() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
}

/// A full memory barrier on every CPU that runs a thread of a registered process, ours
/// included, before this returns; a thread that is not running passes one when it is
/// switched back in. It turns those threads' [`light_barrier`]s into full barriers for
/// the purpose of ordering against this thread's accesses before and after the call
/// (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which interrupts those CPUs; if the
/// kernel refuses it, `MEMBARRIER_CMD_GLOBAL`, which waits for every CPU to pass through
/// the scheduler, milliseconds; if that fails too, only our own full fence).
#[cfg(not(loom))]
pub(crate) fn remote_barrier() {
    use rustix::thread::{MembarrierCommand, membarrier};
    if membarrier(MembarrierCommand::GlobalExpedited).is_err()
        && membarrier(MembarrierCommand::Global).is_err()
    {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// The fast side of a [`remote_barrier`]: only the compiler is kept from moving memory
/// accesses across it; a remote barrier makes it a full one when it counts.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn light_barrier() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Arranges for `fds` to survive `exec` in the child `cmd` starts, and only there.
///
/// The parent's descriptors stay close-on-exec, so a child spawned concurrently by another
/// thread inherits nothing by accident; the flag is cleared after `fork`, in the child, and
/// only on a descriptor that is still the same open file (so a `Command` spawned again
/// later, when those numbers may name other files, hands nothing over by mistake).
pub(crate) fn inherit_in_child(cmd: &mut Command, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut wanted = Vec::with_capacity(fds.len());
    for fd in fds {
        wanted.push((fd.as_raw_fd(), file_identity(*fd)?));
    }
    let clear = move || -> io::Result<()> {
        for &(fd, identity) in &wanted {
            // SAFETY: only used for fstat and fcntl, which fail harmlessly with EBADF if
            // the number is not open in the child.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            // fstat and fcntl are async-signal-safe system calls; nothing here allocates.
            if file_identity(fd).is_ok_and(|id| id == identity) {
                fcntl_setfd(fd, FdFlags::empty())?;
            }
        }
        Ok(())
    };
    // SAFETY: the closure only calls fstat and fcntl (async-signal-safe) and touches no
    // locks or allocator state, as `pre_exec` requires.
    unsafe { cmd.pre_exec(clear) };
    Ok(())
}

/// Takes ownership of a descriptor this process inherited, after checking it is open and
/// of the expected kind, and marks it close-on-exec again.
pub(crate) fn adopt_inherited(raw: RawFd, want_socket: bool) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: only borrowed for the duration of the checks; fcntl on a closed descriptor
    // fails with EBADF, which we report.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    fcntl_getfd(borrowed).map_err(|e| {
        if e == Errno::BADF {
            io::Error::new(io::ErrorKind::NotFound, "inherited descriptor is not open")
        } else {
            e.into()
        }
    })?;
    let st = fstat(borrowed)?;
    let kind = st.st_mode & S_IFMT;
    let expected = if want_socket { S_IFSOCK } else { S_IFREG };
    if kind != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "inherited descriptor is not of the expected kind",
        ));
    }
    fcntl_setfd(borrowed, FdFlags::CLOEXEC)?;
    // SAFETY: the descriptor is open (checked above) and, by the bootstrap contract, was
    // handed to this process for shmport alone; `parent_port` takes it at most once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFREG: u32 = 0o100000;

/// The raw number of a descriptor, for handing to a child.
pub(crate) fn raw(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

/// Most descriptors one message may carry (the kernel's `SCM_MAX_FD` is 253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 250;

/// Sends `bytes` and `fds` as one `SOCK_SEQPACKET` message. The receiver gets its own
/// references to the open files; ours stay open. `wait == false` fails with `WouldBlock`
/// instead of waiting for room in the socket's buffer.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    wait: bool,
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    use std::mem::MaybeUninit;
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    let mut flags = SendFlags::NOSIGNAL;
    if !wait {
        flags |= SendFlags::DONTWAIT;
    }
    let sent = sendmsg(sock, &[io::IoSlice::new(bytes)], &mut control, flags)?;
    if sent != bytes.len() {
        return Err(io::Error::other("short send on a SOCK_SEQPACKET socket"));
    }
    Ok(())
}

/// One message received by [`recv_with_fds`].
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes of the message copied into the buffer (at most its length).
    pub len: usize,
    /// The descriptors that arrived, close-on-exec, in the order they were sent.
    pub fds: Vec<OwnedFd>,
    /// The kernel could not install every descriptor the message carried (`MSG_CTRUNC`),
    /// typically because this process is at its `RLIMIT_NOFILE`: the missing ones are lost
    /// (the kernel closed them), and `fds` holds those that fit, if any.
    pub truncated: bool,
}

/// Receives one message sent by [`send_with_fds`] without waiting: its bytes (truncated to
/// `buf`) and the descriptors it carried. `WouldBlock` when none is queued. Descriptors
/// that did not fit are reported, not an error: the message itself arrived.
pub(crate) fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};
    use std::mem::MaybeUninit;
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        sock,
        &mut [io::IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    Ok(Received {
        len: msg.bytes.min(buf.len()),
        fds,
        truncated: msg.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// This process's id, cheaply: one relaxed load.
///
/// glibc has not cached `getpid` since 2.25, so asking is a system call, too slow for a
/// check on every post and receive. The id is cached here and refreshed in the child of
/// every `fork` by a `pthread_atfork` child handler, registered by the first call. A child
/// made without libc's `fork` (a raw `clone`, `vfork`) runs no handler: it keeps the
/// parent's id, which is harmless only when it execs or exits at once, as `vfork` children
/// and `posix_spawn` do. If registration fails the id is not cached and every call asks the
/// kernel.
#[inline]
pub(crate) fn current_pid() -> u32 {
    match CACHED_PID.load(std::sync::atomic::Ordering::Relaxed) {
        0 => cache_pid(),
        pid => pid,
    }
}

/// 0 until cached (no process has id 0).
static CACHED_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[cold]
fn cache_pid() -> u32 {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Not a `Once`: a fork while another thread is inside `call_once` would leave the
    // child's `Once` running forever.
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    let pid = getpid_now();
    if !REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: `pthread_atfork` is given no prepare or parent handler and a child handler
        // that only makes a system call (`getpid`, async-signal-safe) and an atomic store,
        // which is all a handler running in a child of a multithreaded process may do. The
        // handler is a plain function of this crate, valid for the life of the process.
        let registered = unsafe { pthread_atfork(None, None, Some(refresh_pid_after_fork)) };
        if registered == 0 {
            CACHED_PID.store(pid, Ordering::Relaxed);
        }
    }
    pid
}

fn getpid_now() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

extern "C" fn refresh_pid_after_fork() {
    CACHED_PID.store(getpid_now(), std::sync::atomic::Ordering::Relaxed);
}

// SAFETY (of the declaration): the signature is POSIX's, `int pthread_atfork(void
// (*)(void), void (*)(void), void (*)(void))`, with null for an absent handler (`None`).
// The C library that `std` links provides it.
unsafe extern "C" {
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> std::ffi::c_int;
}

/// The identity of an open file: equal for every descriptor of the same object, in every
/// process, for as long as the object exists.
pub(crate) fn file_identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// False only when no process `pid` exists (the kernel says `ESRCH`); a process of another
/// user, and a zombie not yet reaped, exist. A pid the kernel has since given to a new
/// process also exists: callers may only err towards "alive".
pub(crate) fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH))
}

/// The identity of this process's PID namespace (the inode of `/proc/self/ns/pid`), read
/// once; 0 when it cannot be read. Process ids compare only within one namespace.
pub(crate) fn pid_namespace() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
    })
}

/// True when the shared-memory object behind `fd` can never shrink: a peer holding it then
/// cannot turn our accesses into `SIGBUS`.
pub(crate) fn is_sealed_against_shrinking(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(SealFlags::SHRINK))
}

/// True when `fd` is a socket.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    fstat(fd).is_ok_and(|st| st.st_mode & S_IFMT == S_IFSOCK)
}

/// Raises this process's soft limit on open descriptors to its hard limit, once.
///
/// Each port holds two descriptors (its segment and its socket end), so 10,000 channels
/// need about 30,000: far above the usual soft limit of 1,024, usually far below the hard
/// limit. Go's runtime does the same at startup, for the same reason. Failure is ignored:
/// creating a channel then reports `EMFILE` as it would have.
pub(crate) fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            let before = limit.current;
            limit.current = limit.maximum;
            if setrlimit(Resource::Nofile, limit).is_ok() {
                event!(
                    info,
                    "raised this process's descriptor limit from {before:?} to {:?}",
                    limit.current
                );
            }
        }
    });
}

/// The abstract-namespace socket address `name`: no file, so nothing to clean up; the
/// kernel frees the name with the last descriptor of its listener.
fn endpoint_address(name: &str) -> io::Result<rustix::net::SocketAddrUnix> {
    rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes()).map_err(io::Error::from)
}

/// This process's effective user id.
pub(crate) fn user_id() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Binds and listens on endpoint `name`. `AddrInUse` if another listener holds it.
pub(crate) fn endpoint_listen(name: &str) -> io::Result<OwnedFd> {
    endpoint_listen_with_backlog(name, 128)
}

/// As [`endpoint_listen`], with room for `backlog` connections not yet accepted (the kernel
/// caps it at `net.core.somaxconn`).
pub(crate) fn endpoint_listen_with_backlog(name: &str, backlog: i32) -> io::Result<OwnedFd> {
    use rustix::net::{bind, listen, socket_with};
    let sock = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    bind(&sock, &endpoint_address(name)?)?;
    listen(&sock, backlog)?;
    Ok(sock)
}

/// Waits for the next connection to a listener.
pub(crate) fn endpoint_accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// The next connection to a non-blocking listener, if one is queued.
pub(crate) fn endpoint_try_accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(conn) => return Ok(Some(conn)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects to endpoint `name`. `ConnectionRefused` or `NotFound` when nobody serves it.
pub(crate) fn endpoint_connect(name: &str) -> io::Result<OwnedFd> {
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&sock, &endpoint_address(name)?)?;
    Ok(sock)
}

/// As [`endpoint_connect`], but never waiting: `WouldBlock` when the listener's queue of
/// connections not yet accepted is full. The socket stays non-blocking.
///
/// `spare` recycles sockets: a connect refused because nobody serves the name leaves the
/// socket unconnected and reusable, so probing many names costs one system call each.
pub(crate) fn endpoint_connect_nonblocking(
    name: &str,
    spare: &mut Option<OwnedFd>,
) -> io::Result<OwnedFd> {
    let sock = match spare.take() {
        Some(s) => s,
        None => rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?,
    };
    match rustix::net::connect(&sock, &endpoint_address(name)?) {
        Ok(()) => Ok(sock),
        Err(e) => {
            if matches!(e, Errno::CONNREFUSED | Errno::NOENT) {
                *spare = Some(sock);
            }
            Err(e.into())
        }
    }
}

/// True when the process at the other end of a connected socket runs as our user.
pub(crate) fn peer_is_same_user(sock: BorrowedFd<'_>) -> bool {
    rustix::net::sockopt::socket_peercred(sock)
        .is_ok_and(|cred| cred.uid == rustix::process::geteuid())
}

/// Waits until `sock` has a message to read (or hung up).
pub(crate) fn wait_readable(sock: BorrowedFd<'_>) -> io::Result<()> {
    let mut fds = [PollFd::new(&sock, PollFlags::IN)];
    loop {
        match poll(&mut fds, None) {
            Err(Errno::INTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

// ----- doorbells and epoll: waiting on many ports ----------------------------------------

/// Sends the one-byte message `byte` on `sock`, never waiting; a full socket buffer or a
/// gone peer drops it.
pub(crate) fn send_byte_nonblocking(sock: BorrowedFd<'_>, byte: u8) {
    use rustix::net::{SendFlags, send};
    if let Err(e) = send(sock, &[byte], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
        // A full socket buffer holds doorbells enough to wake the reader; anything else
        // means the reader's end is gone, which its liveness check reports.
        event!(debug, "a doorbell was dropped: {e}");
    }
}

/// A new epoll instance, close-on-exec.
pub(crate) fn epoll_new() -> io::Result<OwnedFd> {
    Ok(rustix::event::epoll::create(
        rustix::event::epoll::CreateFlags::CLOEXEC,
    )?)
}

/// Watches `fd` for readability and hang-up, edge-triggered, reporting `token`.
pub(crate) fn epoll_watch(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
    use rustix::event::epoll::{EventData, EventFlags, add};
    Ok(add(
        epoll,
        fd,
        EventData::new_u64(token),
        EventFlags::IN | EventFlags::RDHUP | EventFlags::ET,
    )?)
}

/// Stops watching `fd`.
pub(crate) fn epoll_unwatch(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>) {
    let _ = rustix::event::epoll::delete(epoll, fd);
}

/// One readiness report: the token given to [`epoll_watch`], and whether the far end hung
/// up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Readiness {
    pub token: u64,
    pub hung_up: bool,
}

/// Waits up to `timeout` (forever for `None`) for watched descriptors to become ready and
/// appends their reports to `out` (at most 64 per call). An interrupted wait reports none.
pub(crate) fn epoll_wait(
    epoll: BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
    out: &mut Vec<Readiness>,
) -> io::Result<()> {
    use rustix::event::epoll::{Event, EventData, EventFlags, wait};
    let mut events = [Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    }; 64];
    // Capped, so that the kernel never needs `epoll_pwait2` (Linux 5.11) for a long
    // timeout; callers loop until their own deadline.
    let timeout = timeout.map(|t| t.min(std::time::Duration::from_secs(3600)));
    let ts = timeout.map(|t| rustix::event::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: t.subsec_nanos().into(),
    });
    let n = match wait(epoll, &mut events[..], ts.as_ref()) {
        Ok(n) => n,
        Err(Errno::INTR) => 0,
        Err(e) => return Err(e.into()),
    };
    out.extend(events[..n].iter().map(|e| {
        let flags = e.flags;
        Readiness {
            token: e.data.u64(),
            hung_up: flags.intersects(EventFlags::HUP | EventFlags::RDHUP | EventFlags::ERR),
        }
    }));
    Ok(())
}

/// Makes `fd` non-blocking (a listener whose `accept` must not wait).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(rustix::fs::fcntl_setfl(
        fd,
        flags | rustix::fs::OFlags::NONBLOCK,
    )?)
}

/// True when `fd` is readable now (for a listener: a connection is waiting). One `poll`
/// that never waits; cheaper than a failing `accept`, which allocates a socket first.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}
