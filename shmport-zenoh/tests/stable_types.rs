//! Stable type identity across builds: two programs whose Rust type names differ (here:
//! two modules of one program) agree on a message type when both declare its stable name
//! in the core (`shmport::declare_stable_name`); the bridge carries the fingerprint
//! unchanged.

mod common;

use common::*;
use shmport::{MessagePort, RecvError};
use shmport_zenoh::{Bridge, BridgeConfig};

mod sender_build {
    use shmport::rkyv::{Archive, Deserialize, Serialize};

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    #[rkyv(crate = shmport::rkyv)]
    pub struct Job {
        pub id: u64,
        pub name: String,
    }

    /// Never given a stable name (the declarations are process-wide: each test has its
    /// own types).
    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    #[rkyv(crate = shmport::rkyv)]
    pub struct Unnamed {
        pub id: u64,
    }
}

mod receiver_build {
    use shmport::rkyv::{Archive, Deserialize, Serialize};

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    #[rkyv(crate = shmport::rkyv)]
    pub struct Job {
        pub id: u64,
        pub name: String,
    }

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    #[rkyv(crate = shmport::rkyv)]
    pub struct Unnamed {
        pub id: u64,
    }
}

/// A channel from one bridge to another.
fn pair(test: &str) -> (Bridge, Bridge, MessagePort, MessagePort) {
    let realm = realm(test);
    let (receiver, endpoint) = listening_bridge(&realm, BridgeConfig::new());
    let listener = receiver.bind("jobs").unwrap();
    let sender = Bridge::open(BridgeConfig::new().realm(&realm).connect(&endpoint)).unwrap();
    let (tx, rx) = std::thread::scope(|s| {
        let connecting = s.spawn(|| sender.connect("jobs", PATIENCE).unwrap());
        let rx = listener.accept().unwrap();
        (connecting.join().unwrap(), rx)
    });
    (sender, receiver, tx, rx)
}

#[test]
fn a_stable_name_declared_in_the_core_carries_the_type_across_builds() {
    shmport::declare_stable_name::<sender_build::Job>("test.Job/1").unwrap();
    shmport::declare_stable_name::<receiver_build::Job>("test.Job/1").unwrap();
    let (_s, _r, tx, rx) = pair("stable");
    let job = sender_build::Job {
        id: 7,
        name: "resize".into(),
    };
    tx.post_message(&job, []).unwrap();
    let got = rx.recv::<receiver_build::Job>().unwrap().data;
    assert_eq!((got.id, got.name.as_str()), (7, "resize"));
}

#[test]
fn without_stable_names_a_differently_named_type_is_a_message_error() {
    let (_s, _r, tx, rx) = pair("unnamed");
    tx.post_message(&sender_build::Unnamed { id: 1 }, [])
        .unwrap();
    assert!(matches!(
        rx.recv::<receiver_build::Unnamed>(),
        Err(RecvError::MessageError(_))
    ));
}
