//! Named endpoints: how processes that were not spawned together get a channel — the
//! native analogue of posting a port to another window.
//!
//! A server binds a name; each client that connects gets a fresh channel, one port on
//! each side. The name lives in Linux's abstract socket namespace, scoped by user id
//! (`shmport/<uid>/<name>`): there is no file to leave behind, and the kernel releases the
//! name when the server's process exits, however it exits, so a stale name never blocks a
//! restart. Both sides check with the kernel that the other runs as the same user.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::Poll;

use crate::error::Error;
use crate::port::{MessageChannel, MessagePort};
use crate::sys;
use crate::wait::fd::{FdWatch, Waited, poll_until};
use crate::wire::naming;

/// Longest endpoint name accepted, in bytes.
pub const MAX_ENDPOINT_NAME: usize = 64;

const HELLO: &[u8; 8] = b"shmport1";

/// A bound name that hands out connected ports: the server side of a named endpoint.
///
/// ```
/// use shmport::Endpoint;
///
/// let server = Endpoint::bind("doc-example-echo")?;
/// let client = std::thread::spawn(|| -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
///     let port = Endpoint::connect("doc-example-echo")?;
///     port.post_message(&String::from("ping"), [])?;
///     Ok(port.recv::<String>()?.data)
/// });
/// let port = server.accept()?;
/// let got = port.recv::<String>()?.data;
/// port.post_message(&format!("{got}, pong"), [])?;
/// assert_eq!(client.join().unwrap().unwrap(), "ping, pong");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Endpoint {
    name: String,
    /// Non-blocking: `accept` waits for it to be readable, `try_accept` never waits.
    listener: OwnedFd,
    /// The listener watched for async accepts, made by the first one.
    watch: std::sync::OnceLock<FdWatch>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.release(self.listener.as_fd());
        }
    }
}

/// The listener's descriptor, for an event loop of your own: readable when a client
/// waits, so that [`Endpoint::try_accept`] returns it.
impl AsFd for Endpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Endpoint {
    /// Binds `name` for this user.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an empty or too long name, or one with characters other
    /// than ASCII letters, digits, `.`, `_` and `-`; [`Error::NameInUse`] when a live
    /// process of this user already serves it; [`Error::Os`] otherwise.
    pub fn bind(name: &str) -> Result<Endpoint, Error> {
        check_name(name)?;
        let listener =
            sys::endpoint_listen(&naming::address(name)).map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => Error::NameInUse(name.to_owned()),
                _ => Error::os("binding an endpoint", e),
            })?;
        sys::set_nonblocking(listener.as_fd()).map_err(|e| Error::os("fcntl", e))?;
        Ok(Endpoint {
            name: name.to_owned(),
            listener,
            watch: std::sync::OnceLock::new(),
        })
    }

    /// The name this endpoint serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next client and returns this side's port of a new channel with it.
    /// Connections from another user are refused and skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the operating system refuses the connection or the channel.
    pub fn accept(&self) -> Result<MessagePort, Error> {
        loop {
            if let Some(port) = self.try_accept()? {
                return Ok(port);
            }
            sys::wait_readable(self.listener.as_fd()).map_err(|e| Error::os("poll", e))?;
        }
    }

    /// The port of a new channel with the next client if one is waiting now; `None`
    /// otherwise. Never waits for a client (the hand-over to a client that is there is a
    /// single message).
    ///
    /// ```
    /// let endpoint = shmport::Endpoint::bind(&format!("try-accept-doc-{}", std::process::id()))?;
    /// assert!(endpoint.try_accept()?.is_none());
    /// # Ok::<(), shmport::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub fn try_accept(&self) -> Result<Option<MessagePort>, Error> {
        loop {
            let conn = sys::endpoint_try_accept(self.listener.as_fd())
                .map_err(|e| Error::os("accepting on an endpoint", e))?;
            let Some(conn) = conn else {
                return Ok(None);
            };
            if !sys::peer_is_same_user(conn.as_fd()) {
                continue;
            }
            // None: the client left before we answered; look for the next one.
            if let Some(port) = send_new_channel(conn.as_fd(), HELLO)? {
                return Ok(Some(port));
            }
        }
    }

    /// Waits without blocking the thread for the next client: the async form of
    /// [`accept`](Self::accept), for any executor (with the `tokio` feature, inside a
    /// tokio runtime, through tokio's reactor).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a client is taken only in the poll that returns its port; one that
    /// connected meanwhile waits for the next accept.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub async fn accept_async(&self) -> Result<MessagePort, Error> {
        std::future::poll_fn(|cx| {
            let watch = match self.watch.get() {
                Some(w) => w,
                None => match FdWatch::new(self.listener.as_fd()) {
                    Ok(w) => self.watch.get_or_init(|| w),
                    Err(e) => return Poll::Ready(Err(Error::os("watching an endpoint", e))),
                },
            };
            let fd = self.listener.as_fd();
            poll_until(watch, fd, cx, || self.try_accept()).map_err(|e| match e {
                Waited::Io(e) => Error::os("epoll", e),
                Waited::Attempt(e) => e,
            })
        })
        .await
    }

    /// Connects to the endpoint `name` of this user and returns this side's port of a new
    /// channel with its server. Waits until the server accepts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] as for [`bind`](Self::bind); [`Error::NoSuchEndpoint`] when
    /// no process of this user serves `name`; [`Error::BadBootstrap`] when what answered
    /// is not a shmport endpoint of this user; [`Error::Os`] otherwise.
    pub fn connect(name: &str) -> Result<MessagePort, Error> {
        check_name(name)?;
        let conn =
            sys::endpoint_connect(&naming::address(name)).map_err(|e| connect_error(name, e))?;
        if !sys::peer_is_same_user(conn.as_fd()) {
            return Err(Error::BadBootstrap(
                "the endpoint is served by another user",
            ));
        }
        recv_channel_port(conn.as_fd(), HELLO)
    }

    /// Connects to the endpoint `name` without blocking the thread while the server has
    /// not accepted yet: the async form of [`connect`](Self::connect).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the connection: the server's accept skips it (or the
    /// port it already handed over reports `Disconnected` at once).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_async(name: &str) -> Result<MessagePort, Error> {
        check_name(name)?;
        let mut spare = None;
        let conn = loop {
            match sys::endpoint_connect_nonblocking(&naming::address(name), &mut spare) {
                Ok(conn) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The server's queue of clients is full: let others run, then retry.
                    yield_now().await;
                }
                Err(e) => return Err(connect_error(name, e)),
            }
        };
        if !sys::peer_is_same_user(conn.as_fd()) {
            return Err(Error::BadBootstrap(
                "the endpoint is served by another user",
            ));
        }
        let watch =
            FdWatch::new(conn.as_fd()).map_err(|e| Error::os("watching a connection", e))?;
        let fd = conn.as_fd();
        let ready = std::future::poll_fn(|cx| {
            poll_until(&watch, fd, cx, || {
                Ok::<_, Error>(sys::readable_now(fd).then_some(()))
            })
        })
        .await;
        watch.release(fd);
        ready.map_err(|e| match e {
            Waited::Io(e) => Error::os("epoll", e),
            Waited::Attempt(e) => e,
        })?;
        recv_channel_port(conn.as_fd(), HELLO)
    }
}

/// Creates a channel and sends one of its ports over the connected socket `conn`, after
/// `magic` (8 bytes) and the port's side; returns the other port. `None` when the other
/// side closed the connection before the send.
pub(crate) fn send_new_channel(
    conn: BorrowedFd<'_>,
    magic: &[u8; 8],
) -> Result<Option<MessagePort>, Error> {
    let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    let wire = port2.wire().map_err(|e| Error::os("socketpair", e))?;
    let mut hello = [0u8; 9];
    hello[..8].copy_from_slice(magic);
    hello[8] = wire.side.index() as u8;
    let departure = port2.depart();
    match sys::send_with_fds(conn, &hello, &[wire.segment, wire.socket], true) {
        Ok(()) => {
            departure.complete();
            Ok(Some(port1))
        }
        Err(_) => Ok(None),
    }
}

/// Receives the port [`send_new_channel`] sends over `conn` with the same `magic`,
/// waiting for it. [`Error::BadBootstrap`] when what arrives is not one (or the sender
/// hung up first).
pub(crate) fn recv_channel_port(
    conn: BorrowedFd<'_>,
    magic: &[u8; 8],
) -> Result<MessagePort, Error> {
    sys::wait_readable(conn).map_err(|e| Error::os("poll", e))?;
    let mut hello = [0u8; 9];
    let received = sys::recv_with_fds(conn, &mut hello)
        .map_err(|e| Error::os("receiving a port over a connection", e))?;
    if received.truncated {
        // The kernel could not install the descriptors: we are at our descriptor limit.
        return Err(Error::os(
            "receiving a port over a connection (descriptors truncated)",
            std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error()),
        ));
    }
    let n = received.len;
    let mut fds = received.fds.into_iter();
    let (Some(seg_fd), Some(sock), None) = (fds.next(), fds.next(), fds.next()) else {
        return Err(Error::BadBootstrap(
            "the other side did not hand over a port",
        ));
    };
    if n != hello.len() || &hello[..8] != magic {
        return Err(Error::BadBootstrap("the handed-over port is malformed"));
    }
    MessagePort::arrive(seg_fd, sock, usize::from(hello[8]), Vec::new())
}

pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ENDPOINT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// What a failed connect to endpoint `name` means for the caller.
fn connect_error(name: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
            Error::NoSuchEndpoint(name.to_owned())
        }
        _ => Error::os("connecting to an endpoint", e),
    }
}

/// Returns `Pending` once, asking to be polled again: lets the executor run others.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}
