//! Deeply nested messages: a peer cannot overflow the receiver's stack. A child process
//! writes archives nested 10^3 to 10^6 levels straight into its ring (rkyv could not even
//! serialize them on a normal stack); each is a `messageerror` for that message alone, and
//! the message after it arrives. Legitimately deep messages up to the limit are received
//! on a 2 MiB thread, and the limit is configurable.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{MessageChannel, MessageError, MessagePort, RecvError};

/// A tree of vectors: nesting depth is all it has. Archived, each node is an
/// `ArchivedVec`: a 32-bit relative offset to its children, then their count.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
struct Nest(#[rkyv(omit_bounds)] Vec<Nest>);

/// How deep the child's hostile archives nest.
const LEVELS: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Ring bytes per direction: the 10^6-level archive (8 MB) must fit in one record, and
/// all records in one lap.
const CAPACITY: usize = 32 << 20;
/// A receiving port's depth limit unless changed.
const DEFAULT_MAX_DEPTH: usize = 512;

/// `levels` nodes, each the only child of the one before.
fn nest(levels: usize) -> Nest {
    let mut n = Nest(Vec::new());
    for _ in 1..levels {
        n = Nest(vec![n]);
    }
    n
}

/// The well-formed message that follows the hostile one at index `i`: a root with `i + 1`
/// childless children.
fn marker(i: usize) -> Nest {
    Nest((0..=i).map(|_| Nest(Vec::new())).collect())
}

/// The archive of `nest(levels)`, built by hand (serializing it would recurse once per
/// level): the innermost node's empty vector first, then each parent pointing 8 bytes back.
fn chain_archive(levels: usize) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    for _ in 1..levels {
        out.extend_from_slice(&(-8i32).to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out
}

/// In a child started by [`common::spawn_test_child`]: maps the channel's segment and, as
/// the producer of ring 1 (child to parent), writes a record for each of [`LEVELS`] (an
/// archive nested that deep) followed by a record of its [`marker`]; publishes the ring's
/// tail, adopts the port (whose producer continues after those records), posts a final
/// `nest(1)`, and waits until the parent closes. Returns in the parent.
fn hostile_child() {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_none() {
        return;
    }
    let map = common::map_inherited_segment();
    let base = map.as_mut_ptr();
    let cap = (map.len() - 4096) / 2;
    let data = 4096 + cap; // ring 1's data area
    let tag = common::fingerprint::<Nest>();
    let mut pos = 0usize;
    let mut publish = |payload: &[u8]| {
        let size = 24 + payload.len().div_ceil(8) * 8;
        assert!(pos + size <= cap, "the records must fit in one lap");
        let at = data + pos;
        // SAFETY: `[at, at + size)` lies in ring 1's data area of our own mapping (checked
        // above), which only this process writes (it is ring 1's producer), and the parent
        // reads it only after the mark stored last.
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(at + 24), payload.len());
            base.add(at + 8)
                .cast::<u64>()
                .write(payload.len() as u64 | 2 << 32); // len, kind 2 (message)
            base.add(at + 16).cast::<u64>().write(tag);
            AtomicU64::from_ptr(base.add(at).cast()).store(pos as u64 + 1, Ordering::Release);
        }
        pos += size;
    };
    for (i, levels) in LEVELS.into_iter().enumerate() {
        publish(&chain_archive(levels));
        publish(&shmport::rkyv::to_bytes::<shmport::rkyv::rancor::Error>(&marker(i)).unwrap());
    }
    // SAFETY: ring 1's `tail` (offset 512), 8-aligned, inside the mapping; atomics only.
    unsafe { AtomicU64::from_ptr(base.add(512).cast()) }.store(pos as u64, Ordering::Release);
    let port = shmport::parent_port().unwrap();
    port.post_message(&nest(1), []).unwrap();
    let _ = port.recv::<u8>(); // until the parent closes
    std::process::exit(0);
}

/// What the parent must receive from [`hostile_child`], in order.
fn expected() -> Vec<Result<Nest, usize>> {
    let mut all = Vec::new();
    for i in 0..LEVELS.len() {
        all.push(Err(DEFAULT_MAX_DEPTH));
        all.push(Ok(marker(i)));
    }
    all.push(Ok(nest(1)));
    all
}

fn outcome(r: Result<Nest, MessageError>) -> Result<Nest, usize> {
    match r {
        Ok(n) => Ok(n),
        Err(MessageError::TooDeep { max_depth }) => Err(max_depth),
        Err(e) => panic!("expected TooDeep, got {e}"),
    }
}

#[test]
fn archives_nested_a_thousand_to_a_million_levels_are_message_errors_and_the_next_message_arrives()
{
    hostile_child();
    let name = "archives_nested_a_thousand_to_a_million_levels_are_message_errors_and_the_next_message_arrives";
    let ch = MessageChannel::builder()
        .capacity(CAPACITY)
        .build()
        .unwrap();
    let child = common::spawn_test_child(name, ch.port2);
    let mut got = Vec::new();
    for _ in 0..expected().len() {
        got.push(outcome(ch.port1.recv::<Nest>().map(|ev| ev.data).map_err(
            |e| match e {
                RecvError::MessageError(e) => e,
                e => panic!("the port stopped working: {e}"),
            },
        )));
    }
    assert_eq!(got, expected());
    drop(ch.port1);
    assert!(child.wait().success());
}

#[test]
fn an_on_message_handler_gets_a_message_error_for_each_deep_archive_and_every_message_after() {
    hostile_child();
    let name =
        "an_on_message_handler_gets_a_message_error_for_each_deep_archive_and_every_message_after";
    let ch = MessageChannel::builder()
        .capacity(CAPACITY)
        .build()
        .unwrap();
    let child = common::spawn_test_child(name, ch.port2);
    let (tx, rx) = mpsc::channel();
    let errors = tx.clone();
    let handler = ch
        .port1
        .on_message(
            move |ev: shmport::MessageEvent<Nest>| tx.send(Ok(ev.data)).unwrap(),
            move |e| errors.send(Err(e)).unwrap(),
        )
        .unwrap();
    let got: Vec<_> = (0..expected().len())
        .map(|_| outcome(rx.recv().unwrap()))
        .collect();
    assert_eq!(got, expected());
    assert!(!handler.is_finished(), "the dispatch thread is alive");
    drop(handler.stop().unwrap());
    assert!(child.wait().success());
}

/// Receives on a thread with a 2 MiB stack, the default for spawned threads.
fn recv_on_a_2_mib_thread(port: MessagePort) -> Result<Nest, RecvError> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || port.recv::<Nest>().map(|ev| ev.data))
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn a_message_as_deep_as_the_default_limit_is_received_on_a_2_mib_thread() {
    let ch = MessageChannel::new().unwrap();
    assert_eq!(ch.port2.max_depth(), DEFAULT_MAX_DEPTH);
    ch.port1.post_message(&nest(DEFAULT_MAX_DEPTH), []).unwrap();
    assert_eq!(
        recv_on_a_2_mib_thread(ch.port2).unwrap(),
        nest(DEFAULT_MAX_DEPTH)
    );
}

#[test]
fn a_message_one_level_deeper_than_the_limit_is_a_message_error() {
    let ch = MessageChannel::new().unwrap();
    ch.port1
        .post_message(&nest(DEFAULT_MAX_DEPTH + 1), [])
        .unwrap();
    ch.port1.post_message(&nest(2), []).unwrap();
    assert!(matches!(
        ch.port2.recv::<Nest>(),
        Err(RecvError::MessageError(MessageError::TooDeep {
            max_depth: DEFAULT_MAX_DEPTH
        }))
    ));
    assert_eq!(ch.port2.recv::<Nest>().unwrap().data, nest(2));
}

#[test]
fn the_depth_limit_is_set_per_channel_and_changed_per_port() {
    let ch = MessageChannel::builder().max_depth(2_000).build().unwrap();
    assert_eq!((ch.port1.max_depth(), ch.port2.max_depth()), (2_000, 2_000));
    ch.port1.post_message(&nest(2_000), []).unwrap();
    assert_eq!(ch.port2.recv::<Nest>().unwrap().data, nest(2_000));
    ch.port2.set_max_depth(10);
    ch.port1.post_message(&nest(11), []).unwrap();
    assert!(matches!(
        ch.port2.recv::<Nest>(),
        Err(RecvError::MessageError(MessageError::TooDeep {
            max_depth: 10
        }))
    ));
}
