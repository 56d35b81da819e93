//! Resource limits: running out gives a clear error, never a panic or an abort. Each test
//! that lowers a limit does so in a process of its own (`common::isolated`, or a child).

mod common;

use rustix::process::{Resource, Rlimit, setrlimit};
use shmport::{ArrayBuffer, Error, MessageChannel, MessageError, RecvError};

fn limit(resource: Resource, value: u64) {
    setrlimit(
        resource,
        Rlimit {
            current: Some(value),
            maximum: Some(value),
        },
    )
    .unwrap();
}

#[test]
fn running_out_of_descriptors_is_an_error() {
    common::isolated("running_out_of_descriptors_is_an_error", || {
        limit(Resource::Nofile, 64);
        let mut channels = Vec::new();
        let err = loop {
            match MessageChannel::new() {
                Ok(ch) => channels.push(ch),
                Err(e) => break e,
            }
            assert!(channels.len() < 64, "the limit was not hit");
        };
        assert!(matches!(err, Error::Os { .. }), "{err}");
        // What exists keeps working.
        channels[0].port1.post_message(&1u8, []).unwrap();
        assert_eq!(channels[0].port2.recv::<u8>().unwrap().data, 1);
    });
}

#[test]
fn a_transfer_that_needs_descriptors_past_the_limit_fails_and_hands_everything_back() {
    common::isolated(
        "a_transfer_that_needs_descriptors_past_the_limit_fails_and_hands_everything_back",
        || {
            limit(Resource::Nofile, 64);
            let carrier = MessageChannel::new().unwrap();
            let mut channels = Vec::new();
            while let Ok(ch) = MessageChannel::new() {
                channels.push(ch);
            }
            // Moving a port needs its socket pair: there is no descriptor left for it.
            let moving = channels.pop().unwrap();
            drop(channels.pop()); // room for the carrier's own socket pair, not for more
            let err = carrier
                .port1
                .post_message(&0u8, [moving.port2.into()])
                .unwrap_err();
            assert!(matches!(err.kind(), shmport::PostErrorKind::Os(_)), "{err}");
            assert_eq!(err.into_inner().len(), 1);
        },
    );
}

#[test]
fn running_out_of_address_space_is_an_error() {
    common::isolated("running_out_of_address_space_is_an_error", || {
        limit(Resource::As, 2 << 30);
        let err = ArrayBuffer::new(3 << 30).unwrap_err();
        assert!(matches!(err, Error::Os { .. }), "{err}");
        let err = MessageChannel::builder()
            .capacity(1 << 30)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Os { .. }), "{err}");
        // Small allocations still work.
        assert_eq!(ArrayBuffer::new(4096).unwrap().len(), 4096);
    });
}

#[test]
fn an_impossible_buffer_size_is_reported_by_the_call_that_refused_it() {
    let err = ArrayBuffer::new(usize::MAX).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Os {
                op: "ftruncate",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_transfer_arriving_at_the_descriptor_limit_is_a_message_error_and_the_next_one_works() {
    common::as_child(|port| {
        limit(Resource::Nofile, common::open_fds() as u64 + 16);
        let mut filler = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            filler.push(f);
        }
        port.post_message(&1u8, []).unwrap(); // no descriptor free
        match port.recv::<u8>() {
            Err(RecvError::MessageError(MessageError::Transfer(_))) => {}
            other => panic!("expected a transfer error, got {other:?}"),
        }
        drop(filler);
        port.post_message(&2u8, []).unwrap(); // descriptors free again
        let mut ev = port.recv::<u8>().unwrap();
        assert_eq!((ev.data, ev.ports.len()), (3, 1));
        let moved = ev.ports.pop().unwrap();
        assert_eq!(moved.recv::<u8>().unwrap().data, 4);
        let _ = port.recv::<u8>(); // until the parent closes
    });
    let name =
        "a_transfer_arriving_at_the_descriptor_limit_is_a_message_error_and_the_next_one_works";
    let ch = MessageChannel::new().unwrap();
    let child = common::spawn_test_child(name, ch.port2);
    assert_eq!(ch.port1.recv::<u8>().unwrap().data, 1);
    let lost = MessageChannel::new().unwrap();
    ch.port1.post_message(&0u8, [lost.port2.into()]).unwrap();
    assert_eq!(ch.port1.recv::<u8>().unwrap().data, 2);
    // The objects of the cut-off transfer are gone: the moved port's peer is alone.
    assert!(matches!(
        lost.port1.recv::<u8>(),
        Err(RecvError::Disconnected)
    ));
    let kept = MessageChannel::new().unwrap();
    kept.port1.post_message(&4u8, []).unwrap();
    ch.port1.post_message(&3u8, [kept.port2.into()]).unwrap();
    drop(ch.port1);
    assert!(child.wait().success());
}
