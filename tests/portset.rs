//! PortSet: waiting on many ports at once (issue 5, item 3).

mod common;

use std::time::Duration;

use common::{as_child, spawn_test_child};
use shmport::{
    ArrayBuffer, MessageChannel, MessagePort, PortKey, PortSet, RecvError, Transferable,
};

/// A set of `n` receiving ports, with the sending ports and keys in the same order.
fn set_of(n: usize) -> (PortSet, Vec<MessagePort>, Vec<PortKey>) {
    let mut set = PortSet::new().unwrap();
    let mut senders = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..n {
        let ch = MessageChannel::new().unwrap();
        keys.push(set.insert(ch.port2).unwrap());
        senders.push(ch.port1);
    }
    (set, senders, keys)
}

#[test]
fn wait_says_which_port_has_a_message() {
    let (mut set, senders, keys) = set_of(5);
    senders[3].post_message(&33u32, []).unwrap();
    assert_eq!(set.wait().unwrap(), keys[3]);
    assert_eq!(
        set.get(keys[3]).unwrap().try_recv::<u32>().unwrap().data,
        33
    );
}

#[test]
fn messages_queued_before_a_port_joins_are_reported() {
    let ch = MessageChannel::new().unwrap();
    ch.port1.post_message(&1u8, []).unwrap();
    let mut set = PortSet::new().unwrap();
    let key = set.insert(ch.port2).unwrap();
    assert_eq!(set.recv::<u8>().unwrap().0, key);
}

#[test]
fn a_wait_with_nothing_queued_times_out_with_none() {
    let (mut set, _senders, _keys) = set_of(3);
    assert_eq!(set.wait_timeout(Duration::from_millis(1)).unwrap(), None);
    assert_eq!(set.try_wait().unwrap(), None);
}

#[test]
fn a_blocked_wait_is_woken_by_a_post_from_another_thread() {
    let (mut set, mut senders, keys) = set_of(4);
    let sender = senders.remove(1);
    let t = std::thread::spawn(move || sender.post_message(&7u64, []).unwrap());
    let (key, ev) = set.recv::<u64>().unwrap();
    assert_eq!((key, ev.unwrap().data), (keys[1], 7));
    t.join().unwrap();
}

#[test]
fn a_port_left_with_messages_is_reported_again_after_the_other_ready_ports() {
    let (mut set, senders, keys) = set_of(3);
    for _ in 0..3 {
        senders[0].post_message(&0u8, []).unwrap();
    }
    senders[2].post_message(&2u8, []).unwrap();
    // Port 0 is reported, we take nothing; port 2 must get its turn before port 0 again.
    let first = set.wait().unwrap();
    let second = set.wait().unwrap();
    assert_ne!(first, second);
    assert!([keys[0], keys[2]].contains(&first) && [keys[0], keys[2]].contains(&second));
    let mut got = Vec::new();
    while let Some((_, ev)) = set.recv_timeout::<u8>(Duration::ZERO).unwrap() {
        got.push(ev.unwrap().data);
    }
    got.sort();
    assert_eq!(got, [0, 0, 0, 2]);
}

#[test]
fn every_message_on_every_port_is_received_exactly_once_in_order_per_port() {
    let (mut set, senders, keys) = set_of(8);
    let t = std::thread::spawn(move || {
        for i in 0..2_000u32 {
            senders[(i % 8) as usize].post_message(&i, []).unwrap();
        }
        senders // kept open: a drained port whose peer is gone would be reported too
    });
    let mut last = [None::<u32>; 8];
    for _ in 0..2_000 {
        let (key, ev) = set.recv::<u32>().unwrap();
        let i = ev.unwrap().data;
        let p = keys.iter().position(|k| *k == key).unwrap();
        assert_eq!(i % 8, p as u32);
        assert!(
            last[p].is_none_or(|prev| prev < i),
            "out of order on port {p}"
        );
        last[p] = Some(i);
    }
    t.join().unwrap();
}

#[test]
fn a_closed_peer_is_reported_and_its_receive_says_disconnected() {
    let (mut set, mut senders, keys) = set_of(3);
    senders.remove(1).close();
    let (key, got) = set.recv::<u8>().unwrap();
    assert_eq!(key, keys[1]);
    assert!(matches!(got, Err(RecvError::Disconnected)));
}

#[test]
fn removing_a_port_hands_it_back_with_its_queue_and_retires_its_key() {
    let (mut set, senders, keys) = set_of(2);
    senders[0].post_message(&5u16, []).unwrap();
    let port = set.remove(keys[0]).unwrap();
    assert_eq!(port.try_recv::<u16>().unwrap().data, 5);
    assert!(set.get(keys[0]).is_none() && set.remove(keys[0]).is_none());
    assert_eq!(set.len(), 1);
    // The slot is reused under a new key; the old key stays dead.
    let ch = MessageChannel::new().unwrap();
    let new_key = set.insert(ch.port2).unwrap();
    assert_ne!(new_key, keys[0]);
    assert!(set.get(keys[0]).is_none());
}

#[test]
fn a_wake_up_among_1000_ports_looks_at_a_constant_number_of_them() {
    let (mut set, senders, keys) = set_of(1000);
    // The first look arms every member once.
    assert_eq!(set.try_wait().unwrap(), None);
    for &i in &[777usize, 3, 999, 500, 0] {
        let before = set.ports_examined();
        senders[i].post_message(&(i as u32), []).unwrap();
        let (key, ev) = set.recv::<u32>().unwrap();
        assert_eq!((key, ev.unwrap().data), (keys[i], i as u32));
        // Found it, then (next wait) found it empty and armed it again.
        assert_eq!(set.try_wait().unwrap(), None);
        let looked = set.ports_examined() - before;
        assert!(looked <= 2, "looked at {looked} ports for one wake-up");
    }
}

#[test]
fn transfers_to_a_port_in_a_set_arrive_whole_between_doorbells() {
    let (mut set, senders, keys) = set_of(2);
    for round in 0..200u32 {
        // Arm, then post a transfer: the doorbell and the descriptor note share a socket.
        assert_eq!(set.try_wait().unwrap(), None);
        let mut buf = ArrayBuffer::new(64).unwrap();
        buf[0] = round as u8;
        senders[1]
            .post_message(&round, [Transferable::Buffer(buf)])
            .unwrap();
        senders[1].post_message(&(round + 1_000), []).unwrap();
        let (key, ev) = set.recv::<u32>().unwrap();
        let ev = ev.unwrap();
        assert_eq!(
            (key, ev.data, ev.buffers[0][0]),
            (keys[1], round, round as u8)
        );
        assert_eq!(set.recv::<u32>().unwrap().1.unwrap().data, round + 1_000);
    }
}

#[test]
fn a_set_is_woken_by_a_post_from_another_process() {
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        port.post_message(&String::from("from the child"), [])
            .unwrap();
        // Wait for the parent's answer so the message is read before we exit.
        port.recv::<u8>().unwrap();
    });
    let (mut set, _senders, _keys) = set_of(10);
    let child = spawn_test_child("a_set_is_woken_by_a_post_from_another_process", ch.port2);
    let key = set.insert(ch.port1).unwrap();
    let (got, ev) = set.recv::<String>().unwrap();
    assert_eq!((got, ev.unwrap().data.as_str()), (key, "from the child"));
    set.get(key).unwrap().post_message(&1u8, []).unwrap();
    assert!(child.wait().success());
}

#[test]
fn a_peer_process_killed_while_the_set_waits_is_reported_as_disconnected() {
    let ch = MessageChannel::new().unwrap();
    as_child(common::post_one_then_park);
    let child = spawn_test_child(
        "a_peer_process_killed_while_the_set_waits_is_reported_as_disconnected",
        ch.port2,
    );
    let mut set = PortSet::new().unwrap();
    let key = set.insert(ch.port1).unwrap();
    assert_eq!(set.recv::<u8>().unwrap().1.unwrap().data, 1);
    child.kill();
    let (got, r) = set.recv::<u8>().unwrap();
    assert_eq!(got, key);
    assert!(matches!(r, Err(RecvError::Disconnected)));
}

#[test]
fn a_timed_out_blocking_receive_on_a_member_does_not_cost_the_set_its_wake_ups() {
    let (mut set, senders, keys) = set_of(2);
    assert_eq!(set.try_wait().unwrap(), None); // both members armed for a doorbell
    // A futex sleep on the armed member that ends with nothing received.
    let member = set.get(keys[0]).unwrap();
    member.set_wait_strategy(shmport::WaitStrategy::Block);
    assert!(member.recv_timeout::<u8>(Duration::from_millis(1)).is_err());
    // The member's doorbell request survived the sleep: the set hears the next post.
    senders[0].post_message(&2u8, []).unwrap();
    let (key, ev) = set
        .recv_timeout::<u8>(Duration::from_secs(10))
        .unwrap()
        .expect("the post rang no doorbell");
    assert_eq!((key, ev.unwrap().data), (keys[0], 2));
}

#[test]
fn a_busy_set_of_1000_ports_looks_at_a_constant_number_of_them_per_receive() {
    // Posts land before each wait, so a member is always readable: the members found empty
    // on the way must be armed, not left queued to be looked at again by every wait.
    // Each new member is looked at once before it is first armed (1,000 in all); after
    // that, a receive costs a few looks whatever the set's size.
    let (mut set, senders, keys) = set_of(1000);
    let mut k = 0usize;
    for _ in 0..2_000 {
        k = (k * 7 + 13) % 1000;
        senders[k].post_message(&(k as u32), []).unwrap();
        let (key, ev) = set.recv::<u32>().unwrap();
        assert_eq!((key, ev.unwrap().data), (keys[k], k as u32));
    }
    let looked = set.ports_examined();
    assert!(
        looked <= 1_000 + 3 * 2_000,
        "looked at {looked} ports for 2,000 receives"
    );
}

#[test]
fn receiving_a_transfer_directly_from_a_member_does_not_cost_the_set_its_wake_ups() {
    // The note reader skips the doorbell queued before it: the set must not rely on it.
    let (mut set, senders, keys) = set_of(2);
    assert_eq!(set.try_wait().unwrap(), None); // armed
    senders[1].post_message(&1u32, []).unwrap(); // rings
    let buf = ArrayBuffer::new(8).unwrap();
    senders[1]
        .post_message(&2u32, [Transferable::Buffer(buf)])
        .unwrap(); // its note lands behind the doorbell
    let member = set.get(keys[1]).unwrap();
    assert_eq!(member.try_recv::<u32>().unwrap().data, 1);
    assert_eq!(member.try_recv::<u32>().unwrap().data, 2); // doorbell and note consumed
    senders[1].post_message(&3u32, []).unwrap();
    let (key, ev) = set
        .recv_timeout::<u32>(Duration::from_secs(10))
        .unwrap()
        .expect("the set missed the member's next message");
    assert_eq!((key, ev.unwrap().data), (keys[1], 3));
}
