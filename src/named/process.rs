//! Process bootstrap: hand a port to a child, the native analogue of posting `port2`
//! into an iframe.

use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::port::MessagePort;
use crate::sys;

/// The environment variable through which a child learns which descriptors carry its port.
///
/// Its value is `v1:<parent pid>:<socket fd>:<segment fd>:<side>`. The parent pid makes a
/// grandchild that inherited the variable (but not the descriptors) refuse it.
pub const BOOTSTRAP_ENV: &str = "SHMPORT_PARENT_PORT";

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Starts `cmd` as a child process that owns `port`; the child gets it from
/// [`parent_port`].
///
/// The port's end of the channel moves to the child: messages already queued for it are
/// delivered there. Only the two descriptors that carry the port are inherited, and only
/// by this child.
///
/// ```no_run
/// use shmport::MessageChannel;
/// use std::process::Command;
///
/// let ch = MessageChannel::new()?;
/// let mut child = shmport::spawn(&mut Command::new("./worker"), ch.port2)?;
/// ch.port1.post_message(&String::from("hello, child"), [])?;
/// child.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Os`] when the process cannot be started. The port is then dropped, which
/// closes it: the other end sees `Disconnected`. [`Error::WrongProcess`] when this
/// process is a `fork` of the port's (the port is dropped, closing nothing).
pub fn spawn(cmd: &mut Command, port: MessagePort) -> Result<Child, Error> {
    if !port.in_owner_process() {
        return Err(Error::WrongProcess);
    }
    let wire = port.wire().map_err(|e| Error::os("socketpair", e))?;
    // The records queued for the port may name heaps by index: their descriptors go too.
    let heaps = port.heap_table_to_carry();
    let boot = Bootstrap {
        parent_pid: std::process::id(),
        sock_fd: sys::raw(&wire.socket),
        seg_fd: sys::raw(&wire.segment),
        side: wire.side.index(),
        heap_fds: heaps.iter().map(|h| sys::raw(&h.fd())).collect(),
    };
    cmd.env(BOOTSTRAP_ENV, boot.format());
    let mut inherited = vec![wire.socket, wire.segment];
    inherited.extend(heaps.iter().map(|h| h.fd()));
    sys::inherit_in_child(cmd, &inherited).map_err(|e| Error::os("fstat", e))?;
    let departure = port.depart();
    let child = cmd.spawn().map_err(|e| Error::os("spawn", e))?;
    departure.complete();
    Ok(child)
}

/// The port a parent handed to this process with [`spawn`]. Callable once per process.
///
/// ```no_run
/// let port = shmport::parent_port()?;
/// let greeting = port.recv::<String>()?.data;
/// port.post_message(&format!("got {greeting:?}"), [])?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::NoParentPort`] when this process was not started by [`spawn`];
/// [`Error::ParentPortTaken`] on a second call; [`Error::BadBootstrap`] or
/// [`Error::InvalidSegment`] when what was inherited is not a valid port.
pub fn parent_port() -> Result<MessagePort, Error> {
    let value = std::env::var(BOOTSTRAP_ENV).map_err(|_| Error::NoParentPort)?;
    let boot = Bootstrap::parse(&value)?;
    if boot.parent_pid != rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
    {
        return Err(Error::NoParentPort);
    }
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(Error::ParentPortTaken);
    }
    sys::raise_descriptor_limit();
    let sock: OwnedFd = sys::adopt_inherited(boot.sock_fd, true)
        .map_err(|e| Error::os("adopting the inherited socket", e))?;
    let seg_fd = sys::adopt_inherited(boot.seg_fd, false)
        .map_err(|e| Error::os("adopting the inherited segment", e))?;
    let heaps = boot
        .heap_fds
        .iter()
        .map(|&fd| sys::adopt_inherited(fd, false))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::os("adopting the inherited heaps", e))?;
    MessagePort::arrive(seg_fd, sock, boot.side, heaps)
}

#[derive(Debug, PartialEq, Eq)]
struct Bootstrap {
    parent_pid: u32,
    sock_fd: i32,
    seg_fd: i32,
    side: usize,
    /// The heap table of the port's receive ring (`h5,6,7` as a sixth field; absent when
    /// empty).
    heap_fds: Vec<i32>,
}

impl Bootstrap {
    fn parse(value: &str) -> Result<Bootstrap, Error> {
        let mut it = value.split(':');
        if it.next() != Some("v1") {
            return Err(Error::BadBootstrap("unknown bootstrap version"));
        }
        let mut num = |what| {
            it.next()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or(Error::BadBootstrap(what))
        };
        let parent_pid = num("parent pid")?;
        let sock_fd = num("socket descriptor")?;
        let seg_fd = num("segment descriptor")?;
        let side = num("side")?;
        if side > 1 || sock_fd > i32::MAX as u32 || seg_fd > i32::MAX as u32 || sock_fd == seg_fd {
            return Err(Error::BadBootstrap("values out of range"));
        }
        let heap_fds = match it.next() {
            None => Vec::new(),
            Some(list) => Self::parse_heaps(list)?,
        };
        if it.next().is_some() {
            return Err(Error::BadBootstrap("trailing fields"));
        }
        Ok(Bootstrap {
            parent_pid,
            sock_fd: sock_fd as i32,
            seg_fd: seg_fd as i32,
            side: side as usize,
            heap_fds,
        })
    }

    fn parse_heaps(list: &str) -> Result<Vec<i32>, Error> {
        let bad = Error::BadBootstrap("malformed heap list");
        let fds = list.strip_prefix('h').ok_or(bad)?;
        let fds = fds
            .split(',')
            .map(|f| f.parse::<i32>().ok().filter(|&fd| fd >= 0))
            .collect::<Option<Vec<_>>>()
            .ok_or(Error::BadBootstrap("malformed heap list"))?;
        if fds.len() > crate::wire::transfer::MAX_HEAPS_PER_CHANNEL {
            return Err(Error::BadBootstrap("too many heaps"));
        }
        Ok(fds)
    }

    fn format(&self) -> String {
        let mut v = format!(
            "v1:{}:{}:{}:{}",
            self.parent_pid, self.sock_fd, self.seg_fd, self.side
        );
        if !self.heap_fds.is_empty() {
            let list: Vec<String> = self.heap_fds.iter().map(i32::to_string).collect();
            v.push_str(":h");
            v.push_str(&list.join(","));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_value_round_trips() {
        assert_eq!(
            Bootstrap::parse("v1:42:5:6:1").unwrap(),
            Bootstrap {
                parent_pid: 42,
                sock_fd: 5,
                seg_fd: 6,
                side: 1,
                heap_fds: Vec::new(),
            }
        );
        let with_heaps = Bootstrap::parse("v1:42:5:6:0:h7,8").unwrap();
        assert_eq!(with_heaps.heap_fds, [7, 8]);
        assert_eq!(Bootstrap::parse(&with_heaps.format()).unwrap(), with_heaps);
    }

    #[test]
    fn malformed_bootstrap_values_are_errors() {
        for bad in [
            "",
            "v2:1:2:3:0",
            "v1:1:2:3",
            "v1:1:2:3:2",
            "v1:1:x:3:0",
            "v1:1:3:3:0",
            "v1:1:2:3:0:9",
            "v1:1:2:3:0:h",
            "v1:1:2:3:0:h7,x",
            "v1:1:2:3:0:h7:8",
        ] {
            assert!(
                matches!(Bootstrap::parse(bad), Err(Error::BadBootstrap(_))),
                "{bad}"
            );
        }
    }
}
