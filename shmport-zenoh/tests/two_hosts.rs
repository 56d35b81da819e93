//! The bridge between two real processes on loopback: the parent listens, the remote
//! child (this test binary again) connects.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmport::{ArrayBuffer, MessageChannel, RecvError, RecvTimeoutError};
use shmport_zenoh::BridgeConfig;

#[test]
fn ten_thousand_messages_arrive_in_order() {
    const N: u64 = 10_000;
    as_remote(
        |c| c,
        |bridge| {
            let port = bridge.connect("seq", PATIENCE).unwrap();
            for i in 0..N {
                port.post_message(&i, []).unwrap();
            }
            // Stay until the parent has everything.
            assert_eq!(port.recv::<String>().unwrap().data, "done");
        },
    );
    let realm = realm("seq");
    let (bridge, endpoint) = listening_bridge(&realm, BridgeConfig::new());
    let listener = bridge.bind("seq").unwrap();
    let child = spawn_remote(
        "ten_thousand_messages_arrive_in_order",
        &endpoint,
        &realm,
        &[],
    );
    let port = listener.accept().unwrap();
    for i in 0..N {
        assert_eq!(port.recv::<u64>().unwrap().data, i);
    }
    port.post_message(&String::from("done"), []).unwrap();
    assert!(child.wait().success());
}

#[test]
fn buffers_of_every_size_class_arrive_with_their_contents() {
    const SIZES: [usize; 5] = [0, 1, 65_535, 65_536, 64 << 20];
    let pattern = |len: usize, i: usize| ((i * 31 + len) % 251) as u8;
    as_remote(
        |c| c,
        |bridge| {
            let port = bridge.connect("buffers", PATIENCE).unwrap();
            for len in SIZES {
                let mut buf = ArrayBuffer::new_unzeroed(len).unwrap();
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = pattern(len, i);
                }
                port.post_message(&(len as u64), [buf.into()]).unwrap();
            }
            assert_eq!(port.recv::<String>().unwrap().data, "done");
        },
    );
    let realm = realm("buffers");
    let (bridge, endpoint) = listening_bridge(&realm, BridgeConfig::new());
    let listener = bridge.bind("buffers").unwrap();
    let child = spawn_remote(
        "buffers_of_every_size_class_arrive_with_their_contents",
        &endpoint,
        &realm,
        &[],
    );
    let port = listener.accept().unwrap();
    for len in SIZES {
        let mut ev = port.recv::<u64>().unwrap();
        assert_eq!(ev.data, len as u64);
        assert_eq!(ev.buffers.len(), 1);
        let buf = ev.buffers.remove(0);
        assert_eq!(buf.len(), len);
        assert!(
            buf.iter().enumerate().all(|(i, &b)| b == pattern(len, i)),
            "contents of the {len}-byte buffer"
        );
    }
    port.post_message(&String::from("done"), []).unwrap();
    assert!(child.wait().success());
}

#[test]
fn a_port_relayed_there_and_back_keeps_its_messages_in_order() {
    as_remote(
        |c| c,
        |bridge| {
            let port = bridge.connect("relay", PATIENCE).unwrap();
            // Hand the port straight back, with a message of our own queued on it.
            let mut ev = port.recv::<String>().unwrap();
            let relayed = ev.ports.remove(0);
            relayed.post_message(&1_000u32, []).unwrap();
            port.post_message(&String::from("back"), [relayed.into()])
                .unwrap();
            assert_eq!(port.recv::<String>().unwrap().data, "done");
        },
    );
    let realm = realm("relay");
    let (bridge, endpoint) = listening_bridge(&realm, BridgeConfig::new());
    let listener = bridge.bind("relay").unwrap();
    let child = spawn_remote(
        "a_port_relayed_there_and_back_keeps_its_messages_in_order",
        &endpoint,
        &realm,
        &[],
    );
    let port = listener.accept().unwrap();
    let ch = MessageChannel::new().unwrap();
    // Messages queued before the port leaves, and posted while it travels.
    for i in 0..50u32 {
        ch.port1.post_message(&i, []).unwrap();
    }
    port.post_message(&String::from("there"), [ch.port2.into()])
        .unwrap();
    for i in 50..100u32 {
        ch.port1.post_message(&i, []).unwrap();
    }
    let mut ev = port.recv::<String>().unwrap();
    assert_eq!(ev.data, "back");
    let back = ev.ports.remove(0);
    for i in 0..100u32 {
        assert_eq!(back.recv::<u32>().unwrap().data, i);
    }
    // The other direction, and the message the remote side posted on it.
    assert_eq!(ch.port1.recv::<u32>().unwrap().data, 1_000);
    back.post_message(&7u32, []).unwrap();
    assert_eq!(ch.port1.recv::<u32>().unwrap().data, 7);
    // Closing the relayed channel here lets the remote bridge's proxies end, so that the
    // remote process can exit.
    drop((back, ch.port1));
    port.post_message(&String::from("done"), []).unwrap();
    assert!(child.wait().success());
}

#[test]
fn a_killed_remote_is_disconnected() {
    as_remote(
        |c| c,
        |bridge| {
            let port = bridge.connect("kill", PATIENCE).unwrap();
            port.post_message(&1u8, []).unwrap();
            let _ = port.recv::<u8>(); // parked until killed
            unreachable!("the parent kills this process");
        },
    );
    let realm = realm("kill");
    let (bridge, endpoint) = listening_bridge(&realm, BridgeConfig::new());
    let listener = bridge.bind("kill").unwrap();
    let child = spawn_remote("a_killed_remote_is_disconnected", &endpoint, &realm, &[]);
    let port = listener.accept().unwrap();
    assert_eq!(port.recv::<u8>().unwrap().data, 1);
    let t = Instant::now();
    child.signal(rustix::process::Signal::KILL);
    assert!(matches!(port.recv::<u8>(), Err(RecvError::Disconnected)));
    eprintln!("kill -9 noticed after {:?}", t.elapsed());
    drop(child);
}

#[test]
fn a_stopped_remote_is_disconnected_after_a_lease() {
    let lease = Duration::from_millis(1000);
    as_remote(
        |c| c.lease(lease),
        |bridge| {
            let port = bridge.connect("stop", PATIENCE).unwrap();
            port.post_message(&1u8, []).unwrap();
            let _ = port.recv::<u8>(); // parked until killed
            unreachable!("the parent kills this process");
        },
    );
    let realm = realm("stop");
    let (bridge, endpoint) = listening_bridge(&realm, BridgeConfig::new().lease(lease));
    let listener = bridge.bind("stop").unwrap();
    let child = spawn_remote(
        "a_stopped_remote_is_disconnected_after_a_lease",
        &endpoint,
        &realm,
        &[],
    );
    let port = listener.accept().unwrap();
    assert_eq!(port.recv::<u8>().unwrap().data, 1);
    let t = Instant::now();
    child.signal(rustix::process::Signal::STOP);
    assert!(matches!(port.recv::<u8>(), Err(RecvError::Disconnected)));
    eprintln!("SIGSTOP noticed after {:?} (lease {lease:?})", t.elapsed());
    drop(child); // SIGKILL ends a stopped process too
}

#[test]
fn a_stalled_consumer_does_not_delay_another_channel() {
    const STALLED: u64 = 5_000;
    const FLOWING: u64 = 2_000;
    // A small window, so that the stalled channel's sender really is held back.
    let config = |c: BridgeConfig| c.window(64, 4 << 20);
    as_remote(config, |bridge| {
        let stalled = bridge.connect("stalled", PATIENCE).unwrap();
        let flowing = bridge.connect("flowing", PATIENCE).unwrap();
        let poster = std::thread::spawn(move || {
            for i in 0..STALLED {
                stalled.post_message(&i, []).unwrap();
            }
            stalled
        });
        for i in 0..FLOWING {
            flowing.post_message(&i, []).unwrap();
            assert_eq!(flowing.recv::<u64>().unwrap().data, i);
        }
        let stalled = poster.join().unwrap();
        assert_eq!(stalled.recv::<String>().unwrap().data, "done");
    });
    let realm = realm("stall");
    let (bridge, endpoint) = listening_bridge(&realm, config(BridgeConfig::new()));
    let stalled_l = bridge.bind("stalled").unwrap();
    let flowing_l = bridge.bind("flowing").unwrap();
    let child = spawn_remote(
        "a_stalled_consumer_does_not_delay_another_channel",
        &endpoint,
        &realm,
        &[],
    );
    let stalled = stalled_l.accept().unwrap();
    let flowing = flowing_l.accept().unwrap();
    // The stalled consumer takes nothing for 8 seconds; the flowing channel echoes all
    // its messages meanwhile (nothing is read from `stalled` until it is done).
    let echo = std::thread::spawn(move || {
        for i in 0..FLOWING {
            let v = flowing.recv::<u64>().unwrap().data;
            assert_eq!(v, i);
            flowing.post_message(&v, []).unwrap();
        }
        flowing
    });
    let flowing = echo.join().unwrap();
    std::thread::sleep(Duration::from_secs(8)); // the stall itself
    for i in 0..STALLED {
        assert_eq!(stalled.recv::<u64>().unwrap().data, i);
    }
    stalled.post_message(&String::from("done"), []).unwrap();
    assert!(child.wait().success());
    drop(flowing);
}

#[test]
fn a_closed_port_drains_before_disconnected() {
    const N: u64 = 500;
    as_remote(
        |c| c,
        |bridge| {
            let port = bridge.connect("close", PATIENCE).unwrap();
            for i in 0..N {
                port.post_message(&i, []).unwrap();
            }
            port.close(); // then the process exits (after the bridge has sent all)
        },
    );
    let realm = realm("close");
    let (bridge, endpoint) = listening_bridge(&realm, BridgeConfig::new());
    let listener = bridge.bind("close").unwrap();
    let child = spawn_remote(
        "a_closed_port_drains_before_disconnected",
        &endpoint,
        &realm,
        &[],
    );
    let port = listener.accept().unwrap();
    assert!(child.wait().success());
    for i in 0..N {
        assert_eq!(port.recv::<u64>().unwrap().data, i);
    }
    assert!(matches!(
        port.recv_timeout::<u64>(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    ));
}

/// A network namespace joined to this one by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
}

impl Netns {
    /// `Err` with the reason when this machine cannot make one (not root, no `ip`).
    fn new() -> Result<Netns, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root".into());
        }
        let pid = std::process::id();
        let name = format!("szt{pid}");
        let (a, b) = (format!("sza{pid}"), format!("szb{pid}"));
        let net = format!("10.201.{}", pid % 250);
        let ns = Netns {
            name: name.clone(),
            host_ip: format!("{net}.1"),
        };
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        ip(&["link", "set", &b, "netns", &name])?;
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &a])?;
        ip(&["link", "set", &a, "up"])?;
        let inside = |args: &[&str]| {
            let mut v = vec!["netns", "exec", &name, "ip"];
            v.extend_from_slice(args);
            ip(&v)
        };
        inside(&["addr", "add", &format!("{net}.2/30"), "dev", &b])?;
        inside(&["link", "set", &b, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_channel_works_across_two_network_namespaces() {
    as_remote(
        |c| c,
        |bridge| {
            let port = bridge.connect("netns", PATIENCE).unwrap();
            for i in 0..1_000u64 {
                port.post_message(&i, []).unwrap();
            }
            let mut buf = ArrayBuffer::new(1 << 20).unwrap();
            buf[12_345] = 42;
            port.post_message(&u64::MAX, [buf.into()]).unwrap();
            assert_eq!(port.recv::<String>().unwrap().data, "done");
        },
    );
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipped: no network namespace ({why})");
            return;
        }
    };
    let realm = realm("netns");
    let (bridge, endpoint) = listening_bridge_on(&ns.host_ip, &realm, BridgeConfig::new());
    let listener = bridge.bind("netns").unwrap();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(std::env::current_exe().unwrap());
    let child = spawn_remote_with(
        cmd,
        "a_channel_works_across_two_network_namespaces",
        &endpoint,
        &realm,
        &[],
    );
    let port = listener.accept().unwrap();
    for i in 0..1_000u64 {
        assert_eq!(port.recv::<u64>().unwrap().data, i);
    }
    let mut ev = port.recv::<u64>().unwrap();
    assert_eq!(ev.data, u64::MAX);
    assert_eq!(ev.buffers.remove(0)[12_345], 42);
    port.post_message(&String::from("done"), []).unwrap();
    assert!(child.wait().success());
}

#[test]
fn large_archives_arrive_whole_both_ways() {
    // Under and at the size sent without a copy, a ring's worth, 1 MiB, and more than one
    // frame carries (2 MiB): with a window so small that credit cuts messages into chunks.
    const SIZES: [usize; 6] = [100, 16_383, 16_384, 70_000, 1 << 20, 5 << 20];
    let value = |len: usize| -> Vec<u8> { (0..len).map(|i| ((i * 7 + len) % 253) as u8).collect() };
    let window = |c: BridgeConfig| c.window(3, 4 << 20);
    as_remote(window, |bridge| {
        let port = bridge.connect("large", PATIENCE).unwrap();
        // Echoed undecoded, with the buffer that came along.
        for _ in 0..2 * SIZES.len() {
            let mut raw = port.recv_raw().unwrap();
            let transfer = raw.take_transfer();
            port.post_raw(&raw.archive, raw.fingerprint, transfer)
                .unwrap();
        }
        assert_eq!(port.recv::<String>().unwrap().data, "done");
    });
    let realm = realm("large");
    let (bridge, endpoint) = listening_bridge(&realm, window(BridgeConfig::new()));
    let listener = bridge.bind("large").unwrap();
    let child = spawn_remote(
        "large_archives_arrive_whole_both_ways",
        &endpoint,
        &realm,
        &[],
    );
    let port = listener.accept().unwrap();
    for with_buffer in [false, true] {
        for len in SIZES {
            let mut transfer = Vec::new();
            if with_buffer {
                let mut b = ArrayBuffer::new(len).unwrap();
                b[len - 1] = 5;
                transfer.push(b.into());
            }
            port.post_message(&value(len), transfer).unwrap();
        }
        for len in SIZES {
            let mut ev = port.recv::<Vec<u8>>().unwrap();
            assert!(ev.data == value(len), "the {len}-byte archive");
            if with_buffer {
                assert_eq!(ev.buffers.remove(0)[len - 1], 5);
            }
        }
    }
    port.post_message(&String::from("done"), []).unwrap();
    assert!(child.wait().success());
}
