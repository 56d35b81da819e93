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
//!
//! A sample may reach the receiver in pieces (Zenoh reassembles a large message from its
//! fragments without copying them together): [`decode_parts`] reads frames across piece
//! boundaries, and a frame's bytes are [`Parts`], borrowed from the pieces they lie in.

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

/// Bytes of a frame as the sample holds them: one slice, or several in order when they
/// cross the boundaries of the sample's pieces.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    first: &'a [u8],
    more: Vec<&'a [u8]>,
    len: usize,
}

impl<'a> Parts<'a> {
    /// The bytes as slices, in order (none of them empty unless all of it is).
    pub fn slices(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }

    /// The bytes in one slice, when they lie in one.
    pub fn as_contiguous(&self) -> Option<&'a [u8]> {
        self.more.is_empty().then_some(self.first)
    }

    /// All the bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, copied into one vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for s in self.slices() {
            v.extend_from_slice(s);
        }
        v
    }
}

impl<'a> From<&'a [u8]> for Parts<'a> {
    fn from(bytes: &'a [u8]) -> Parts<'a> {
        Parts {
            first: bytes,
            more: Vec::new(),
            len: bytes.len(),
        }
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Parts<'a> {
    fn from(bytes: &'a [u8; N]) -> Parts<'a> {
        Parts::from(&bytes[..])
    }
}

/// Equal when the bytes are, however they are cut.
impl PartialEq for Parts<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.slices().flatten().eq(other.slices().flatten())
    }
}

impl Eq for Parts<'_> {}

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
        bytes: Parts<'a>,
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
    pub inline: Parts<'a>,
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

/// A cursor over untrusted bytes, in one or more pieces.
struct Reader<'a, 'p> {
    /// What is left of the current piece.
    cur: &'a [u8],
    /// The pieces after it.
    rest: &'p [&'a [u8]],
    /// Bytes left in all.
    left: usize,
}

impl<'a, 'p> Reader<'a, 'p> {
    fn new(pieces: &'p [&'a [u8]]) -> Reader<'a, 'p> {
        Reader {
            cur: &[],
            rest: pieces,
            left: pieces.iter().map(|p| p.len()).sum(),
        }
    }

    /// The current piece, moved past empty ones.
    fn current(&mut self) -> &'a [u8] {
        while self.cur.is_empty() {
            let Some((&next, rest)) = self.rest.split_first() else {
                break;
            };
            (self.cur, self.rest) = (next, rest);
        }
        self.cur
    }

    fn take(&mut self, n: usize) -> Result<Parts<'a>, FrameError> {
        if n > self.left {
            return Err(FrameError("truncated"));
        }
        self.left -= n;
        let cur = self.current();
        if n <= cur.len() {
            let (head, tail) = cur.split_at(n);
            self.cur = tail;
            return Ok(Parts::from(head));
        }
        let mut parts = Parts {
            first: cur,
            more: Vec::new(),
            len: n,
        };
        let mut want = n - cur.len();
        self.cur = &[];
        while want > 0 {
            // `n <= left` before: the pieces hold `want` more bytes.
            let cur = self.current();
            let k = want.min(cur.len());
            parts.more.push(&cur[..k]);
            self.cur = &cur[k..];
            want -= k;
        }
        Ok(parts)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        let cur = self.current();
        if cur.len() >= N {
            // The common case: within the current piece.
            let (head, tail) = cur.split_at(N);
            a.copy_from_slice(head);
            self.cur = tail;
            self.left -= N;
            return Ok(a);
        }
        let parts = self.take(N)?;
        let mut at = 0;
        for s in parts.slices() {
            a[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.array().map(u64::from_le_bytes)
    }

    fn is_empty(&self) -> bool {
        self.left == 0
    }
}

/// Decodes every frame of a sample. The first bad frame ends decoding with its error
/// (the frames before it are returned: they were well-formed and in order).
pub fn decode_all(bytes: &[u8]) -> (Vec<Frame<'_>>, Option<FrameError>) {
    decode_parts(std::slice::from_ref(&bytes))
}

/// [`decode_all`] of a sample in pieces: `pieces`, in order, are its bytes.
pub fn decode_parts<'a>(pieces: &[&'a [u8]]) -> (Vec<Frame<'a>>, Option<FrameError>) {
    let mut r = Reader::new(pieces);
    let mut frames = Vec::new();
    while !r.is_empty() {
        match decode_one(&mut r) {
            Ok(f) => frames.push(f),
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

fn decode_one<'a>(r: &mut Reader<'a, '_>) -> Result<Frame<'a>, FrameError> {
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
    for s in h.inline.slices() {
        out.extend_from_slice(s);
    }
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
        let pieces = [bytes];
        let mut r = Reader::new(&pieces);
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

fn get_str(r: &mut Reader<'_, '_>) -> Result<String, FrameError> {
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
            inline: b"abcde".into(),
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
                    bytes: b"fgh".into()
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
                inline: b"xyzw".into(),
            },
        );
        for cut in 1..out.len() {
            let (frames, err) = decode_all(&out[..cut]);
            assert!(frames.is_empty() && err.is_some(), "cut at {cut}");
        }
    }

    #[test]
    fn frames_cut_into_pieces_anywhere_decode_the_same() {
        let mut out = Vec::new();
        put_credit(&mut out, 1, 2);
        put_msg(
            &mut out,
            &MsgHeader {
                seq: 0,
                fingerprint: 3,
                archive_len: 300,
                ports: vec![4],
                buffers: vec![5, 6],
                inline: (&[7u8; 200][..]).into(),
            },
        );
        put_chunk_header(&mut out, 1, 100);
        out.extend_from_slice(&[8u8; 100]);
        put_close(&mut out, 2);
        let (whole, err) = decode_all(&out);
        assert_eq!((whole.len(), err), (4, None));
        for cuts in [
            vec![1],
            vec![3, 40, 41],
            vec![30, 230, 240, 250],
            (1..out.len()).collect(),
        ] {
            let mut pieces = Vec::new();
            let mut at = 0;
            for &c in &cuts {
                pieces.push(&out[at..c]);
                at = c;
            }
            pieces.push(&out[at..]);
            pieces.insert(1, &[]);
            let (frames, err) = decode_parts(&pieces);
            assert_eq!((&frames, err), (&whole, None), "cut at {cuts:?}");
            for cut in 0..out.len() {
                // Every truncation is still an error or fewer frames, never a panic.
                let short: Vec<&[u8]> = pieces
                    .iter()
                    .scan(0usize, |n, p| {
                        let take = p.len().min(cut.saturating_sub(*n));
                        *n += p.len();
                        Some(&p[..take])
                    })
                    .collect();
                let (frames, err) = decode_parts(&short);
                assert!(err.is_some() || frames.len() < whole.len());
            }
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
