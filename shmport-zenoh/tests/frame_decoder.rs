//! The frame decoder against bytes from a deterministic generator: valid frame sequences
//! round-trip, and every mutation of them (flipped bytes, truncation, extension, random
//! bytes) decodes to well-formed frames or an error, never a panic, and never to a frame
//! that claims more bytes than it was given.

use shmport_zenoh::frame::{self, Frame, Hello, MsgHeader};

/// xorshift64*: the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn valid_sample(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let body: Vec<u8> = (0..rng.below(300)).map(|i| i as u8).collect();
    for seq in 0..rng.below(6) {
        match rng.below(4) {
            0 => {
                let inline = &body[..rng.below(body.len() as u64 + 1) as usize];
                frame::put_msg(
                    &mut out,
                    &MsgHeader {
                        seq,
                        fingerprint: rng.next(),
                        archive_len: (inline.len() as u64 + rng.below(100)) as u32,
                        ports: (0..rng.below(3)).map(|_| rng.next()).collect(),
                        buffers: (0..rng.below(3)).map(|_| rng.below(1 << 20)).collect(),
                        inline: inline.into(),
                    },
                );
            }
            1 => {
                let n = rng.below(body.len() as u64).max(1) as usize;
                let n = n.min(body.len().max(1));
                frame::put_chunk_header(&mut out, seq, n as u32);
                out.extend((0..n).map(|i| i as u8));
            }
            2 => frame::put_close(&mut out, seq),
            _ => frame::put_credit(&mut out, rng.next(), rng.next()),
        }
    }
    out
}

fn check(bytes: &[u8]) {
    let (frames, _err) = frame::decode_all(bytes);
    let mut claimed = 0usize;
    for f in &frames {
        claimed += match f {
            Frame::Msg(h) => {
                assert!(u64::from(h.archive_len) <= frame::MAX_ARCHIVE_LEN);
                assert!(h.ports.len() + h.buffers.len() <= frame::MAX_TRANSFER_LIST);
                assert!(h.inline.len() <= h.archive_len as usize);
                assert!(h.body_len() <= frame::MAX_BODY_LEN);
                h.inline.len()
            }
            Frame::Chunk { bytes, .. } => {
                assert!(!bytes.is_empty());
                bytes.len()
            }
            _ => 0,
        };
    }
    assert!(claimed <= bytes.len());
    let _ = Hello::decode(bytes);
}

#[test]
fn valid_frames_round_trip_through_the_decoder() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..2_000 {
        let sample = valid_sample(&mut rng);
        let (frames, err) = frame::decode_all(&sample);
        assert_eq!(err, None);
        // Re-encoding what was decoded gives the same bytes.
        let mut again = Vec::new();
        for f in &frames {
            match f {
                Frame::Msg(h) => frame::put_msg(&mut again, h),
                Frame::Chunk { seq, bytes } => {
                    frame::put_chunk_header(&mut again, *seq, bytes.len() as u32);
                    again.extend_from_slice(&bytes.to_vec());
                }
                Frame::Close { seq } => frame::put_close(&mut again, *seq),
                Frame::Credit { messages, bytes } => {
                    frame::put_credit(&mut again, *messages, *bytes)
                }
            }
        }
        assert_eq!(again, sample);
    }
}

#[test]
fn mutated_and_random_bytes_never_panic_the_decoder() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..20_000 {
        let mut sample = valid_sample(&mut rng);
        match rng.below(4) {
            0 if !sample.is_empty() => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(sample.len() as u64) as usize;
                    sample[i] = rng.next() as u8;
                }
            }
            1 => sample.truncate(rng.below(sample.len() as u64 + 1) as usize),
            2 => sample.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
            _ => sample = (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        }
        check(&sample);
    }
}
