//! The raw-message API: receiving and posting archives undecoded keeps every semantic of
//! `post_message` / `recv` (transfers, backpressure, errors), and the final receiver
//! still validates and type-checks.

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
