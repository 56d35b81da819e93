//! The bridge's wire format: frames, several to a Zenoh sample, and the handshake.
//!
//! Everything here reads bytes from the network, so everything is checked: every length
//! against what is left, every count against a limit, every sum with overflow checks. A
//! decoder never panics and never allocates more than the bytes it was given justify
//! (the bodies announced by a message header are allocated by the channel, one chunk at
//! a time, after its own limits).
//!
//! All integers are little-endian. A sample is a sequence of frames:
//!
//! | kind | layout after the kind byte |
//! |---|---|
//! | 1 `Msg` | seq u64, fingerprint u64, archive_len u32, inline_len u32, inline bytes, ports u8, buffers u8, port channel ids u64 × ports, buffer lengths u64 × buffers |
//! | 2 `Chunk` | seq u64, len u32 (> 0), bytes |
//! | 3 `Close` | seq u64 |
//! | 4 `Credit` | messages u64, bytes u64 (cumulative grants) |
//!
//! A message's body is its archive followed by its buffers' bytes, in order; the `Msg`
//! frame carries the first `inline_len` bytes of the archive, `Chunk` frames the rest.
//! (The transfer list follows the inline bytes so that a sender can write the archive
//! into the frame before it knows what the message transfers.)

/// Frame kinds.
const KIND_MSG: u8 = 1;
const KIND_CHUNK: u8 = 2;
const KIND_CLOSE: u8 = 3;
const KIND_CREDIT: u8 = 4;

/// The most objects one message may transfer (shmport's own limit).
pub const MAX_TRANSFER_LIST: usize = 100;

/// The largest archive a message may have (shmport's `MessagePort::MAX_MESSAGE_LEN`).
pub const MAX_ARCHIVE_LEN: u64 = (1 << 31) - (1 << 16);

/// The largest body (archive plus buffers) one message may announce: 1 TiB.
pub const MAX_BODY_LEN: u64 = 1 << 40;

/// Version of the handshake and frame format.
pub const VERSION: u32 = 2;

/// One frame, borrowing its bytes from the sample.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The start of a message.
    Msg(MsgHeader<'a>),
    /// More of the current message's body.
    Chunk {
        /// Frame sequence number.
        seq: u64,
        /// The bytes (never empty).
        bytes: &'a [u8],
    },
    /// The sender's port closed: nothing follows.
    Close {
        /// Frame sequence number.
        seq: u64,
    },
    /// The receiver's cumulative grants.
    Credit {
        /// Messages the sender may have sent in all.
        messages: u64,
        /// Body bytes the sender may have sent in all.
        bytes: u64,
    },
}

/// A message's first frame.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct MsgHeader<'a> {
    /// Frame sequence number.
    pub seq: u64,
    /// The type fingerprint of the archive.
    pub fingerprint: u64,
    /// Bytes of the body that are the archive.
    pub archive_len: u32,
    /// A channel id for each transferred port.
    pub ports: Vec<u64>,
    /// The length of each transferred buffer.
    pub buffers: Vec<u64>,
    /// The first bytes of the body.
    pub inline: &'a [u8],
}

impl MsgHeader<'_> {
    /// The whole body's length: archive plus buffers (checked by the decoder).
    pub fn body_len(&self) -> u64 {
        self.buffers
            .iter()
            .fold(u64::from(self.archive_len), |a, &b| a.saturating_add(b))
    }
}

/// Why bytes from the network are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError(pub &'static str);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad frame: {}", self.0)
    }
}

impl std::error::Error for FrameError {}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.bytes.len() {
            return Err(FrameError("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Decodes every frame of a sample. The first bad frame ends decoding with its error
/// (the frames before it are returned: they were well-formed and in order).
pub fn decode_all(bytes: &[u8]) -> (Vec<Frame<'_>>, Option<FrameError>) {
    let mut r = Reader { bytes };
    let mut frames = Vec::new();
    while !r.is_empty() {
        match decode_one(&mut r) {
            Ok(f) => frames.push(f),
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

fn decode_one<'a>(r: &mut Reader<'a>) -> Result<Frame<'a>, FrameError> {
    match r.u8()? {
        KIND_MSG => {
            let seq = r.u64()?;
            let fingerprint = r.u64()?;
            let archive_len = r.u32()?;
            if u64::from(archive_len) > MAX_ARCHIVE_LEN {
                return Err(FrameError("archive longer than a message may be"));
            }
            let inline_len = r.u32()?;
            if inline_len > archive_len {
                return Err(FrameError("inline bytes beyond the archive"));
            }
            let inline = r.take(inline_len as usize)?;
            let (nports, nbufs) = (r.u8()? as usize, r.u8()? as usize);
            if nports + nbufs > MAX_TRANSFER_LIST {
                return Err(FrameError("transfer list too long"));
            }
            let mut ports = Vec::with_capacity(nports);
            for _ in 0..nports {
                ports.push(r.u64()?);
            }
            let mut buffers = Vec::with_capacity(nbufs);
            let mut body = u64::from(archive_len);
            for _ in 0..nbufs {
                let len = r.u64()?;
                body = body
                    .checked_add(len)
                    .filter(|&b| b <= MAX_BODY_LEN)
                    .ok_or(FrameError("body too long"))?;
                buffers.push(len);
            }
            Ok(Frame::Msg(MsgHeader {
                seq,
                fingerprint,
                archive_len,
                ports,
                buffers,
                inline,
            }))
        }
        KIND_CHUNK => {
            let seq = r.u64()?;
            let len = r.u32()?;
            if len == 0 {
                return Err(FrameError("empty chunk"));
            }
            Ok(Frame::Chunk {
                seq,
                bytes: r.take(len as usize)?,
            })
        }
        KIND_CLOSE => Ok(Frame::Close { seq: r.u64()? }),
        KIND_CREDIT => Ok(Frame::Credit {
            messages: r.u64()?,
            bytes: r.u64()?,
        }),
        _ => Err(FrameError("unknown frame kind")),
    }
}

/// Appends a `Msg` frame.
pub fn put_msg(out: &mut Vec<u8>, h: &MsgHeader<'_>) {
    put_msg_prefix(
        out,
        h.seq,
        h.fingerprint,
        h.archive_len,
        h.inline.len() as u32,
    );
    out.extend_from_slice(h.inline);
    put_msg_suffix(out, &h.ports, &h.buffers);
}

/// Appends the start of a `Msg` frame announcing `inline_len` inline bytes of the
/// archive; the caller appends them, then [`put_msg_suffix`].
pub fn put_msg_prefix(
    out: &mut Vec<u8>,
    seq: u64,
    fingerprint: u64,
    archive_len: u32,
    inline_len: u32,
) {
    out.push(KIND_MSG);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&archive_len.to_le_bytes());
    out.extend_from_slice(&inline_len.to_le_bytes());
}

/// Appends the end of a `Msg` frame: its transfer list.
pub fn put_msg_suffix(out: &mut Vec<u8>, ports: &[u64], buffers: &[u64]) {
    out.push(ports.len() as u8);
    out.push(buffers.len() as u8);
    for p in ports {
        out.extend_from_slice(&p.to_le_bytes());
    }
    for b in buffers {
        out.extend_from_slice(&b.to_le_bytes());
    }
}

/// Appends the header of a `Chunk` frame of `len` bytes; the caller appends the bytes.
pub fn put_chunk_header(out: &mut Vec<u8>, seq: u64, len: u32) {
    out.push(KIND_CHUNK);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

/// Appends a `Close` frame.
pub fn put_close(out: &mut Vec<u8>, seq: u64) {
    out.push(KIND_CLOSE);
    out.extend_from_slice(&seq.to_le_bytes());
}

/// Appends a `Credit` frame.
pub fn put_credit(out: &mut Vec<u8>, messages: u64, bytes: u64) {
    out.push(KIND_CREDIT);
    out.extend_from_slice(&messages.to_le_bytes());
    out.extend_from_slice(&bytes.to_le_bytes());
}

/// The connector's query and the acceptor's reply: who the bridge is, which channel.
/// (Version 1 also listed stable type names for translation; message types now carry a
/// stable fingerprint of their own, `shmport::declare_stable_name`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The channel id the connector chose.
    pub channel: u64,
    /// The sender bridge's id (its liveliness token is `<realm>/live/<id>`).
    pub bridge: String,
}

/// The longest bridge id a handshake may carry.
pub const MAX_NAME: usize = 1024;

impl Hello {
    /// The handshake's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.channel.to_le_bytes());
        put_str(&mut out, &self.bridge);
        out
    }

    /// Reads a handshake from the network.
    ///
    /// # Errors
    ///
    /// [`FrameError`] for anything but a well-formed handshake of this version.
    pub fn decode(bytes: &[u8]) -> Result<Hello, FrameError> {
        let mut r = Reader { bytes };
        if r.u32()? != VERSION {
            return Err(FrameError("another protocol version"));
        }
        let channel = r.u64()?;
        let bridge = get_str(&mut r)?;
        if !r.is_empty() {
            return Err(FrameError("bytes after the handshake"));
        }
        Ok(Hello { channel, bridge })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String, FrameError> {
    let n = r.u16()? as usize;
    if n > MAX_NAME {
        return Err(FrameError("name too long"));
    }
    let b = r.take(n)?;
    String::from_utf8(b.to_vec()).map_err(|_| FrameError("name is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        let h = MsgHeader {
            seq: 7,
            fingerprint: 0xfeed,
            archive_len: 5,
            ports: vec![11, 12],
            buffers: vec![5],
            inline: b"abcde",
        };
        put_msg(&mut out, &h);
        put_chunk_header(&mut out, 8, 3);
        out.extend_from_slice(b"fgh");
        put_close(&mut out, 9);
        put_credit(&mut out, 10, 20);
        let (frames, err) = decode_all(&out);
        assert_eq!(err, None);
        assert_eq!(
            frames,
            vec![
                Frame::Msg(h),
                Frame::Chunk {
                    seq: 8,
                    bytes: b"fgh"
                },
                Frame::Close { seq: 9 },
                Frame::Credit {
                    messages: 10,
                    bytes: 20
                },
            ]
        );
    }

    #[test]
    fn every_truncation_of_a_frame_is_an_error() {
        let mut out = Vec::new();
        put_msg(
            &mut out,
            &MsgHeader {
                seq: 1,
                fingerprint: 2,
                archive_len: 4,
                ports: vec![3],
                buffers: vec![4],
                inline: b"xyzw",
            },
        );
        for cut in 1..out.len() {
            let (frames, err) = decode_all(&out[..cut]);
            assert!(frames.is_empty() && err.is_some(), "cut at {cut}");
        }
    }

    #[test]
    fn hello_round_trips_and_rejects_trailing_bytes() {
        let h = Hello {
            channel: 99,
            bridge: "abc".into(),
        };
        let mut b = h.encode();
        assert_eq!(Hello::decode(&b), Ok(h));
        b.push(0);
        assert!(Hello::decode(&b).is_err());
    }

    #[test]
    fn a_version_1_handshake_with_type_names_is_refused() {
        // Version 1: version, channel, bridge id, then (name, fingerprint) pairs.
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend_from_slice(&99u64.to_le_bytes());
        put_str(&mut b, "abc");
        b.extend_from_slice(&1u16.to_le_bytes());
        put_str(&mut b, "my.Type/1");
        b.extend_from_slice(&42u64.to_le_bytes());
        assert_eq!(
            Hello::decode(&b),
            Err(FrameError("another protocol version"))
        );
    }
}
