//! Named endpoints: channels between processes that were not spawned together.

mod common;

use std::process::{Command, Stdio};

use common::{as_child, spawn_test_child};
use shmport::{Endpoint, Error, MessageChannel};

/// A name unique to this test run, so parallel tests and CI runs never meet.
fn unique(tag: &str) -> String {
    format!("test-{}-{tag}", std::process::id())
}

const CONNECT_TO: &str = "SHMPORT_TEST_CONNECT_TO";

#[test]
fn a_process_started_separately_connects_by_name_and_talks() {
    if let Ok(name) = std::env::var(CONNECT_TO) {
        // Started with a plain Command: no port was handed to us.
        let port = Endpoint::connect(&name).unwrap();
        port.post_message(&String::from("hello, server"), [])
            .unwrap();
        let reply = port.recv::<String>().unwrap().data;
        std::process::exit(if reply == "hello, client" { 0 } else { 1 });
    }
    let name = unique("talk");
    let server = Endpoint::bind(&name).unwrap();
    let mut client = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_process_started_separately_connects_by_name_and_talks",
            "--exact",
        ])
        .env(CONNECT_TO, &name)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let port = server.accept().unwrap();
    assert_eq!(port.recv::<String>().unwrap().data, "hello, server");
    port.post_message(&String::from("hello, client"), [])
        .unwrap();
    assert!(client.wait().unwrap().success());
}

#[test]
fn each_client_gets_its_own_channel() {
    let name = unique("many");
    let server = Endpoint::bind(&name).unwrap();
    let clients: Vec<_> = (0..4u32)
        .map(|i| {
            let name = name.clone();
            std::thread::spawn(move || {
                let port = Endpoint::connect(&name).unwrap();
                port.post_message(&i, []).unwrap();
                port.recv::<u32>().unwrap().data
            })
        })
        .collect();
    for _ in 0..4 {
        let port = server.accept().unwrap();
        let i = port.recv::<u32>().unwrap().data;
        port.post_message(&(i * 10), []).unwrap();
    }
    let mut got: Vec<u32> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, vec![0, 10, 20, 30]);
}

#[test]
fn binding_a_name_already_served_is_an_error() {
    let name = unique("taken");
    let _server = Endpoint::bind(&name).unwrap();
    assert!(matches!(Endpoint::bind(&name), Err(Error::NameInUse(n)) if n == name));
}

#[test]
fn connecting_to_a_name_nobody_serves_is_a_clear_error() {
    let name = unique("nobody");
    let err = Endpoint::connect(&name).unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchEndpoint(n) if *n == name),
        "{err}"
    );
    assert!(err.to_string().contains(&name));
}

#[test]
fn malformed_names_are_errors() {
    let long = "x".repeat(shmport::MAX_ENDPOINT_NAME + 1);
    for bad in ["", "a/b", "with space", "nul\0byte", "é", long.as_str()] {
        assert!(
            matches!(Endpoint::bind(bad), Err(Error::InvalidName(_))),
            "{bad:?}"
        );
        assert!(
            matches!(Endpoint::connect(bad), Err(Error::InvalidName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn dropping_an_endpoint_frees_its_name() {
    let name = unique("again");
    drop(Endpoint::bind(&name).unwrap());
    Endpoint::bind(&name).unwrap();
}

#[test]
fn a_name_left_by_a_killed_server_can_be_bound_again() {
    as_child(|port| {
        let name = port.recv::<String>().unwrap().data;
        let _server = Endpoint::bind(&name).unwrap();
        port.post_message(&true, []).unwrap();
        let _ = port.recv::<u8>(); // killed while serving
    });
    let name = unique("stale");
    let ch = MessageChannel::new().unwrap();
    let child = spawn_test_child(
        "a_name_left_by_a_killed_server_can_be_bound_again",
        ch.port2,
    );
    ch.port1.post_message(&name, []).unwrap();
    assert!(ch.port1.recv::<bool>().unwrap().data);
    assert!(matches!(Endpoint::bind(&name), Err(Error::NameInUse(_))));
    child.kill();
    Endpoint::bind(&name).unwrap();
}
