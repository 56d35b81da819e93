//! The `tracing` feature: what would happen silently is an event.
//! (`cargo test --release --features tracing --test tracing_events`)
#![cfg(feature = "tracing")]

mod common;

use std::sync::{Arc, Mutex};

use common::{as_child, spawn_test_child};
use shmport::MessageChannel;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Keeps the message of every `shmport` event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Collect {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.target() == "shmport"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = String::new();
        event.record(&mut Message(&mut text));
        self.0.lock().unwrap().push(text);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_killed_peer_process_is_reported_as_an_event() {
    as_child(common::post_one_then_park);
    let events = Collect::default();
    tracing::subscriber::with_default(events.clone(), || {
        let ch = MessageChannel::new().unwrap();
        let child = spawn_test_child("a_killed_peer_process_is_reported_as_an_event", ch.port2);
        assert_eq!(ch.port1.recv::<u8>().unwrap().data, 1);
        child.kill();
        assert!(ch.port1.recv::<u8>().unwrap_err().is_disconnected());
    });
    let got = events.0.lock().unwrap();
    assert!(got.iter().any(|m| m.contains("is gone")), "events: {got:?}");
}

/// The messages of the `shmport` events `body` caused.
fn events_of(body: impl FnOnce()) -> Vec<String> {
    let events = Collect::default();
    tracing::subscriber::with_default(events.clone(), body);
    events.0.lock().unwrap().clone()
}

#[test]
fn a_channel_poisoned_by_its_peer_is_reported_as_an_event() {
    as_child(|port| {
        let seg = common::map_inherited_segment();
        let (base, cap) = (seg.as_mut_ptr(), (seg.len() - 4096) / 2);
        let ring1 = 4096 + cap; // the ring this child writes and the parent reads
        let write = |off: usize, value: u64| {
            // SAFETY: every offset below is 8-aligned and inside the mapping (the first
            // record of ring 1 and ring 1's tail, docs/layout.md sections 3 and 5).
            unsafe { base.add(off).cast::<u64>().write_volatile(value) };
        };
        // A first record whose length no ring can hold: impossible framing.
        write(ring1 + 8, u64::from(u32::MAX - 7) | (2 << 32));
        write(ring1 + 16, 0);
        write(ring1, 1); // its mark, last
        write(512, 24); // ring 1's tail
        let _ = port.recv::<u8>(); // until the parent lets go
    });
    let got = events_of(|| {
        let ch = MessageChannel::new().unwrap();
        let _child = spawn_test_child(
            "a_channel_poisoned_by_its_peer_is_reported_as_an_event",
            ch.port2,
        );
        // The corrupt record is a messageerror; the poisoned port then says Disconnected.
        assert!(ch.port1.recv::<u8>().unwrap_err().is_message_error());
        assert!(ch.port1.recv::<u8>().unwrap_err().is_disconnected());
    });
    assert!(
        got.iter().any(|m| m.contains("poisoned")),
        "events: {got:?}"
    );
}

#[test]
fn raising_the_descriptor_limit_is_reported_as_an_event() {
    const NAME: &str = "raising_the_descriptor_limit_is_reported_as_an_event";
    common::isolated(NAME, || {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write one rlimit.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            if limit.rlim_max <= 64 {
                return; // nothing to raise to
            }
            limit.rlim_cur = 64;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
        // The first channel of this process raises the soft limit to the hard one.
        let got = events_of(|| drop(MessageChannel::new().unwrap()));
        assert!(
            got.iter()
                .any(|m| m.contains("raised this process's descriptor limit")),
            "events: {got:?}"
        );
    });
}
