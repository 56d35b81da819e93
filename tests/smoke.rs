use shmport::MessageChannel;
#[test]
fn smoke() {
    let ch = MessageChannel::new().unwrap();
    for i in 0..100_000u64 {
        ch.port1.post_message(&(i, format!("m{i}")), []).unwrap();
        let ev = ch.port2.recv::<(u64, String)>().unwrap();
        assert_eq!(ev.data.0, i);
    }
    let t = std::thread::spawn(move || {
        let mut n = 0u64;
        while let Ok(ev) = ch.port2.recv::<u64>() { assert_eq!(ev.data, n); n += 1; }
        n
    });
    let p = ch.port1;
    for i in 0..1_000_000u64 { p.post_message(&i, []).unwrap(); }
    drop(p);
    assert_eq!(t.join().unwrap(), 1_000_000);
}
