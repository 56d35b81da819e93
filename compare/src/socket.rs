//! The Unix stream socket transport: the sender writes a freshly allocated frame with
//! `write_all`; the receiver `read_exact`s it into one reused buffer and checks every byte.
//! Acknowledgements travel back on the same socket.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::Result;
use crate::frame::{self, FrameSink, FrameSource};

/// The parent's listening socket, in a directory of its own that goes away with it.
pub struct Listener {
    listener: UnixListener,
    dir: PathBuf,
    path: PathBuf,
}

impl Listener {
    pub fn bind() -> Result<Listener> {
        let dir = std::env::temp_dir().join(format!("shmport-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("pipeline.sock");
        let listener = UnixListener::bind(&path)?;
        Ok(Listener {
            listener,
            dir,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sending half, once the child has connected.
    pub fn accept(&self, frame_len: usize) -> Result<Box<dyn FrameSink>> {
        let stream = self.accept_stream()?;
        Ok(Box::new(SocketSink { stream, frame_len }))
    }

    /// The parent's end of the next connection.
    pub fn accept_stream(&self) -> Result<UnixStream> {
        Ok(self.listener.accept()?.0)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The receiving half: connects to the parent's listener.
pub fn connect(path: &str, frame_len: usize) -> Result<Box<dyn FrameSource>> {
    let stream = UnixStream::connect(path)?;
    Ok(Box::new(SocketSource {
        stream,
        buf: vec![0; frame_len],
    }))
}

struct SocketSink {
    stream: UnixStream,
    frame_len: usize,
}

impl FrameSink for SocketSink {
    fn send(&mut self, tag: u64) -> Result<()> {
        let frame = frame::fresh_vec(self.frame_len, tag);
        Ok(self.stream.write_all(&frame)?)
    }

    fn wait_ack(&mut self) -> Result<u64> {
        let mut consumed = [0u8; 8];
        self.stream.read_exact(&mut consumed)?;
        Ok(u64::from_le_bytes(consumed))
    }
}

struct SocketSource {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl FrameSource for SocketSource {
    fn recv(&mut self) -> Result<u64> {
        self.stream.read_exact(&mut self.buf)?;
        frame::check(&self.buf)
    }

    fn ack(&mut self, consumed: u64) -> Result<()> {
        Ok(self.stream.write_all(&consumed.to_le_bytes())?)
    }
}
