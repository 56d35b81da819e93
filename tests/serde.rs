//! The `serde` feature: serde types carried with postcard, type-checked like rkyv ones.
//! (`cargo test --release --features serde --test serde`)
#![cfg(feature = "serde")]

mod common;

use common::{as_child, spawn_test_child};
use serde::{Deserialize, Serialize};
use shmport::{ArrayBuffer, MessageChannel, MessageError, RecvError};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Circle { r: f64 },
    Poly(Vec<(i32, i32)>),
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Scene {
    name: String,
    shapes: Vec<Shape>,
    note: Option<String>,
}

fn scene(i: u32) -> Scene {
    Scene {
        name: format!("scene {i}"),
        shapes: vec![
            Shape::Circle { r: 1.5 },
            Shape::Poly(vec![(0, 0), (i as i32, 3)]),
        ],
        note: (i % 2 == 0).then(|| "even".to_owned()),
    }
}

#[test]
fn a_serde_message_round_trips_between_processes() {
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        while let Ok(ev) = port.recv_serde::<Scene>() {
            let mut s = ev.data;
            s.name.push_str(" (seen)");
            port.post_serde(&s, []).unwrap();
        }
    });
    let child = spawn_test_child("a_serde_message_round_trips_between_processes", ch.port2);
    for i in 0..100 {
        ch.port1.post_serde(&scene(i), []).unwrap();
        let back = ch.port1.recv_serde::<Scene>().unwrap().data;
        let mut want = scene(i);
        want.name.push_str(" (seen)");
        assert_eq!(back, want);
    }
    drop(ch.port1);
    assert!(child.wait().success());
}

#[test]
fn a_serde_message_received_as_another_serde_type_is_a_messageerror() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_serde(&scene(1), []).unwrap();
    ch.port1.post_serde(&scene(2), []).unwrap();
    assert!(matches!(
        ch.port2.recv_serde::<Vec<String>>(),
        Err(RecvError::MessageError(MessageError::TypeMismatch { .. }))
    ));
    assert_eq!(ch.port2.recv_serde::<Scene>().unwrap().data, scene(2));
}

#[test]
fn serde_and_rkyv_messages_of_one_type_never_pass_for_each_other() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_serde(&String::from("serde"), []).unwrap();
    ch.port1.post_message(&String::from("rkyv"), []).unwrap();
    assert!(ch.port2.recv::<String>().unwrap_err().is_message_error());
    assert!(
        ch.port2
            .recv_serde::<String>()
            .unwrap_err()
            .is_message_error()
    );
}

#[test]
fn a_serde_message_carries_a_transfer_list() {
    let ch = MessageChannel::new().unwrap();
    let mut buf = ArrayBuffer::new(1 << 20).unwrap();
    buf[12345] = 42;
    ch.port1.post_serde(&scene(3), [buf.into()]).unwrap();
    let mut ev = ch.port2.recv_serde::<Scene>().unwrap();
    assert_eq!(ev.data, scene(3));
    assert_eq!(ev.buffers.remove(0)[12345], 42);
}

#[test]
fn bytes_postcard_refuses_are_a_messageerror_and_the_port_goes_on() {
    let ch = MessageChannel::new().unwrap();
    // The right fingerprint on bytes that are no postcard `Scene`.
    let fp = shmport::serde_fingerprint_of::<Scene>();
    ch.port1.post_raw(&[0xff; 3], fp, []).unwrap();
    ch.port1.post_serde(&scene(4), []).unwrap();
    assert!(matches!(
        ch.port2.recv_serde::<Scene>(),
        Err(RecvError::MessageError(MessageError::Invalid(_)))
    ));
    assert_eq!(ch.port2.recv_serde::<Scene>().unwrap().data, scene(4));
}
