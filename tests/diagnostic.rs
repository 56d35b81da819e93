//! The `shmport_ls` example's scanner, run against this process.

#[allow(dead_code)]
#[path = "../examples/shmport_ls/scan.rs"]
mod scan;

use shmport::{ArrayBuffer, Endpoint, MessageChannel};

#[test]
fn a_bound_endpoint_is_listed_with_this_process_serving_it() {
    let name = format!("diag-{}", std::process::id());
    let _endpoint = Endpoint::bind(&name).unwrap();
    let listed = scan::listeners(scan::effective_uid()).unwrap();
    let found = listed
        .iter()
        .find(|l| l.kind == "Endpoint" && l.name == name)
        .expect("the endpoint is listed");
    assert!(found.pids.contains(&std::process::id()));
}

#[test]
fn a_process_holding_a_channel_and_a_pooled_buffer_shows_both() {
    let _ch = MessageChannel::new().unwrap();
    let _buf = ArrayBuffer::new(1 << 20).unwrap();
    let held = scan::holdings(std::process::id()).unwrap();
    assert!(
        held.get("channel").is_some_and(|h| h.mapped >= 1),
        "{held:?}"
    );
    assert!(
        held.get("heap")
            .is_some_and(|h| h.mapped >= 1 && h.mapped_bytes >= 1 << 20),
        "{held:?}"
    );
}

#[test]
fn an_open_broadcast_channel_is_listed_by_its_name() {
    let name = format!("diag-bc-{}", std::process::id());
    let _bc = shmport::BroadcastChannel::new(&name).unwrap();
    let listed = scan::listeners(scan::effective_uid()).unwrap();
    assert!(
        listed
            .iter()
            .any(|l| l.kind == "BroadcastChannel" && l.name == name),
        "{listed:?}"
    );
}

#[test]
fn every_member_process_of_a_broadcast_channel_is_listed() {
    let name = format!("diag-members-{}", std::process::id());
    let _a = shmport::BroadcastChannel::new(&name).unwrap();
    let _b = shmport::BroadcastChannel::new(&name).unwrap();
    let listed = scan::listeners(scan::effective_uid()).unwrap();
    let rows: Vec<_> = listed
        .iter()
        .filter(|l| l.kind == "BroadcastChannel" && l.name == name)
        .collect();
    assert_eq!(rows.len(), 1, "one line per name: {listed:?}");
    assert_eq!(rows[0].pids, [std::process::id()]);
}
