//! Issue 15 (P5 for `BroadcastChannel`): a steady-state broadcast post, and its receive,
//! make no heap allocation and no system call when nobody sleeps.
//!
//! Allocations: a counting global allocator, armed on this thread only (as in
//! tests/no_alloc.rs). System calls: the measured loop runs in a child process whose
//! measuring thread has a seccomp filter that kills the process on any system call but
//! `exit_group`; the child reports success by exiting 0 through that one call.

mod common;

use common::counting::allocations_during;

use common::{as_child, spawn_test_child};
use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{BroadcastChannel, MessageChannel};

#[global_allocator]
static GLOBAL: common::counting::Counting = common::counting::Counting;

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
struct Tick {
    seq: u64,
    price: f64,
    payload: [u8; 48],
}

const TICK: Tick = Tick {
    seq: 0,
    price: 1.5,
    payload: [7; 48],
};

/// Two members of one name in this thread, warmed up: rkyv's arena, the scratch buffers,
/// and several trips around the ring.
fn warmed_up_pair(tag: &str) -> (BroadcastChannel, BroadcastChannel) {
    let name = format!("t{}-{tag}", std::process::id());
    let mut a = BroadcastChannel::new(&name).unwrap();
    let mut b = BroadcastChannel::new(&name).unwrap();
    for i in 0..10_000u64 {
        a.post_message(&Tick { seq: i, ..TICK }).unwrap();
        assert_eq!(b.recv::<Tick>().unwrap().data.seq, i);
    }
    (a, b)
}

fn steady_state(a: &mut BroadcastChannel, b: &mut BroadcastChannel, rounds: u64) {
    for i in 0..rounds {
        a.post_message(&Tick { seq: i, ..TICK }).unwrap();
        let ev = b.recv::<Tick>().unwrap();
        assert_eq!(ev.data.seq, i);
    }
}

#[test]
fn a_steady_state_broadcast_post_and_recv_allocate_nothing() {
    let (mut a, mut b) = warmed_up_pair("no-alloc");
    assert_eq!(
        allocations_during(|| steady_state(&mut a, &mut b, 100_000)),
        0,
        "allocations in 100,000 posts and receives"
    );
}

/// Lets this thread make no system call but `exit_group`: any other kills the process
/// with `SIGSYS`.
fn forbid_system_calls() {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, sock_filter};
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 0), // seccomp_data.nr
        sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_exit_group as u32,
        },
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls; `prog` and the filter it points to outlive the call (the
    // kernel copies the program).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
            ),
            0,
            "seccomp refused"
        );
    }
}

#[test]
fn a_steady_state_broadcast_post_and_recv_make_no_system_call_when_nobody_sleeps() {
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        let (mut a, mut b) = warmed_up_pair("no-syscall");
        port.post_message(&1u8, []).unwrap(); // set up; from here on, no system call
        forbid_system_calls();
        steady_state(&mut a, &mut b, 100_000);
        // SAFETY: ends the process at once, with the one system call allowed.
        unsafe { libc::_exit(0) };
    });
    let child = spawn_test_child(
        "a_steady_state_broadcast_post_and_recv_make_no_system_call_when_nobody_sleeps",
        ch.port2,
    );
    ch.port1.recv::<u8>().unwrap();
    let status = child.wait();
    assert!(
        status.success(),
        "the child made a system call in 100,000 posts and receives ({status:?}; SIGSYS is 31)"
    );
}

#[test]
fn async_receives_of_queued_messages_and_the_posts_after_a_woken_wait_make_no_system_call() {
    const TEST: &str =
        "async_receives_of_queued_messages_and_the_posts_after_a_woken_wait_make_no_system_call";
    let ch = MessageChannel::new().unwrap();
    as_child(|port| {
        use std::task::{Context, Poll};
        let (mut a, mut b) = warmed_up_pair("no-syscall-async");
        // One wait through the bell thread: it starts, the post rings (and takes the
        // sleepers flag), the task is woken.
        let waker = common::unpark_waker();
        let mut cx = Context::from_waker(&waker);
        {
            let mut fut = std::pin::pin!(b.recv_async::<Tick>());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            a.post_message(&TICK).unwrap();
            while fut.as_mut().poll(&mut cx).is_pending() {
                std::thread::park();
            }
        }
        port.post_message(&1u8, []).unwrap(); // set up; from here on, no system call
        forbid_system_calls();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for i in 0..100_000u64 {
            a.post_message(&Tick { seq: i, ..TICK }).unwrap();
            match std::pin::pin!(b.recv_async::<Tick>()).poll(&mut cx) {
                Poll::Ready(ev) => assert_eq!(ev.unwrap().data.seq, i),
                Poll::Pending => panic!("a queued message made the receive wait"),
            }
        }
        // SAFETY: ends the process at once, with the one system call allowed.
        unsafe { libc::_exit(0) };
    });
    let child = spawn_test_child(TEST, ch.port2);
    ch.port1.recv::<u8>().unwrap();
    let status = child.wait();
    assert!(
        status.success(),
        "the child made a system call in 100,000 posts and async receives ({status:?}; SIGSYS is 31)"
    );
}
