//! Counts nothing itself: run under `valgrind --tool=callgrind` to count the instructions
//! of 100,000 posts and receives on one thread: of a 64-byte message (received with `recv`,
//! or with `try_recv` given `try` as the argument), or with `transfer` as the argument, of
//! a `u64` with a fresh pooled 4 KiB `ArrayBuffer` moved in the transfer list (unzeroed:
//! the count is of the transfer, not of a memset), or with `broadcast`, of a 64-byte
//! message posted on one `BroadcastChannel` and received on another of the same name.
fn main() {
    if std::env::args().nth(1).as_deref() == Some("broadcast") {
        let name = format!("hot-path-count-{}", std::process::id());
        let mut tx = shmport::BroadcastChannel::new(&name).unwrap();
        let mut rx = shmport::BroadcastChannel::new(&name).unwrap();
        let msg = [7u8; 64];
        for _ in 0..100_000 {
            tx.post_message(&msg).unwrap();
            std::hint::black_box(rx.recv::<[u8; 64]>().unwrap().data);
        }
        return;
    }
    let ch = shmport::MessageChannel::new().unwrap();
    if std::env::args().nth(1).as_deref() == Some("transfer") {
        for i in 0..100_000u64 {
            let frame = shmport::ArrayBuffer::new_unzeroed(4096).unwrap();
            ch.port1.post_message(&i, [frame.into()]).unwrap();
            let ev = ch.port2.recv::<u64>().unwrap();
            std::hint::black_box((ev.data, &ev.buffers));
        }
        return;
    }
    let msg = [7u8; 64];
    let with_try_recv = std::env::args().nth(1).as_deref() == Some("try");
    for _ in 0..100_000 {
        ch.port1.post_message(&msg, []).unwrap();
        let ev = if with_try_recv {
            ch.port2.try_recv::<[u8; 64]>().unwrap()
        } else {
            ch.port2.recv::<[u8; 64]>().unwrap()
        };
        std::hint::black_box(ev.data);
    }
}
