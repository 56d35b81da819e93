//! Transfers between two processes: the cost of moving an `ArrayBuffer` or a port should not
//! depend on how many bytes it holds. Beside them, in the same run: creating a buffer, large
//! messages that are copied rather than transferred, and copying 64 MiB through a Unix
//! socket, the baseline for the 64 MiB transfer. The child process is spawned once (this
//! bench binary re-run with a port) and driven with `iter_custom`.
//!
//! ```text
//! cargo bench --bench transfer
//! ```

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use criterion::Criterion;
use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{ArrayBuffer, MessageChannel, MessagePort, Transferable};

/// Where the child finds the bench's Unix socket.
const SOCKET_ENV: &str = "SHMPORT_BENCH_TRANSFER_SOCKET";

const SOCKET_COPY_LEN: usize = 64 << 20;

#[derive(Archive, Serialize, Deserialize, Debug)]
enum Cmd {
    /// Post back, `n` times, every port and buffer that arrives with a `()` message.
    Bounce(u64),
    /// Receive `n` `Vec<u8>` messages, answering each with its length.
    Blobs(u64),
    /// Read `len` bytes from the Unix socket `n` times, answering each with 8 bytes.
    SocketCopy {
        n: u64,
        len: u64,
    },
    Exit,
}

struct Peer {
    port: MessagePort,
    sock: UnixStream,
    child: Child,
    dir: PathBuf,
}

impl Peer {
    fn start() -> Peer {
        let dir =
            std::env::temp_dir().join(format!("shmport-bench-transfer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("copy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let ch = MessageChannel::new().unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(SOCKET_ENV, &path);
        let child = shmport::spawn(&mut cmd, ch.port2).unwrap();
        let (sock, _) = listener.accept().unwrap();
        Peer {
            port: ch.port1,
            sock,
            child,
            dir,
        }
    }

    fn stop(mut self) {
        self.port.post_message(&Cmd::Exit, []).unwrap();
        self.child.wait().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Both sides wait adaptively (the default): a transfer's turnaround fits the spin budget, so
/// the waiter rarely sleeps. Busy-polling would take the last futex wake-ups out, but on a
/// shared 2-core machine a spinning receiver waits for a scheduler tick (4 ms) instead
/// whenever another process holds the second core.
fn buffer_round_trip(c: &mut Criterion, peer: &Peer) {
    let mut g = c.benchmark_group("transfer_round_trip");
    for (name, len) in [
        ("ArrayBuffer_4KiB", 4usize << 10),
        ("ArrayBuffer_1MiB", 1 << 20),
        ("ArrayBuffer_64MiB", 64 << 20),
    ] {
        let mut buf = ArrayBuffer::new(len).unwrap();
        // Every page resident: a transfer that copied or touched the bytes would show.
        buf.fill(0x5a);
        let mut slot = Some(buf);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut buf = slot.take().expect("the buffer came back last time");
                peer.port.post_message(&Cmd::Bounce(iters), []).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    peer.port.post_message(&(), [buf.into()]).unwrap();
                    buf = peer.port.recv::<()>().unwrap().buffers.pop().unwrap();
                }
                let elapsed = start.elapsed();
                assert_eq!((buf.len(), buf[len / 2]), (len, 0x5a));
                slot = Some(buf);
                elapsed
            })
        });
    }

    // A port of another channel goes to the child and comes back; it must still reach its
    // peer afterwards.
    let spare = MessageChannel::new().unwrap();
    let mut slot = Some(spare.port2);
    g.bench_function("port", |b| {
        b.iter_custom(|iters| {
            let mut port = slot.take().expect("the port came back last time");
            peer.port.post_message(&Cmd::Bounce(iters), []).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                peer.port.post_message(&(), [port.into()]).unwrap();
                port = peer.port.recv::<()>().unwrap().ports.pop().unwrap();
            }
            let elapsed = start.elapsed();
            slot = Some(port);
            elapsed
        })
    });
    g.finish();
    let port = slot.unwrap();
    spare.port1.post_message(&7u32, []).unwrap();
    assert_eq!(port.recv::<u32>().unwrap().data, 7);
}

/// In-process: what a buffer costs before any transfer (memfd, seals, mmap; munmap, close).
fn buffer_new_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("array_buffer_new_drop");
    for (name, len) in [("4KiB", 4usize << 10), ("1MiB", 1 << 20)] {
        g.bench_function(name, |b| {
            b.iter(|| drop(black_box(ArrayBuffer::new(black_box(len)).unwrap())))
        });
    }
    g.finish();
}

/// Messages too large for the ring and not transferred: the bytes are copied into a fresh
/// shared region, and out of it again. One message, then the child's 8-byte answer.
fn large_messages(c: &mut Criterion, peer: &Peer) {
    let mut g = c.benchmark_group("large_message_one_way_ack");
    // Each message costs milliseconds: ten samples fit the short measurement time.
    g.sample_size(10);
    for (name, len) in [("Vec_1MiB", 1usize << 20), ("Vec_8MiB", 8 << 20)] {
        let blob = vec![0x33u8; len];
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                peer.port.post_message(&Cmd::Blobs(iters), []).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    peer.port.post_message(&blob, []).unwrap();
                    assert_eq!(peer.port.recv::<u64>().unwrap().data, len as u64);
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// The baseline for the 64 MiB transfer: the same bytes written through a Unix socket to the
/// child, which reads all of them before answering.
fn socket_copy(c: &mut Criterion, peer: &Peer) {
    let mut g = c.benchmark_group("copy_baseline");
    g.sample_size(10);
    let src = vec![0x5au8; SOCKET_COPY_LEN];
    let mut sock = &peer.sock;
    g.bench_function("unix_socket_64MiB", |b| {
        b.iter_custom(|iters| {
            peer.port
                .post_message(
                    &Cmd::SocketCopy {
                        n: iters,
                        len: SOCKET_COPY_LEN as u64,
                    },
                    [],
                )
                .unwrap();
            let mut ack = [0u8; 8];
            // The child's receive buffer is ready (and resident) before the clock starts.
            sock.read_exact(&mut ack).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                sock.write_all(&src).unwrap();
                sock.read_exact(&mut ack).unwrap();
            }
            let elapsed = start.elapsed();
            assert_eq!(u64::from_le_bytes(ack), SOCKET_COPY_LEN as u64);
            elapsed
        })
    });
    g.finish();
}

fn child() {
    let port = shmport::parent_port().unwrap();
    let mut sock = UnixStream::connect(std::env::var_os(SOCKET_ENV).unwrap()).unwrap();
    // Kept between commands: allocating and faulting in 64 MiB is not the copy.
    let mut sock_buf = Vec::new();
    loop {
        match port.recv::<Cmd>().unwrap().data {
            Cmd::Bounce(n) => {
                for _ in 0..n {
                    let ev = port.recv::<()>().unwrap();
                    let back: Vec<Transferable> = ev
                        .ports
                        .into_iter()
                        .map(Transferable::from)
                        .chain(ev.buffers.into_iter().map(Transferable::from))
                        .collect();
                    port.post_message(&(), back).unwrap();
                }
            }
            Cmd::Blobs(n) => {
                for _ in 0..n {
                    let blob = port.recv::<Vec<u8>>().unwrap().data;
                    port.post_message(&(blob.len() as u64), []).unwrap();
                }
            }
            Cmd::SocketCopy { n, len } => {
                if sock_buf.len() != len as usize {
                    sock_buf = vec![1u8; len as usize];
                }
                sock.write_all(&0u64.to_le_bytes()).unwrap();
                for _ in 0..n {
                    sock.read_exact(&mut sock_buf).unwrap();
                    sock.write_all(&len.to_le_bytes()).unwrap();
                }
            }
            Cmd::Exit => return,
        }
    }
}

fn main() {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    // In-process first, before the child exists: nothing else of this bench on the cores.
    buffer_new_drop(&mut c);
    let peer = Peer::start();
    buffer_round_trip(&mut c, &peer);
    large_messages(&mut c, &peer);
    socket_copy(&mut c, &peer);
    peer.stop();
    c.final_summary();
}
