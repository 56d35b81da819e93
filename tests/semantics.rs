//! Channel messaging semantics between threads of one process (SPEC §3, S1–S6, S14–S16,
//! and the bounded-ring rule). The same code path serves processes: see cross_process.rs.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{
    MessageChannel, MessageError, PostErrorKind, RecvError, RecvTimeoutError, TryRecvError,
    WaitStrategy,
};

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Reading {
    sensor: String,
    values: Vec<f64>,
}

#[test]
fn s1_a_message_posted_on_port1_arrives_at_port2() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&String::from("hi"), []).unwrap();
    assert_eq!(ch.port2.recv::<String>().unwrap().data, "hi");
}

#[test]
fn s1_a_message_posted_on_port2_arrives_at_port1() {
    let ch = MessageChannel::new().unwrap();
    ch.port2.post_message(&7u32, []).unwrap();
    assert_eq!(ch.port1.recv::<u32>().unwrap().data, 7);
}

#[test]
fn s2_messages_arrive_in_the_order_they_were_posted() {
    let ch = MessageChannel::new().unwrap();
    let rx = ch.port2;
    let reader = thread::spawn(move || {
        (0..100_000u64)
            .map(|_| rx.recv::<u64>().unwrap().data)
            .collect::<Vec<_>>()
    });
    for i in 0..100_000u64 {
        ch.port1.post_message(&i, []).unwrap();
    }
    assert_eq!(reader.join().unwrap(), (0..100_000).collect::<Vec<_>>());
}

#[test]
fn s2_post_message_returns_before_the_message_is_received() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&1u8, []).unwrap();
    // Nothing was consumed by the post: the message is still queued for the receiver.
    assert_eq!(ch.port2.try_recv::<u8>().unwrap().data, 1);
}

#[test]
fn s3_messages_posted_before_the_receiver_starts_are_queued() {
    let ch = MessageChannel::new().unwrap();
    for i in 0..1000u32 {
        ch.port1.post_message(&i, []).unwrap();
    }
    let rx = ch.port2;
    let got = thread::spawn(move || {
        (0..1000)
            .map(|_| rx.try_recv::<u32>().unwrap().data)
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn s4_data_is_a_deep_copy_the_sender_may_reuse_its_value() {
    let ch = MessageChannel::new().unwrap();
    let mut r = Reading {
        sensor: "a".into(),
        values: vec![1.0, 2.0],
    };
    ch.port1.post_message(&r, []).unwrap();
    r.values.push(3.0);
    r.sensor.push('!');
    let got = ch.port2.recv::<Reading>().unwrap().data;
    assert_eq!(got.values, vec![1.0, 2.0]);
    assert_eq!(got.sensor, "a");
}

/// A value whose serialization always fails.
struct Unencodable;

#[derive(Debug)]
struct Refused;
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}
impl std::error::Error for Refused {}

/// What an `Unencodable` would archive as, if it ever could be encoded.
#[derive(Archive, Serialize, Deserialize)]
struct Placeholder {
    x: u32,
}

impl Archive for Unencodable {
    type Archived = ArchivedPlaceholder;
    type Resolver = PlaceholderResolver;
    fn resolve(&self, resolver: PlaceholderResolver, out: shmport::rkyv::Place<Self::Archived>) {
        Placeholder { x: 0 }.resolve(resolver, out);
    }
}

impl<S: shmport::rkyv::rancor::Fallible + ?Sized> Serialize<S> for Unencodable
where
    S::Error: shmport::rkyv::rancor::Source,
{
    fn serialize(&self, _: &mut S) -> Result<PlaceholderResolver, S::Error> {
        Err(<S::Error as shmport::rkyv::rancor::Source>::new(Refused))
    }
}

impl<D: shmport::rkyv::rancor::Fallible + ?Sized> Deserialize<Unencodable, D>
    for ArchivedPlaceholder
{
    fn deserialize(&self, _: &mut D) -> Result<Unencodable, D::Error> {
        Ok(Unencodable)
    }
}

#[test]
fn s5_a_value_that_cannot_be_encoded_is_rejected_and_nothing_is_sent() {
    let ch = MessageChannel::new().unwrap();
    let err = ch.port1.post_message(&Unencodable, []).unwrap_err();
    assert!(matches!(err.kind(), PostErrorKind::Encode(_)), "{err}");
    assert!(matches!(
        ch.port2.try_recv::<u32>(),
        Err(TryRecvError::Empty)
    ));
}

#[test]
fn s6_receiving_as_the_wrong_type_is_a_message_error() {
    let ch = MessageChannel::new().unwrap();
    ch.port1
        .post_message(&String::from("sixteen bytes!!!"), [])
        .unwrap();
    let err = ch.port2.recv::<u64>().unwrap_err();
    assert!(
        matches!(
            err,
            RecvError::MessageError(MessageError::TypeMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn s6_the_port_keeps_working_after_a_message_error() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&String::from("wrong"), []).unwrap();
    ch.port1.post_message(&5u64, []).unwrap();
    assert!(ch.port2.recv::<u64>().is_err());
    assert_eq!(ch.port2.recv::<u64>().unwrap().data, 5);
}

#[test]
fn s14_messages_posted_before_close_are_still_delivered() {
    let ch = MessageChannel::new().unwrap();
    for i in 0..10u8 {
        ch.port1.post_message(&i, []).unwrap();
    }
    ch.port1.close();
    for i in 0..10u8 {
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, i);
    }
    assert!(matches!(
        ch.port2.recv::<u8>(),
        Err(RecvError::Disconnected)
    ));
}

#[test]
fn s15_recv_returns_disconnected_after_the_peer_is_dropped() {
    let ch = MessageChannel::new().unwrap();
    drop(ch.port1);
    assert!(matches!(
        ch.port2.recv::<u8>(),
        Err(RecvError::Disconnected)
    ));
}

#[test]
fn s15_try_recv_sees_a_closed_peer_at_the_next_call() {
    let ch = MessageChannel::new().unwrap();
    assert!(matches!(
        ch.port2.try_recv::<u8>(),
        Err(TryRecvError::Empty)
    ));
    ch.port1.close();
    assert!(matches!(
        ch.port2.try_recv::<u8>(),
        Err(TryRecvError::Disconnected)
    ));
}

#[test]
fn s15_a_blocked_recv_wakes_when_the_peer_closes() {
    let ch = MessageChannel::new().unwrap();
    let rx = ch.port2;
    rx.set_wait_strategy(WaitStrategy::Block);
    let (started_tx, started) = mpsc::channel();
    let blocked = thread::spawn(move || {
        started_tx.send(()).unwrap();
        rx.recv::<u64>()
    });
    started.recv().unwrap();
    ch.port1.close();
    assert!(matches!(
        blocked.join().unwrap(),
        Err(RecvError::Disconnected)
    ));
}

#[test]
fn s16_posting_to_a_closed_peer_is_a_disconnected_error() {
    let ch = MessageChannel::new().unwrap();
    ch.port2.close();
    let err = ch.port1.post_message(&1u8, []).unwrap_err();
    assert!(err.is_disconnected(), "{err}");
}

#[test]
fn try_recv_on_an_empty_port_with_a_live_peer_is_empty() {
    let ch = MessageChannel::new().unwrap();
    assert!(matches!(
        ch.port2.try_recv::<u8>(),
        Err(TryRecvError::Empty)
    ));
}

#[test]
fn recv_timeout_times_out_when_nothing_arrives() {
    let ch = MessageChannel::new().unwrap();
    assert!(matches!(
        ch.port2.recv_timeout::<u8>(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    ));
}

#[test]
fn recv_timeout_returns_a_queued_message() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&3u8, []).unwrap();
    assert_eq!(
        ch.port2
            .recv_timeout::<u8>(Duration::from_millis(5))
            .unwrap()
            .data,
        3
    );
}

#[test]
fn the_default_ring_holds_a_thousand_small_messages() {
    let ch = MessageChannel::new().unwrap();
    for i in 0..1000u32 {
        ch.port1
            .try_post_message(&[i as u8; 64], [])
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
    }
}

#[test]
fn try_post_on_a_full_ring_reports_full() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let mut posted = 0;
    let err = loop {
        match ch.port1.try_post_message(&[0u8; 100], []) {
            Ok(()) => posted += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is_full(), "{err}");
    assert!(posted > 0);
}

#[test]
fn a_blocked_post_resumes_when_the_receiver_drains() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let rx = ch.port2;
    let reader = thread::spawn(move || {
        (0..10_000u32)
            .map(|_| rx.recv::<[u32; 16]>().unwrap().data[0])
            .sum::<u32>()
    });
    for i in 0..10_000u32 {
        ch.port1.post_message(&[i; 16], []).unwrap();
    }
    assert_eq!(reader.join().unwrap(), (0..10_000u32).sum::<u32>());
}

#[test]
fn a_blocked_post_returns_disconnected_when_the_receiver_drops() {
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let tx = ch.port1;
    tx.set_wait_strategy(WaitStrategy::Block);
    while tx.try_post_message(&[0u8; 100], []).is_ok() {}
    let (started_tx, started) = mpsc::channel();
    let blocked = thread::spawn(move || {
        started_tx.send(()).unwrap();
        tx.post_message(&[0u8; 100], [])
    });
    started.recv().unwrap();
    drop(ch.port2);
    assert!(blocked.join().unwrap().unwrap_err().is_disconnected());
}

#[test]
fn the_largest_allowed_message_goes_through() {
    let ch = MessageChannel::builder().capacity(8192).build().unwrap();
    let max = ch.port1.max_inline_size();
    // A Vec<u8> archive is its bytes plus an 8-byte root.
    let msg = vec![0xabu8; max - 8];
    ch.port1.post_message(&msg, []).unwrap();
    assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, msg);
}

#[test]
fn messages_of_varied_sizes_survive_many_ring_wraps() {
    let ch = MessageChannel::builder().capacity(16384).build().unwrap();
    let rx = ch.port2;
    let reader = thread::spawn(move || {
        for i in 0..20_000u32 {
            let v = rx.recv::<Vec<u32>>().unwrap().data;
            assert_eq!(v.len(), (i as usize * 37) % 1000);
            assert!(v.iter().all(|&x| x == i));
        }
    });
    for i in 0..20_000u32 {
        ch.port1
            .post_message(&vec![i; (i as usize * 37) % 1000], [])
            .unwrap();
    }
    reader.join().unwrap();
}

#[test]
fn an_invalid_capacity_is_an_error() {
    assert!(matches!(
        MessageChannel::builder().capacity(0).build(),
        Err(shmport::Error::InvalidCapacity { .. })
    ));
    assert!(matches!(
        MessageChannel::builder().capacity(usize::MAX).build(),
        Err(shmport::Error::InvalidCapacity { .. })
    ));
}

#[test]
fn every_wait_strategy_delivers() {
    for strategy in [
        WaitStrategy::Adaptive,
        WaitStrategy::Block,
        WaitStrategy::BusyPoll,
        WaitStrategy::Spin(Duration::from_micros(5)),
    ] {
        let ch = MessageChannel::builder()
            .wait_strategy(strategy)
            .build()
            .unwrap();
        let rx = ch.port2;
        let echo = thread::spawn(move || {
            while let Ok(ev) = rx.recv::<u64>() {
                rx.post_message(&(ev.data + 1), []).unwrap();
            }
        });
        for i in 0..1000u64 {
            ch.port1.post_message(&i, []).unwrap();
            assert_eq!(ch.port1.recv::<u64>().unwrap().data, i + 1, "{strategy:?}");
        }
        drop(ch.port1);
        echo.join().unwrap();
    }
}

#[test]
fn a_port_can_move_to_another_thread() {
    let ch = MessageChannel::new().unwrap();
    let p2 = ch.port2;
    thread::spawn(move || p2.post_message(&String::from("from a worker"), []).unwrap())
        .join()
        .unwrap();
    assert_eq!(ch.port1.recv::<String>().unwrap().data, "from a worker");
}

#[test]
fn parent_port_in_a_process_not_spawned_by_shmport_is_an_error() {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return;
    }
    assert!(matches!(
        shmport::parent_port(),
        Err(shmport::Error::NoParentPort)
    ));
}

#[test]
fn dropping_both_ports_unmaps_the_segment_and_closes_its_descriptors() {
    // One process-wide count, so other tests running in parallel could disturb it: take a
    // channel of a capacity no other test uses and count only its mappings.
    let count = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains("memfd:shmport-channel"))
            .filter(|l| {
                let range = l.split_whitespace().next().unwrap();
                let (a, b) = range.split_once('-').unwrap();
                let len = u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap();
                len == 4096 + 2 * 20 * 4096
            })
            .count()
    };
    let before = count();
    let ch = MessageChannel::builder()
        .capacity(20 * 4096)
        .build()
        .unwrap();
    assert_eq!(count(), before + 1);
    drop(ch);
    assert_eq!(count(), before);
}

#[test]
fn errors_convert_into_box_dyn_error() {
    fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let ch = MessageChannel::new()?;
        ch.port2.close();
        ch.port1.recv::<u8>()?;
        Ok(())
    }
    assert!(run().unwrap_err().to_string().contains("closed"));
}

#[test]
fn error_types_are_send_sync_and_static() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<shmport::Error>();
    check::<shmport::PostError>();
    check::<RecvError>();
    check::<TryRecvError>();
    check::<RecvTimeoutError>();
    check::<MessageError>();
}

#[test]
fn recv_archived_reads_the_message_without_deserializing_it() {
    let ch = MessageChannel::new().unwrap();
    let r = Reading {
        sensor: "t7".into(),
        values: vec![1.0, 2.5],
    };
    ch.port1.post_message(&r, []).unwrap();
    let ev = ch
        .port2
        .recv_archived::<Reading, _>(|a| (a.sensor.as_str().to_owned(), a.values.len()))
        .unwrap();
    assert_eq!(ev.data, ("t7".to_owned(), 2));
}

#[test]
fn recv_archived_as_the_wrong_type_is_a_message_error() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&1u64, []).unwrap();
    assert!(matches!(
        ch.port2.try_recv_archived::<String, _>(|s| s.len()),
        Err(TryRecvError::MessageError(
            MessageError::TypeMismatch { .. }
        ))
    ));
}

#[test]
fn ten_thousand_channels_can_be_open_in_one_process() {
    common::isolated("ten_thousand_channels_can_be_open_in_one_process", || {
        // One descriptor per in-process channel; shmport raises the soft limit to the hard
        // one. Where this process may raise the hard limit too (a privileged CI runner
        // whose hard limit is low), do, so the test is about shmport, not the runner.
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.maximum.is_some_and(|m| m < 12_000) {
            lim.maximum = Some(12_000);
            lim.current = Some(12_000);
            let _ = setrlimit(Resource::Nofile, lim);
        }
        let channels: Vec<MessageChannel> = (0..10_000)
            .map(|i| MessageChannel::new().unwrap_or_else(|e| panic!("channel {i}: {e}")))
            .collect();
        for (i, ch) in channels.iter().enumerate().step_by(97) {
            ch.port1.post_message(&(i as u32), []).unwrap();
            assert_eq!(ch.port2.recv::<u32>().unwrap().data, i as u32);
        }
    });
}

#[test]
fn a_full_ring_ending_in_a_short_remainder_does_not_poison_the_channel() {
    // Found by the loom model of the remainder rule: 24-byte header + 2016-byte archive =
    // 2040-byte records, two per 4096-byte lap, leaving 16 bytes.
    let ch = MessageChannel::builder().capacity(4096).build().unwrap();
    let (a, b) = (&ch.port1, &ch.port2);
    let msg = [7u8; 2016];
    for _ in 0..3 {
        a.post_message(&msg, []).unwrap();
        a.post_message(&msg, []).unwrap();
        b.recv::<[u8; 2016]>().unwrap();
        b.recv::<[u8; 2016]>().unwrap();
        assert!(matches!(b.try_recv::<u8>(), Err(TryRecvError::Empty)));
    }
    a.post_message(&1u8, []).unwrap();
    assert_eq!(b.recv::<u8>().unwrap().data, 1);
}
