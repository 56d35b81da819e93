//! Async waits beyond one port: `PortSet::wait_async` / `recv_async`, and
//! `Endpoint::accept_async` / `connect_async` / `try_accept`.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use common::{as_child, spawn_test_child};
use shmport::{Endpoint, MessageChannel, PortSet};

use common::{block_on, tokio_rt as rt, unpark_waker as waker};

#[test]
fn a_port_set_wait_is_pending_until_a_member_gets_a_message() {
    let mut set = PortSet::new().unwrap();
    let ch = MessageChannel::new().unwrap();
    let key = set.insert(ch.port2).unwrap();
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut wait = pin!(set.wait_async());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        let sender = std::thread::spawn(move || {
            ch.port1.post_message(&5u8, []).unwrap();
            ch.port1
        });
        let got = loop {
            if let Poll::Ready(r) = wait.as_mut().poll(&mut cx) {
                break r.unwrap();
            }
            std::thread::park();
        };
        assert_eq!(got, key);
        drop(sender.join().unwrap());
    }
    assert_eq!(set.get(key).unwrap().try_recv::<u8>().unwrap().data, 5);
}

#[test]
fn a_port_set_receives_from_many_processes_without_blocking_the_runtime() {
    as_child(|port| {
        for i in 0..200u32 {
            port.post_message(&i, []).unwrap();
        }
    });
    let mut set = PortSet::new().unwrap();
    let mut children = Vec::new();
    for _ in 0..3 {
        let ch = MessageChannel::new().unwrap();
        set.insert(ch.port1).unwrap();
        children.push(spawn_test_child(
            "a_port_set_receives_from_many_processes_without_blocking_the_runtime",
            ch.port2,
        ));
    }
    let total = rt().block_on(async move {
        let mut total = 0u64;
        let mut gone = 0;
        while gone < 3 {
            let (key, ev) = set.recv_async::<u32>().await.unwrap();
            match ev {
                Ok(ev) => total += u64::from(ev.data),
                Err(e) if e.is_disconnected() => {
                    set.remove(key);
                    gone += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        total
    });
    assert_eq!(total, 3 * (0..200u64).sum::<u64>());
    for c in children {
        assert!(c.wait().success());
    }
}

#[test]
fn a_cancelled_port_set_wait_loses_no_message() {
    let mut set = PortSet::new().unwrap();
    let ch = MessageChannel::new().unwrap();
    let key = set.insert(ch.port2).unwrap();
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..100 {
        let mut wait = pin!(set.wait_async());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
    }
    ch.port1.post_message(&1u8, []).unwrap();
    let (got, ev) = block_on(set.recv_async::<u8>()).unwrap();
    assert_eq!((got, ev.unwrap().data), (key, 1));
}

#[test]
fn try_accept_returns_none_until_a_client_connects() {
    let name = format!("try-accept-{}", std::process::id());
    let endpoint = Endpoint::bind(&name).unwrap();
    assert!(endpoint.try_accept().unwrap().is_none());
    let client = std::thread::spawn(move || Endpoint::connect(&name).unwrap());
    let server = loop {
        if let Some(port) = endpoint.try_accept().unwrap() {
            break port;
        }
        rustix_wait(&endpoint);
    };
    let client = client.join().unwrap();
    client.post_message(&3u8, []).unwrap();
    assert_eq!(server.recv::<u8>().unwrap().data, 3);
}

/// Waits for the endpoint's descriptor (`AsFd`) to be readable.
fn rustix_wait(endpoint: &Endpoint) {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(endpoint, PollFlags::IN)];
    poll(&mut fds, None).unwrap();
}

#[test]
fn async_accept_and_connect_make_a_working_channel() {
    let name = format!("async-accept-{}", std::process::id());
    let endpoint = Endpoint::bind(&name).unwrap();
    let rt = rt();
    let server = rt.spawn(async move {
        let mut port = endpoint.accept_async().await.unwrap();
        let got = port.recv_async::<String>().await.unwrap().data;
        port.post_message(&format!("{got}!"), []).unwrap();
        port
    });
    let answer = rt.block_on(async {
        let mut port = Endpoint::connect_async(&name).await.unwrap();
        port.post_message(&String::from("hi"), []).unwrap();
        port.recv_async::<String>().await.unwrap().data
    });
    assert_eq!(answer, "hi!");
    drop(rt.block_on(server).unwrap());
}

#[test]
fn an_async_connect_to_a_name_nobody_serves_fails_at_once() {
    let err = block_on(Endpoint::connect_async("nobody-serves-this-name")).unwrap_err();
    assert!(matches!(err, shmport::Error::NoSuchEndpoint(_)));
}
