//! Messages past the wire format's limit: relative pointers are 32-bit, so an archive may
//! not exceed `MessagePort::MAX_MESSAGE_LEN` (2 GiB minus 64 KiB). A post over it fails with
//! `PostErrorKind::TooLarge`, hands everything back, never panics, and the port works on.

mod common;

use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{ArrayBuffer, MessageChannel, MessagePort, PostErrorKind};

fn is_too_large(kind: &PostErrorKind) -> bool {
    matches!(kind, PostErrorKind::TooLarge { max } if *max == MessagePort::MAX_MESSAGE_LEN)
}

#[test]
fn a_message_of_2_gib_and_1_mib_is_refused_and_the_next_one_reaches_another_process() {
    common::as_child(|port| {
        let next = port.recv::<u64>().unwrap().data;
        port.post_message(&next, []).unwrap(); // echo
        let _ = port.recv::<u8>(); // until the parent closes
    });
    let name = "a_message_of_2_gib_and_1_mib_is_refused_and_the_next_one_reaches_another_process";
    let ch = MessageChannel::new().unwrap();
    let child = common::spawn_test_child(name, ch.port2);
    // Zero pages from the allocator: the value costs address space, not memory.
    let huge = vec![0u8; (2 << 30) + (1 << 20)];
    let err = ch.port1.post_message(&huge, []).unwrap_err();
    assert!(is_too_large(err.kind()), "{err}");
    ch.port1.post_message(&7u64, []).unwrap();
    assert_eq!(ch.port1.recv::<u64>().unwrap().data, 7);
    drop(ch.port1);
    assert!(child.wait().success());
}

#[test]
fn a_refused_oversized_message_hands_its_transfer_list_back() {
    let ch = MessageChannel::new().unwrap();
    let mut buf = ArrayBuffer::new(16).unwrap();
    buf[0] = 42;
    let huge = vec![0u8; 2 << 30];
    let err = ch.port1.post_message(&huge, [buf.into()]).unwrap_err();
    assert!(is_too_large(err.kind()), "{err}");
    let mut back = err.into_inner();
    let shmport::Transferable::Buffer(buf) = back.pop().unwrap() else {
        panic!("the buffer comes back");
    };
    assert_eq!(buf[0], 42);
    ch.port1.post_message(&1u8, [buf.into()]).unwrap();
    assert_eq!(ch.port2.recv::<u8>().unwrap().buffers[0][0], 42);
}

#[test]
fn a_message_whose_parts_add_up_past_the_limit_is_refused_and_the_port_works_on() {
    let ch = MessageChannel::new().unwrap();
    // 2,049 vectors of 1 MiB: each part is small, so the archive grows past the limit
    // gradually, as rkyv serializes it.
    let parts: Vec<Vec<u8>> = (0..2_049).map(|_| vec![0u8; 1 << 20]).collect();
    let err = ch.port1.post_message(&parts, []).unwrap_err();
    assert!(is_too_large(err.kind()), "{err}");
    drop(parts);
    ch.port1
        .post_message(&vec![vec![1u8; 100_000]; 3], [])
        .unwrap();
    assert_eq!(
        ch.port2.recv::<Vec<Vec<u8>>>().unwrap().data,
        vec![vec![1u8; 100_000]; 3]
    );
}

/// An archived struct that holds a pointer 128 KiB into itself: the check on the bytes
/// written passes (the last byte before it lies under the limit), but the offset rkyv then
/// computes for that pointer does not fit in 32 bits.
#[derive(Archive, Serialize, Deserialize)]
struct Padded {
    pad: [u8; 128 << 10],
    tail: Vec<u8>,
}

#[test]
fn a_type_that_gets_past_the_size_check_is_refused_by_the_last_resort_guard() {
    let ch = MessageChannel::new().unwrap();
    let value = Box::new(Padded {
        pad: [0; 128 << 10],
        tail: vec![0u8; MessagePort::MAX_MESSAGE_LEN - (32 << 10)],
    });
    // On a thread with a main thread's stack: rkyv resolves `Padded` on the stack
    // (128 KiB). Its panic, caught inside shmport, is still printed by the panic hook.
    let port1 = ch.port1;
    let (port1, value) = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let err = port1.post_message(&*value, []).unwrap_err();
            assert!(is_too_large(err.kind()), "{err}");
            (port1, value)
        })
        .unwrap()
        .join()
        .unwrap();
    drop(value);
    port1.post_message(&5u16, []).unwrap();
    assert_eq!(ch.port2.recv::<u16>().unwrap().data, 5);
}
