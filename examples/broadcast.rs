//! `BroadcastChannel` across three processes: each opens the same name, says hello, and
//! hears the other two (never itself); then the parent broadcasts a burst and each child
//! reports how fast it arrived.
//!
//! ```text
//! cargo run --release --example broadcast
//! ```

use std::process::Command;
use std::time::Instant;

use shmport::{BroadcastChannel, MessageChannel, MessagePort};

const BURST: u64 = 200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let name = format!("shmport-broadcast-demo-{}", std::process::id());
    let mut bc = BroadcastChannel::new(&name)?;
    // Each child gets a private port too, only to say "joined" and to report back.
    let mut children = Vec::new();
    let mut ports: Vec<MessagePort> = Vec::new();
    for i in 1..=2 {
        let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
        let mut cmd = Command::new(std::env::current_exe()?);
        children.push(shmport::spawn(&mut cmd, port2)?);
        port1.post_message(&(name.clone(), format!("child {i}")), [])?;
        port1.recv::<u8>()?; // joined
        ports.push(port1);
    }
    println!(
        "parent (pid {}): 3 channels named {name:?} are open",
        std::process::id()
    );
    for p in &ports {
        p.post_message(&0u8, [])?; // go
    }
    bc.post_message(&format!(
        "hello from the parent (pid {})",
        std::process::id()
    ))?;
    for _ in 0..2 {
        println!("parent heard: {}", bc.recv::<String>()?.data);
    }
    for p in &ports {
        p.recv::<u8>()?; // the child heard both hellos and waits for the burst
    }

    let start = Instant::now();
    for i in 0..BURST {
        bc.post_message(&i)?;
    }
    let posted = start.elapsed();
    println!(
        "parent: broadcast {BURST} messages to 2 receivers in {posted:.2?} ({:.1} M posts/s)",
        BURST as f64 / posted.as_secs_f64() / 1e6
    );
    for p in &ports {
        println!("{}", p.recv::<String>()?.data);
    }
    for mut c in children {
        c.wait()?;
    }
    Ok(())
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let port = shmport::parent_port()?;
    let (name, me) = port.recv::<(String, String)>()?.data;
    let mut bc = BroadcastChannel::new(&name)?;
    port.post_message(&0u8, [])?; // joined
    port.recv::<u8>()?; // go: everyone has joined
    bc.post_message(&format!("hello from {me} (pid {})", std::process::id()))?;
    for _ in 0..2 {
        println!("{me} heard: {}", bc.recv::<String>()?.data);
    }
    port.post_message(&0u8, [])?;
    let mut start = None;
    let mut got = 0u64;
    while got < BURST {
        // Hellos are all in; from here on only the parent's numbers arrive.
        let n = bc.recv::<u64>()?.data;
        start.get_or_insert_with(Instant::now);
        assert_eq!(n, got, "the parent's order holds");
        got += 1;
    }
    let took = start.map_or_else(Default::default, |s| s.elapsed());
    port.post_message(
        &format!(
            "{me}: received all {got} in order, {took:.2?} from the first ({:.1} M msgs/s)",
            got as f64 / took.as_secs_f64() / 1e6
        ),
        [],
    )?;
    Ok(())
}
