//! Stable type names: two programs whose Rust type names differ (here: two modules of one
//! program) agree on a message type through the names exchanged in the handshake.

mod common;

use common::*;
use shmport::{MessagePort, RecvError};
use shmport_zenoh::{Bridge, BridgeConfig, StableType};

mod sender_build {
    use shmport::rkyv::{Archive, Deserialize, Serialize};

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    #[rkyv(crate = shmport::rkyv)]
    pub struct Job {
        pub id: u64,
        pub name: String,
    }

    impl shmport_zenoh::StableType for Job {
        const STABLE_NAME: &'static str = "test.Job/1";
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

    impl shmport_zenoh::StableType for Job {
        const STABLE_NAME: &'static str = "test.Job/1";
    }
}

/// A channel from a bridge configured by `send` to one configured by `recv`.
fn pair(
    test: &str,
    send: BridgeConfig,
    recv: BridgeConfig,
) -> (Bridge, Bridge, MessagePort, MessagePort) {
    let realm = realm(test);
    let (receiver, endpoint) = listening_bridge(&realm, recv);
    let listener = receiver.bind("jobs").unwrap();
    let sender = Bridge::open(send.realm(&realm).connect(&endpoint)).unwrap();
    let (tx, rx) = std::thread::scope(|s| {
        let connecting = s.spawn(|| sender.connect("jobs", PATIENCE).unwrap());
        let rx = listener.accept().unwrap();
        (connecting.join().unwrap(), rx)
    });
    (sender, receiver, tx, rx)
}

#[test]
fn a_stable_name_translates_the_fingerprint_between_builds() {
    let (_s, _r, tx, rx) = pair(
        "stable",
        BridgeConfig::new().message_type::<sender_build::Job>(),
        BridgeConfig::new().message_type::<receiver_build::Job>(),
    );
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
    let (_s, _r, tx, rx) = pair("unnamed", BridgeConfig::new(), BridgeConfig::new());
    assert_ne!(
        <sender_build::Job as StableType>::STABLE_NAME,
        std::any::type_name::<receiver_build::Job>()
    );
    tx.post_message(
        &sender_build::Job {
            id: 1,
            name: "x".into(),
        },
        [],
    )
    .unwrap();
    assert!(matches!(
        rx.recv::<receiver_build::Job>(),
        Err(RecvError::MessageError(_))
    ));
}
