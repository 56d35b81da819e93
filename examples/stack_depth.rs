//! How deep a message can nest before receiving it overflows a thread's stack: the
//! measurement behind the default depth limit (docs/design.md, "Limits and hostile
//! inputs").
//!
//! ```text
//! cargo run --release --example stack_depth   # about 40 s
//! cargo run --example stack_depth             # debug build: about 1 min
//! ```
//!
//! For each nested type, receive mode (validation alone, or validation then
//! deserialization) and stack size (2 MiB, the default for spawned threads, and 8 MiB, a
//! main thread's), a binary search finds the deepest value that is received whole. Each
//! probe is a process of its own (this program, re-run), since an overflow aborts it; the
//! receiving port's depth limit is lifted, and the value is posted from a thread with a
//! 1 GiB stack, since serializing it recurses too.

use std::process::{Command, Stdio};

use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{MessageChannel, MessagePort};

/// Every node a vector of nodes.
#[derive(Archive, Serialize, Deserialize)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
struct Nest(#[rkyv(omit_bounds)] Vec<Nest>);

/// A linked list.
#[derive(Archive, Serialize, Deserialize)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
struct Node {
    value: u64,
    #[rkyv(omit_bounds)]
    next: Option<Box<Node>>,
}

/// A JSON-like document, nested through arrays and objects in turn.
#[derive(Archive, Serialize, Deserialize)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
enum Json {
    Null,
    Num(f64),
    Str(String),
    Arr(#[rkyv(omit_bounds)] Vec<Json>),
    Obj(#[rkyv(omit_bounds)] Vec<(String, Json)>),
}

fn nest(levels: usize) -> Nest {
    let mut n = Nest(Vec::new());
    for _ in 1..levels {
        n = Nest(vec![n]);
    }
    n
}

fn list(levels: usize) -> Node {
    let mut n = Node {
        value: 0,
        next: None,
    };
    for i in 1..levels {
        n = Node {
            value: i as u64,
            next: Some(Box::new(n)),
        };
    }
    n
}

fn json(levels: usize) -> Json {
    let mut n = Json::Str("a leaf string".into());
    for i in 1..levels {
        n = if i % 2 == 0 {
            Json::Arr(vec![Json::Null, Json::Num(i as f64), n])
        } else {
            Json::Obj(vec![(format!("key{i}"), n)])
        };
    }
    n
}

const KINDS: [&str; 3] = ["nest", "list", "json"];

/// Posts the value, from a thread with room to serialize it. The value is leaked: dropping
/// it would recurse as deep as it nests.
fn post(port: MessagePort, kind: &str, levels: usize) -> MessagePort {
    let kind = kind.to_owned();
    let post = move || {
        match kind.as_str() {
            "nest" => port.post_message(&*std::mem::ManuallyDrop::new(nest(levels)), []),
            "list" => port.post_message(&*std::mem::ManuallyDrop::new(list(levels)), []),
            _ => port.post_message(&*std::mem::ManuallyDrop::new(json(levels)), []),
        }
        .unwrap();
        port
    };
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(post)
        .unwrap()
        .join()
        .unwrap()
}

/// One probe, in a process of its own: exits 0 when the value was received whole.
fn probe(kind: &str, mode: &str, stack: usize, levels: usize) {
    let ch = MessageChannel::builder().capacity(1 << 30).build().unwrap();
    ch.port2.set_max_depth(usize::MAX);
    let port1 = post(ch.port1, kind, levels);
    let (kind, mode, port2) = (kind.to_owned(), mode.to_owned(), ch.port2);
    let received = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || match (kind.as_str(), mode.as_str()) {
            ("nest", "validate") => port2.recv_archived::<Nest, _>(|_| ()).is_ok(),
            ("list", "validate") => port2.recv_archived::<Node, _>(|_| ()).is_ok(),
            ("json", "validate") => port2.recv_archived::<Json, _>(|_| ()).is_ok(),
            ("nest", _) => port2.recv::<Nest>().map(std::mem::forget).is_ok(),
            ("list", _) => port2.recv::<Node>().map(std::mem::forget).is_ok(),
            _ => port2.recv::<Json>().map(std::mem::forget).is_ok(),
        })
        .unwrap()
        .join()
        .unwrap();
    drop(port1);
    std::process::exit(if received { 0 } else { 3 });
}

/// Runs a probe; false when the receiving thread overflowed its stack.
fn received_whole(kind: &str, mode: &str, stack: usize, levels: usize) -> bool {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["probe", kind, mode, &stack.to_string(), &levels.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_ne!(
        status.code(),
        Some(3),
        "{kind} at {levels} levels was refused"
    );
    status.success()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("probe") {
        let [kind, mode, stack, levels] = &args[2..6] else {
            unreachable!("probe KIND MODE STACK LEVELS")
        };
        return probe(kind, mode, stack.parse().unwrap(), levels.parse().unwrap());
    }
    println!("deepest value received whole (no depth limit), by receiving thread's stack:");
    for kind in KINDS {
        for mode in ["validate", "recv"] {
            for stack in [2usize << 20, 8 << 20] {
                // Invariant: `lo` is received whole, `hi` is not (or is out of reach).
                let (mut lo, mut hi) = (1usize, 4_000_000usize);
                while hi - lo > lo / 200 + 1 {
                    let mid = lo + (hi - lo) / 2;
                    if received_whole(kind, mode, stack, mid) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                println!(
                    "  {kind:4} {mode:8} {:>2} MiB stack: {lo:>9} levels, {:>4} bytes per level",
                    stack >> 20,
                    stack / lo
                );
            }
        }
    }
}
