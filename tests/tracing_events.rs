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
