//! Stable message names: two programs whose types have different paths (as two separately
//! built binaries would) agree on a message's type through the name both declare.

mod common;

use common::{as_child, spawn_test_child};
use shmport::MessageChannel;

mod sender_side {
    use shmport::rkyv::{Archive, Deserialize, Serialize};

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    pub struct Reading {
        pub sensor: u32,
        pub value: f64,
    }
}

mod receiver_side {
    use shmport::rkyv::{Archive, Deserialize, Serialize};

    /// The same layout as `sender_side::Reading`, under another path.
    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    pub struct Reading {
        pub sensor: u32,
        pub value: f64,
    }
}

const NAME: &str = "com.example.Reading/1";

#[test]
fn types_with_one_stable_name_and_layout_are_one_message_type_across_processes() {
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        shmport::declare_stable_name::<receiver_side::Reading>(NAME).unwrap();
        let got = port.recv::<receiver_side::Reading>().unwrap().data;
        assert_eq!(
            got,
            receiver_side::Reading {
                sensor: 3,
                value: 0.5
            }
        );
    });
    let child = spawn_test_child(
        "types_with_one_stable_name_and_layout_are_one_message_type_across_processes",
        ch.port2,
    );
    shmport::declare_stable_name::<sender_side::Reading>(NAME).unwrap();
    let reading = sender_side::Reading {
        sensor: 3,
        value: 0.5,
    };
    ch.port1.post_message(&reading, []).unwrap();
    assert!(child.wait().success());
}

#[test]
fn without_a_stable_name_types_of_different_paths_do_not_match() {
    #[derive(shmport::rkyv::Archive, shmport::rkyv::Serialize, shmport::rkyv::Deserialize)]
    struct Here(u64);
    #[derive(
        shmport::rkyv::Archive, shmport::rkyv::Serialize, shmport::rkyv::Deserialize, Debug,
    )]
    struct There(u64);
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&Here(1), []).unwrap();
    assert!(ch.port2.recv::<There>().unwrap_err().is_message_error());
}

#[test]
fn a_type_keeps_its_first_stable_name() {
    struct Named;
    shmport::declare_stable_name::<Named>("first").unwrap();
    shmport::declare_stable_name::<Named>("first").unwrap(); // the same again: fine
    assert!(matches!(
        shmport::declare_stable_name::<Named>("second"),
        Err(shmport::Error::StableName { name: "first", .. })
    ));
    assert!(shmport::declare_stable_name::<u8>("").is_err());
}

#[test]
fn the_stable_fingerprint_is_what_a_declared_type_carries() {
    #[derive(shmport::rkyv::Archive, shmport::rkyv::Serialize, shmport::rkyv::Deserialize)]
    struct Tagged(u32);
    let before = shmport::RawMessage::fingerprint_of::<Tagged>();
    shmport::declare_stable_name::<Tagged>("tagged/1").unwrap();
    let after = shmport::RawMessage::fingerprint_of::<Tagged>();
    assert_ne!(before, after);
    assert_eq!(after, shmport::stable_fingerprint::<Tagged>("tagged/1"));
}
