//! A port's and a set's descriptors inside event loops of the user's own: `poll`, and
//! tokio's `AsyncFd`. Readable means "receive now, until `Empty`".

mod common;

use std::os::fd::AsFd;

use common::{as_child, spawn_test_child};
use rustix::event::{PollFd, PollFlags, poll};
use shmport::{MessageChannel, PortSet, TryRecvError};

fn readable(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).unwrap() == 1
}

fn wait_readable(fd: impl AsFd) {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    poll(&mut fds, None).unwrap();
}

#[test]
fn a_port_descriptor_becomes_readable_at_the_post_after_an_empty_receive() {
    let ch = MessageChannel::new().unwrap();
    let port = &ch.port2;
    let _ = port.readiness_fd().unwrap();
    assert!(matches!(port.try_recv::<u8>(), Err(TryRecvError::Empty)));
    assert!(!readable(port), "nothing posted yet");
    ch.port1.post_message(&1u8, []).unwrap();
    assert!(readable(port));
    assert_eq!(port.try_recv::<u8>().unwrap().data, 1);
    assert!(matches!(port.try_recv::<u8>(), Err(TryRecvError::Empty)));
    assert!(!readable(port), "the empty receive consumed the doorbell");
}

#[test]
fn a_port_descriptor_becomes_readable_when_the_peer_closes() {
    let ch = MessageChannel::new().unwrap();
    let port = &ch.port2;
    let _ = port.readiness_fd().unwrap();
    assert!(port.try_recv::<u8>().unwrap_err().is_empty());
    drop(ch.port1);
    assert!(readable(port));
    assert!(port.try_recv::<u8>().unwrap_err().is_disconnected());
}

#[test]
fn a_port_descriptor_in_a_poll_loop_delivers_every_message_from_another_process() {
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        for i in 0..10_000u32 {
            port.post_message(&i, []).unwrap();
        }
    });
    let child = spawn_test_child(
        "a_port_descriptor_in_a_poll_loop_delivers_every_message_from_another_process",
        ch.port2,
    );
    let port = ch.port1;
    let _ = port.readiness_fd().unwrap(); // watched from here on
    let mut next = 0u32;
    loop {
        match port.try_recv::<u32>() {
            Ok(ev) => {
                assert_eq!(ev.data, next);
                next += 1;
            }
            Err(TryRecvError::Empty) => wait_readable(&port),
            Err(TryRecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(next, 10_000);
    assert!(child.wait().success());
}

#[test]
fn a_port_set_descriptor_becomes_readable_when_any_member_gets_a_message() {
    let mut set = PortSet::new().unwrap();
    let mut senders = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..4 {
        let ch = MessageChannel::new().unwrap();
        keys.push(set.insert(ch.port2).unwrap());
        senders.push(ch.port1);
    }
    assert_eq!(set.try_wait().unwrap(), None);
    assert!(!readable(&set));
    senders[3].post_message(&3u8, []).unwrap();
    assert!(readable(&set));
    assert_eq!(set.try_wait().unwrap(), Some(keys[3]));
    assert_eq!(set.get(keys[3]).unwrap().try_recv::<u8>().unwrap().data, 3);
    assert_eq!(set.try_wait().unwrap(), None);
    assert!(!readable(&set), "every member armed again, nothing new");
}

#[test]
fn a_port_owned_by_tokio_async_fd_receives_every_message() {
    let ch = MessageChannel::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..10_000u32 {
            ch.port1.post_message(&i, []).unwrap();
        }
    });
    let port = ch.port2;
    let got = rt.block_on(async move {
        // SAFETY: the port keeps its readiness descriptor open, unchanged, for as long as
        // it lives, and the `AsyncFd` owns the port.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(port, tokio::io::Interest::READABLE)
        }
        .unwrap();
        let mut next = 0u32;
        loop {
            match afd.get_ref().try_recv::<u32>() {
                Ok(ev) => {
                    assert_eq!(ev.data, next);
                    next += 1;
                }
                // Armed by the empty receive: wait for the next doorbell.
                Err(TryRecvError::Empty) => afd.readable().await.unwrap().clear_ready(),
                Err(TryRecvError::Disconnected) => return next,
                Err(e) => panic!("{e}"),
            }
        }
    });
    sender.join().unwrap();
    assert_eq!(got, 10_000);
}
