//! Resource limits: running out gives a clear error, never a panic or an abort. Each test
//! lowers a limit in a process of its own (see `common::isolated`).

mod common;

use rustix::process::{Resource, Rlimit, setrlimit};
use shmport::{ArrayBuffer, Error, MessageChannel};

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
