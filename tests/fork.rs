//! `fork` without `exec`: a forked copy of a process shares its parent's shared memory and
//! descriptors, so an inherited port must not be used there. shmport detects it (each port
//! records the process that created or received it) and refuses: posts fail with
//! `WrongProcess`, receives report `Disconnected` without consuming anything, and dropping
//! the copy closes nothing. The parent is unaffected and loses nothing.
//!
//! Each test forks from a process of its own (`common::isolated`), so no other test's
//! thread holds a lock at the moment of the fork; the forked child leaves with `_exit`.

mod common;

use shmport::{ArrayBuffer, Error, MessageChannel, PostErrorKind, RecvError, TryRecvError};

/// Forks; the child runs `body` and leaves with `_exit` and the code it returns (101 if it
/// panics), running no destructor of the parent's state. Returns the child's exit code.
fn in_a_forked_child(body: impl FnOnce() -> i32) -> i32 {
    with_a_forked_child((), |()| body()).0
}

/// As [`in_a_forked_child`], handing `value` to the child's `body` (to drop there, say):
/// the parent gets its own `value` back, untouched.
fn with_a_forked_child<T>(value: T, body: impl FnOnce(T) -> i32) -> (i32, T) {
    // SAFETY: the test process runs this test alone (`common::isolated`), so no other
    // thread holds a lock the child could need; the child leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let run = std::panic::AssertUnwindSafe(move || body(value));
        let code = std::panic::catch_unwind(run).unwrap_or(101);
        // SAFETY: ends the forked child at once, without running the parent's atexit
        // handlers or flushing its buffers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "the forked child died: {status:#x}"
    );
    (libc::WEXITSTATUS(status), value)
}

#[test]
fn a_forked_copy_cannot_post_on_an_inherited_port() {
    common::isolated("a_forked_copy_cannot_post_on_an_inherited_port", || {
        let ch = MessageChannel::new().unwrap();
        let code = in_a_forked_child(|| {
            let err = ch.port1.post_message(&1u8, []).unwrap_err();
            let refused = matches!(err.kind(), PostErrorKind::WrongProcess);
            let try_refused = ch.port1.try_post_message(&1u8, []).is_err();
            if refused && try_refused { 0 } else { 1 }
        });
        assert_eq!(code, 0, "the forked copy's post was not refused");
        assert!(matches!(
            ch.port2.try_recv::<u8>(),
            Err(TryRecvError::Empty)
        ));
        ch.port1.post_message(&2u8, []).unwrap();
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 2);
    });
}

#[test]
fn a_forked_copy_cannot_receive_from_an_inherited_port_and_the_parent_loses_nothing() {
    common::isolated(
        "a_forked_copy_cannot_receive_from_an_inherited_port_and_the_parent_loses_nothing",
        || {
            let ch = MessageChannel::new().unwrap();
            for i in 0..3u8 {
                ch.port1.post_message(&i, []).unwrap();
            }
            let code = in_a_forked_child(|| {
                let tried = matches!(ch.port2.try_recv::<u8>(), Err(TryRecvError::Disconnected));
                let waited = matches!(ch.port2.recv::<u8>(), Err(RecvError::Disconnected));
                if tried && waited { 0 } else { 1 }
            });
            assert_eq!(code, 0, "the forked copy received");
            for i in 0..3u8 {
                assert_eq!(ch.port2.recv::<u8>().unwrap().data, i);
            }
        },
    );
}

#[test]
fn a_forked_copy_dropping_an_inherited_port_leaves_the_parents_channel_open() {
    common::isolated(
        "a_forked_copy_dropping_an_inherited_port_leaves_the_parents_channel_open",
        || {
            common::as_child(|port| {
                let n = port.recv::<u8>().unwrap().data;
                port.post_message(&(n + 1), []).unwrap();
                let _ = port.recv::<u8>(); // until the parent closes
            });
            let name = "a_forked_copy_dropping_an_inherited_port_leaves_the_parents_channel_open";
            let ch = MessageChannel::new().unwrap();
            let peer = common::spawn_test_child(name, ch.port2);
            let (code, port1) = with_a_forked_child(ch.port1, |port1| {
                drop(port1);
                0
            });
            assert_eq!(code, 0);
            port1.post_message(&41u8, []).unwrap();
            assert_eq!(port1.recv::<u8>().unwrap().data, 42);
            drop(port1);
            assert!(peer.wait().success());
        },
    );
}

#[test]
fn a_forked_copy_cannot_move_an_inherited_port_elsewhere() {
    common::isolated(
        "a_forked_copy_cannot_move_an_inherited_port_elsewhere",
        || {
            let ch = MessageChannel::new().unwrap();
            let inherited = MessageChannel::new().unwrap();
            let code = in_a_forked_child(|| {
                let own = MessageChannel::new().unwrap();
                let err = own
                    .port1
                    .post_message(&0u8, [inherited.port1.into()])
                    .unwrap_err();
                let transfer_refused = matches!(err.kind(), PostErrorKind::WrongProcess);
                let mut cmd = std::process::Command::new("true");
                let spawn_refused =
                    matches!(shmport::spawn(&mut cmd, ch.port2), Err(Error::WrongProcess));
                if transfer_refused && spawn_refused {
                    0
                } else {
                    1
                }
            });
            assert_eq!(code, 0, "an inherited port moved");
        },
    );
}

#[test]
fn a_pooled_buffer_dropped_in_a_forked_copy_stays_the_parents() {
    common::isolated(
        "a_pooled_buffer_dropped_in_a_forked_copy_stays_the_parents",
        || {
            let ch = MessageChannel::new().unwrap();
            let mut buf = ArrayBuffer::new(4096).unwrap();
            buf[0] = 9;
            let (code, buf) = with_a_forked_child(buf, |buf| {
                drop(buf);
                0
            });
            assert_eq!(code, 0);
            // Had the copy freed the slot, posting it would fail (its state is no longer ours).
            ch.port1.post_message(&0u8, [buf.into()]).unwrap();
            assert_eq!(ch.port2.recv::<u8>().unwrap().buffers[0][0], 9);
        },
    );
}

/// What the busy-poll protocol assumes of `fork` (`src/shm/polling.rs`): a process
/// registered for `membarrier`'s expedited barriers stays registered in its forked copy,
/// so the copy's writers may skip their fence as the parent's do. The kernel keeps both
/// registrations in one word of the address space, which `fork` copies and `exec` clears;
/// the private one is the one a process can check, because its barrier fails with `EPERM`
/// in a process that is not registered.
#[test]
fn a_forked_copy_keeps_its_parents_membarrier_registration() {
    common::isolated(
        "a_forked_copy_keeps_its_parents_membarrier_registration",
        || {
            const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
            const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
            // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
            let membarrier =
                |cmd: libc::c_long| unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
            if membarrier(REGISTER_PRIVATE_EXPEDITED) != 0 {
                eprintln!("membarrier is not available here: nothing to check");
                return;
            }
            assert_eq!(membarrier(PRIVATE_EXPEDITED), 0);
            let code = in_a_forked_child(|| i32::from(membarrier(PRIVATE_EXPEDITED) != 0));
            assert_eq!(code, 0, "the forked copy is not registered");
        },
    );
}
