//! A hostile peer: a child process that maps its channel's segment and writes random and
//! adversarial values into it (indices past capacity, huge lengths, forged marks, torn
//! records, a rewritten header) while the parent keeps using its port. The parent must
//! never crash, hang or read out of bounds: each call gives a message, a `messageerror`,
//! `Disconnected` or a timeout.

mod common;

use std::time::Duration;

use common::as_child;
use shmport::{MessageChannel, RecvTimeoutError};

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Scribbles per episode.
const ROUNDS: u64 = 50_000;
/// Episodes: fresh channel and hostile child, each with its own seed and target area.
const EPISODES: u64 = 18;
const MODE_ENV: &str = "SHMPORT_TEST_HOSTILE_MODE";

#[test]
fn a_hostile_peer_scribbling_on_the_segment_cannot_crash_or_hang_the_victim() {
    as_child(|port| {
        let episode: u64 = std::env::var(MODE_ENV).unwrap().parse().unwrap();
        // Map the segment ourselves, as a hostile process holding the port could.
        let map = common::map_inherited_segment();
        let (base, len) = (map.as_mut_ptr(), map.len());
        let cap = (len - 4096) / 2;
        let ring1 = 4096 + cap; // child -> parent: the ring the victim reads
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (episode + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let write = |off: usize, value: u64| {
            if off + 8 <= len {
                // SAFETY: in bounds of our own mapping, 8-aligned. This process is the
                // hostile peer: racing the victim's accesses is the point of the test, and
                // only the victim's behaviour is asserted.
                unsafe { base.add(off).cast::<u64>().write_volatile(value) };
            }
        };
        // In forger mode this process is ring 1's producer, writing well-framed records of
        // random lengths, kinds, tags and bytes at the positions the victim expects.
        let mut pos = 0u64;
        let fp = common::fingerprint::<Vec<u64>>();
        for _ in 0..ROUNDS {
            let r = xorshift(&mut rng);
            match episode % 3 {
                0 => {
                    // Respect the victim's published head, as a real producer would, so that
                    // what it reads is our framing with hostile contents, not a lapped ring.
                    let head = || {
                        // SAFETY: in bounds (the control block of ring 1), 8-aligned.
                        unsafe { base.add(512 + 128).cast::<u64>().read_volatile() }
                    };
                    // SAFETY: in bounds (the header's closed flag of side 0), 4-aligned.
                    let victim_closed =
                        || unsafe { base.add(128).cast::<u32>().read_volatile() } != 0;
                    while pos + 256 > head() + cap as u64 {
                        if victim_closed() {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    if victim_closed() {
                        break;
                    }
                    let off = (pos % cap as u64) as usize;
                    if cap - off < 24 {
                        pos += (cap - off) as u64;
                        continue;
                    }
                    let max = (cap - off - 24) as u64;
                    let plen = (xorshift(&mut rng) % 200).min(max) / 8 * 8;
                    for w in 0..plen / 8 {
                        let v = match r % 3 {
                            0 => xorshift(&mut rng),
                            1 => xorshift(&mut rng) % 64,
                            _ => u64::MAX - xorshift(&mut rng) % 64,
                        };
                        write(ring1 + off + 24 + 8 * w as usize, v);
                    }
                    // Impossible framing poisons the channel at once (the library's unit tests
                    // cover each case); keep it rare so the victim parses hostile contents long.
                    let len_field = if r % 4001 == 0 {
                        xorshift(&mut rng) % (1 << 32)
                    } else {
                        plen
                    };
                    let kind = match r % 4099 {
                        0 => 3,
                        1 => 1,
                        2..=300 => 4 + xorshift(&mut rng) % 8,
                        _ => 2,
                    };
                    write(ring1 + off + 8, len_field | (kind << 32));
                    write(
                        ring1 + off + 16,
                        if r % 5 == 0 { xorshift(&mut rng) } else { fp },
                    );
                    write(ring1 + off, pos + 1); // the mark, last
                    pos += 24 + plen;
                }
                1 => match r % 4 {
                    0 => write(512 + 128, xorshift(&mut rng) % (4 * cap as u64)), // victim's head
                    1 => write(256, xorshift(&mut rng)),                          // ring 0 tail
                    2 => write(8 + 8 * (r as usize % 3), xorshift(&mut rng)),     // header fields
                    _ => write(ring1 + (xorshift(&mut rng) as usize % cap) / 8 * 8, r),
                },
                _ => write(
                    (xorshift(&mut rng) as usize % len) / 8 * 8,
                    xorshift(&mut rng),
                ),
            }
        }
        // Keep the port (and the mapping) alive until the parent is done.
        while !matches!(
            port.recv_timeout::<Vec<u64>>(Duration::from_secs(30)),
            Err(RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout)
        ) {}
    });
    let name = "a_hostile_peer_scribbling_on_the_segment_cannot_crash_or_hang_the_victim";
    let (mut got, mut errors, mut timeouts, mut disconnects) = (0u64, 0u64, 0u64, 0u64);
    for episode in 0..EPISODES {
        let ch = MessageChannel::builder()
            .capacity(4 * 4096)
            .build()
            .unwrap();
        let child = spawn_with_mode(name, ch.port2, episode);
        let mut quiet = 0;
        for i in 0..60_000u64 {
            if quiet > 50 {
                break; // the hostile peer is done writing
            }
            let _ = ch.port1.try_post_message(&vec![i; (i % 64) as usize], []);

            match ch.port1.recv_timeout::<Vec<u64>>(Duration::from_millis(2)) {
                Ok(_) => {
                    got += 1;
                    quiet = 0;
                }
                Err(RecvTimeoutError::MessageError(e)) => {
                    if std::env::var_os("SHMPORT_TEST_VERBOSE").is_some() {
                        eprintln!("episode {episode}: {e}");
                    }
                    errors += 1;
                    quiet = 0;
                }
                Err(RecvTimeoutError::Timeout) => {
                    timeouts += 1;
                    quiet += 1;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if std::env::var_os("SHMPORT_TEST_VERBOSE").is_some() {
                        eprintln!("episode {episode}: disconnected after {i}");
                    }
                    disconnects += 1;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        drop(ch.port1);
        child.wait();
    }
    eprintln!(
        "{EPISODES} episodes x {ROUNDS} hostile writes: victim got {got} messages, \
         {errors} messageerrors, {timeouts} timeouts, {disconnects} poisoned/disconnected"
    );
}

fn spawn_with_mode(name: &str, port: shmport::MessagePort, episode: u64) -> common::ChildGuard {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE_ENV, episode.to_string())
        .stdout(std::process::Stdio::null());
    common::ChildGuard::from_child(shmport::spawn(&mut cmd, port).unwrap())
}
