//! A pool of worker processes, each answering on a reply port that travels with the job.
//!
//! The parent spawns N workers (4 by default), each with its own channel. Every job gets a
//! fresh `MessageChannel`: the parent keeps `port1` and posts the job with `port2` in the
//! transfer list, the web's request/reply pattern. The worker answers on that port and
//! drops it, so the parent sees the answer and then `Disconnected` on it. Half the jobs sum
//! a `Vec<u64>` sent in the message; the other half hash a 64 KiB `ArrayBuffer` moved in the
//! same transfer list. The parent prints jobs per second and checks every answer.
//!
//! ```text
//! cargo run --release --example worker_pool
//! cargo run --release --example worker_pool -- --workers 2 --jobs 2000
//! ```

use std::collections::VecDeque;
use std::process::{Child, Command};
use std::time::Instant;

use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{ArrayBuffer, MessageChannel, MessagePort, RecvError, Transferable};

/// Jobs in flight per worker: enough that a worker never waits for the parent to read an
/// answer, few enough that the open reply ports stay a handful of descriptors.
const WINDOW: usize = 8;
const SUM_LEN: usize = 1000;
const HASH_LEN: usize = 64 << 10;

#[derive(Archive, Serialize, Deserialize, Debug)]
enum Job {
    /// Sum these numbers (wrapping).
    Sum { id: u64, numbers: Vec<u64> },
    /// FNV-1a of the buffer that follows the reply port in the transfer list.
    Hash { id: u64 },
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct Answer {
    id: u64,
    worker: u32,
    value: u64,
}

struct Worker {
    port: MessagePort,
    child: Child,
    pid: u32,
    in_flight: VecDeque<Pending>,
}

/// A job posted and not yet answered: what the answer must be, and where it will arrive.
struct Pending {
    id: u64,
    expected: u64,
    reply: MessagePort,
}

#[derive(Default)]
struct Tally {
    right: u64,
    wrong: Vec<String>,
    /// Reply ports that were closed after exactly one answer, as the worker promises.
    closed_after_one: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return worker();
    }
    let mut n_workers = 4usize;
    let mut n_jobs = 4000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a number"));
        match a.as_str() {
            "--workers" => n_workers = value()?.parse()?,
            "--jobs" => n_jobs = value()?.parse()?,
            _ => return Err(format!("unknown argument {a}; use --workers N, --jobs N").into()),
        }
    }
    if n_workers == 0 {
        return Err("--workers must be at least 1".into());
    }

    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for _ in 0..n_workers {
        let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
        let child = shmport::spawn(&mut Command::new(&exe), port2)?;
        workers.push(Worker {
            port: port1,
            pid: child.id(),
            child,
            in_flight: VecDeque::new(),
        });
    }
    // Each worker says it is ready, so process start-up is not counted as job time.
    for w in &workers {
        let pid = w.port.recv::<u32>()?.data;
        if pid != w.pid {
            return Err(format!("worker {} announced itself as {pid}", w.pid).into());
        }
    }
    println!(
        "worker_pool: parent pid {} started {n_workers} workers ({}), {n_jobs} jobs, \
         each with a fresh reply port",
        std::process::id(),
        workers
            .iter()
            .map(|w| w.pid.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut tally = Tally::default();
    let mut per_worker = vec![0u64; n_workers];
    let start = Instant::now();
    for id in 0..n_jobs {
        let w = id as usize % n_workers;
        if workers[w].in_flight.len() == WINDOW {
            let p = workers[w].in_flight.pop_front().expect("window is full");
            collect(p, workers[w].pid, &mut tally)?;
            per_worker[w] += 1;
        }
        let reply = MessageChannel::new()?;
        let mut transfer: Vec<Transferable> = vec![reply.port2.into()];
        let (job, expected) = if id % 2 == 0 {
            let numbers: Vec<u64> = (0..SUM_LEN).map(|_| rng.next_u64() >> 8).collect();
            let expected = numbers.iter().fold(0u64, |s, &x| s.wrapping_add(x));
            (Job::Sum { id, numbers }, expected)
        } else {
            let mut buf = ArrayBuffer::new(HASH_LEN)?;
            for chunk in buf.chunks_exact_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            // Hashed before posting: the buffer moves to the worker with the job.
            let expected = fnv1a(&buf);
            transfer.push(buf.into());
            (Job::Hash { id }, expected)
        };
        workers[w].port.post_message(&job, transfer)?;
        workers[w].in_flight.push_back(Pending {
            id,
            expected,
            reply: reply.port1,
        });
    }
    for (i, w) in workers.iter_mut().enumerate() {
        while let Some(p) = w.in_flight.pop_front() {
            collect(p, w.pid, &mut tally)?;
            per_worker[i] += 1;
        }
    }
    let elapsed = start.elapsed();

    let pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    // Dropping a worker's port (with the rest of `Worker`) is its signal to exit: it sees
    // Disconnected. All are told before any is waited for.
    let children: Vec<Child> = workers.into_iter().map(|w| w.child).collect();
    for (mut child, pid) in children.into_iter().zip(&pids) {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("worker {pid} failed: {status}").into());
        }
    }

    println!(
        "{n_jobs} jobs ({} sums of {SUM_LEN} u64, {} FNV-1a hashes of a {} KiB ArrayBuffer) \
         in {:.1} ms: {:.0} jobs/s",
        n_jobs.div_ceil(2),
        n_jobs / 2,
        HASH_LEN >> 10,
        elapsed.as_secs_f64() * 1e3,
        n_jobs as f64 / elapsed.as_secs_f64()
    );
    println!(
        "jobs per worker: {}",
        pids.iter()
            .zip(&per_worker)
            .map(|(pid, n)| format!("{pid}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "answers right: {}/{n_jobs}; reply ports closed by the worker after one answer: {}/{n_jobs}",
        tally.right, tally.closed_after_one
    );
    if !tally.wrong.is_empty() || tally.right != n_jobs || tally.closed_after_one != n_jobs {
        for w in tally.wrong.iter().take(10) {
            println!("  wrong: {w}");
        }
        return Err("some answers were wrong or missing".into());
    }
    println!("check: every answer is right");
    Ok(())
}

/// Receives the answer to `p` on its reply port, checks it, and checks that the worker then
/// closed the port.
fn collect(p: Pending, pid: u32, tally: &mut Tally) -> Result<(), Box<dyn std::error::Error>> {
    let answer = p.reply.recv::<Answer>()?.data;
    if answer.id == p.id && answer.value == p.expected && answer.worker == pid {
        tally.right += 1;
    } else {
        tally.wrong.push(format!(
            "job {} (worker {pid}): got {answer:?}, expected value {}",
            p.id, p.expected
        ));
    }
    match p.reply.recv::<Answer>() {
        Err(RecvError::Disconnected) => tally.closed_after_one += 1,
        Ok(ev) => tally
            .wrong
            .push(format!("job {}: a second answer {:?}", p.id, ev.data)),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn worker() -> Result<(), Box<dyn std::error::Error>> {
    let port = shmport::parent_port()?;
    let pid = std::process::id();
    port.post_message(&pid, [])?;
    loop {
        let ev = match port.recv::<Job>() {
            Ok(ev) => ev,
            // The parent dropped our port: no more jobs.
            Err(RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let reply = ev
            .ports
            .into_iter()
            .next()
            .ok_or("a job without a reply port")?;
        let (id, value) = match ev.data {
            Job::Sum { id, numbers } => (id, numbers.iter().fold(0u64, |s, &x| s.wrapping_add(x))),
            Job::Hash { id } => {
                let buf = ev.buffers.first().ok_or("a hash job without its buffer")?;
                (id, fnv1a(buf))
            }
        };
        reply.post_message(
            &Answer {
                id,
                worker: pid,
                value,
            },
            [],
        )?;
        // Closing the reply port tells the parent this job is finished: nothing more comes.
        drop(reply);
    }
}

/// 64-bit FNV-1a: simple, and any changed byte changes it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Marsaglia's xorshift64: deterministic job contents without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
