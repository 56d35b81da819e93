//! The raw-message API: receiving and posting archives undecoded keeps every semantic of
//! `post_message` / `recv` (transfers, backpressure, errors), and the final receiver
//! still validates and type-checks.

mod common;

use shmport::{
    ArrayBuffer, MessageChannel, MessageError, PostErrorKind, RawMessage, RecvError, TryRecvError,
};

#[test]
fn a_raw_relay_forwards_a_message_with_its_transfer_list() {
    let (a, b) = (
        MessageChannel::new().unwrap(),
        MessageChannel::new().unwrap(),
    );
    let extra = MessageChannel::new().unwrap();
    let mut buf = ArrayBuffer::new(4096).unwrap();
    buf[4095] = 9;
    extra.port1.post_message(&5u8, []).unwrap();
    a.port1
        .post_message(
            &String::from("with things"),
            [buf.into(), extra.port2.into()],
        )
        .unwrap();
    let mut raw = a.port2.recv_raw().unwrap();
    assert_eq!((raw.ports.len(), raw.buffers.len()), (1, 1));
    let transfer = raw.take_transfer();
    b.port1
        .post_raw(&raw.archive, raw.fingerprint, transfer)
        .unwrap();
    let mut ev = b.port2.recv::<String>().unwrap();
    assert_eq!(ev.data, "with things");
    assert_eq!(ev.buffers.remove(0)[4095], 9);
    assert_eq!(ev.ports.remove(0).recv::<u8>().unwrap().data, 5);
}

#[test]
fn the_final_receiver_still_type_checks_a_raw_message() {
    let ch = MessageChannel::new().unwrap();
    let raw = RawMessage::encode(&7u64).unwrap();
    ch.port1
        .post_raw(&raw.archive, raw.fingerprint, [])
        .unwrap();
    assert!(matches!(
        ch.port2.recv::<String>(),
        Err(RecvError::MessageError(MessageError::TypeMismatch { .. }))
    ));
    ch.port1
        .post_raw(&raw.archive, raw.fingerprint, [])
        .unwrap();
    assert_eq!(ch.port2.recv::<u64>().unwrap().data, 7);
}

#[test]
fn a_raw_message_decodes_as_its_own_type_only() {
    let raw = RawMessage::encode(&String::from("x")).unwrap();
    assert_eq!(raw.fingerprint, RawMessage::fingerprint_of::<String>());
    assert_eq!(raw.decode::<String>().unwrap(), "x");
    assert!(raw.decode::<u32>().is_err());
}

#[test]
fn try_post_raw_says_full_when_the_ring_is_full() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let raw = RawMessage::encode(&[0u8; 256]).unwrap();
    let full = loop {
        if let Err(e) = ch.port1.try_post_raw(&raw.archive, raw.fingerprint, []) {
            break e;
        }
    };
    assert!(full.is_full());
    // Drained (the reader publishes its progress when it finds the ring empty): room again.
    while ch.port2.try_recv_raw().is_ok() {}
    ch.port1
        .try_post_raw(&raw.archive, raw.fingerprint, [])
        .unwrap();
}

#[test]
fn a_raw_message_larger_than_the_ring_travels_beside_it() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let raw = RawMessage::encode(&vec![3u8; 100_000]).unwrap();
    ch.port1
        .post_raw(&raw.archive, raw.fingerprint, [])
        .unwrap();
    let got = ch.port2.recv_raw().unwrap();
    assert_eq!(got.archive[..], raw.archive[..]);
    assert_eq!(got.decode::<Vec<u8>>().unwrap().len(), 100_000);
}

#[test]
fn posting_a_port_to_its_own_peer_raw_is_refused_and_handed_back() {
    let ch = MessageChannel::new().unwrap();
    let raw = RawMessage::encode(&1u8).unwrap();
    let err = ch
        .port1
        .post_raw(&raw.archive, raw.fingerprint, [ch.port2.into()])
        .unwrap_err();
    assert!(matches!(err.kind(), PostErrorKind::DataClone(_)));
    assert_eq!(err.into_inner().len(), 1);
}

#[test]
fn raw_receives_drain_then_report_disconnected() {
    let ch = MessageChannel::new().unwrap();
    assert!(matches!(ch.port2.try_recv_raw(), Err(TryRecvError::Empty)));
    ch.port1.post_message(&1u32, []).unwrap();
    drop(ch.port1);
    assert_eq!(ch.port2.try_recv_raw().unwrap().decode::<u32>().unwrap(), 1);
    assert!(matches!(
        ch.port2.try_recv_raw(),
        Err(TryRecvError::Disconnected)
    ));
    assert!(matches!(ch.port2.recv_raw(), Err(RecvError::Disconnected)));
}

/// `archive` cut into `n` pieces of about equal length (the last one may be empty).
fn pieces(archive: &[u8], n: usize) -> Vec<&[u8]> {
    let step = archive.len().div_ceil(n).max(1);
    let mut parts: Vec<&[u8]> = archive.chunks(step).collect();
    parts.push(&[]);
    parts
}

#[test]
fn an_archive_in_pieces_arrives_whole_in_the_ring_and_beside_it() {
    // 500 B fits a 4 KiB ring's record; 100,000 B travels beside the ring.
    for len in [0usize, 1, 500, 100_000] {
        let ch = MessageChannel::builder().capacity(4096).build().unwrap();
        let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let raw = RawMessage::encode(&value).unwrap();
        for n in [1, 2, 7] {
            ch.port1
                .post_raw_parts(&pieces(&raw.archive, n), raw.fingerprint, [])
                .unwrap();
            assert_eq!(
                ch.port2.recv::<Vec<u8>>().unwrap().data,
                value,
                "{len} B in {n}"
            );
        }
    }
}

#[test]
fn an_archive_in_pieces_moves_its_transfer_list() {
    let ch = MessageChannel::new().unwrap();
    let mut buf = ArrayBuffer::new(10).unwrap();
    buf[9] = 4;
    let raw = RawMessage::encode(&String::from("in pieces")).unwrap();
    ch.port1
        .post_raw_parts(&pieces(&raw.archive, 3), raw.fingerprint, [buf.into()])
        .unwrap();
    let mut ev = ch.port2.recv::<String>().unwrap();
    assert_eq!(ev.data, "in pieces");
    assert_eq!(ev.buffers.remove(0)[9], 4);
}

#[test]
fn try_post_raw_parts_says_full_and_hands_the_transfer_list_back() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let raw = RawMessage::encode(&[1u8; 256]).unwrap();
    let parts = pieces(&raw.archive, 2);
    let full = loop {
        if let Err(e) = ch.port1.try_post_raw_parts(&parts, raw.fingerprint, []) {
            break e;
        }
    };
    assert!(full.is_full());
    let err = loop {
        // With a buffer, the message goes as a transfer record: also `Full`, the buffer back.
        if let Err(e) = ch.port1.try_post_raw_parts(
            &parts,
            raw.fingerprint,
            [ArrayBuffer::new(8).unwrap().into()],
        ) {
            break e;
        }
    };
    assert!(err.is_full());
    assert_eq!(err.into_inner().len(), 1);
    let mut n = 0;
    while let Ok(ev) = ch.port2.try_recv::<[u8; 256]>() {
        assert_eq!(ev.data, [1u8; 256]);
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn pieces_adding_up_to_more_than_a_message_may_be_are_too_large() {
    let ch = MessageChannel::new().unwrap();
    // Zeroed by the allocator, never touched: 1 GiB of address space, no memory.
    let half = vec![0u8; 1 << 30];
    let buf = ArrayBuffer::new(8).unwrap();
    let err = ch
        .port1
        .try_post_raw_parts(&[&half, &half], 0, [buf.into()])
        .unwrap_err();
    assert!(matches!(err.kind(), PostErrorKind::TooLarge { .. }));
    assert_eq!(err.into_inner().len(), 1);
}

#[test]
fn large_raw_receives_hand_over_the_ports_copy_and_the_port_goes_on() {
    let ch = MessageChannel::new().unwrap();
    // In a record (20 KB), beside the ring (1 MB), inside a transfer record (20 KB with a
    // buffer: the archive is a part of the record), small (copied), then large again.
    let cases: [(usize, bool); 5] = [
        (20_000, false),
        (1 << 20, false),
        (20_000, true),
        (10, false),
        (1 << 20, true),
    ];
    for (len, with_buffer) in cases {
        let value: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let transfer: Vec<shmport::Transferable> = if with_buffer {
            vec![ArrayBuffer::new(3).unwrap().into()]
        } else {
            Vec::new()
        };
        ch.port1.post_message(&value, transfer).unwrap();
        let raw = ch.port2.recv_raw().unwrap();
        assert_eq!(raw.buffers.len(), usize::from(with_buffer));
        assert_eq!(raw.decode::<Vec<u8>>().unwrap(), value, "{len} B");
        // What was handed over is the caller's: a later receive does not touch it.
        ch.port1.post_message(&vec![9u8; len], []).unwrap();
        let again = ch.port2.try_recv_raw().unwrap();
        assert_eq!(raw.decode::<Vec<u8>>().unwrap(), value);
        assert_eq!(again.decode::<Vec<u8>>().unwrap(), vec![9u8; len]);
    }
}

#[test]
fn a_large_archive_received_in_place_comes_in_its_body_byte_for_byte() {
    let ch = MessageChannel::new().unwrap();
    let value: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ch.port1.post_message(&value, []).unwrap();
    ch.port1.post_message(&value, []).unwrap();
    let copied = ch.port2.try_recv_raw().unwrap();
    let in_place = ch.port2.try_recv_raw_in_place().unwrap();
    assert!(in_place.archive.is_empty());
    assert_eq!(in_place.body.as_deref(), Some(&copied.archive[..]));
    assert_eq!(in_place.bytes(), copied.bytes());
    assert_eq!(in_place.fingerprint, copied.fingerprint);
    assert_eq!(in_place.decode::<Vec<u8>>().unwrap(), value);
}

#[test]
fn an_archive_that_fits_a_record_received_in_place_comes_in_the_archive() {
    let ch = MessageChannel::new().unwrap();
    for len in [10, 20_000] {
        ch.port1.post_message(&vec![4u8; len], []).unwrap();
        let raw = ch.port2.try_recv_raw_in_place().unwrap();
        assert!(raw.body.is_none(), "{len} B");
        assert_eq!(raw.decode::<Vec<u8>>().unwrap(), vec![4u8; len]);
    }
    // Inside a transfer record, with its buffer beside it.
    let buffer = ArrayBuffer::new(3).unwrap();
    ch.port1.post_message(&7u32, [buffer.into()]).unwrap();
    let raw = ch.port2.try_recv_raw_in_place().unwrap();
    assert!(raw.body.is_none());
    assert_eq!(raw.buffers.len(), 1);
    assert_eq!(raw.decode::<u32>().unwrap(), 7);
}

#[test]
fn a_typed_receive_after_one_in_place_decodes_its_large_message() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&vec![1u8; 1 << 20], []).unwrap();
    ch.port1.post_message(&vec![2u8; 1 << 20], []).unwrap();
    assert!(ch.port2.try_recv_raw_in_place().unwrap().body.is_some());
    // Were the hand-over still asked for, this body would not be copied, and the
    // receive would decode nothing.
    assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, vec![2u8; 1 << 20]);
}

#[test]
fn an_in_place_receive_that_finds_nothing_leaves_the_next_receive_copying() {
    let ch = MessageChannel::new().unwrap();
    assert!(matches!(
        ch.port2.try_recv_raw_in_place(),
        Err(TryRecvError::Empty)
    ));
    ch.port1.post_message(&vec![3u8; 1 << 20], []).unwrap();
    assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, vec![3u8; 1 << 20]);
}

#[test]
fn bodies_received_in_place_and_dropped_go_back_to_their_pool() {
    common::isolated(
        "bodies_received_in_place_and_dropped_go_back_to_their_pool",
        || {
            let ch = MessageChannel::new().unwrap();
            let round = || {
                ch.port1.post_message(&vec![6u8; 1 << 20], []).unwrap();
                let raw = ch.port2.try_recv_raw_in_place().unwrap();
                assert_eq!(raw.body.as_ref().map(|b| b.len() >= 1 << 20), Some(true));
            };
            for _ in 0..20 {
                round();
            }
            let mappings = common::shmport_mappings();
            for _ in 0..300 {
                round();
            }
            // 300 MiB of bodies held for ever would have taken a dozen heaps more.
            assert_eq!(common::shmport_mappings(), mappings);
        },
    );
}

#[test]
fn recv_raw_in_place_hands_over_the_body_of_a_message_posted_from_another_thread() {
    let MessageChannel { port1, port2, .. } = MessageChannel::new().unwrap();
    let sender = std::thread::spawn(move || {
        port1.post_message(&vec![8u8; 1 << 20], []).unwrap();
        port1
    });
    let raw = port2.recv_raw_in_place().unwrap();
    assert!(raw.archive.is_empty());
    assert_eq!(raw.decode::<Vec<u8>>().unwrap(), vec![8u8; 1 << 20]);
    sender.join().unwrap();
}

#[test]
fn a_small_message_received_in_place_after_a_large_one_decodes() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&vec![8u8; 1 << 20], []).unwrap();
    ch.port1.post_message(&vec![9u8; 100], []).unwrap();
    ch.port2.recv_raw_in_place().unwrap();
    // Posted right after a large one, it may travel outside the ring as well (the sender
    // sizes a post by the last one): either way it decodes.
    let small = ch.port2.recv_raw_in_place().unwrap();
    assert_eq!(small.decode::<Vec<u8>>().unwrap(), vec![9u8; 100]);
}
