//! Two programs started separately, from two shells, talking through a named endpoint —
//! the native analogue of posting a port to another window.
//!
//! ```text
//! shell 1: cargo run --release --example service -- serve
//! shell 2: cargo run --release --example service -- call hello world
//! ```
//!
//! The server answers each line with its upper-case form and how many it has served; the
//! client prints each answer and the round-trip time. `serve --once` exits after one client.

use std::time::Instant;

use shmport::Endpoint;

const NAME: &str = "shmport-service-demo";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(args.iter().any(|a| a == "--once")),
        Some("call") => call(&args[1..]),
        _ => {
            eprintln!("usage: service serve [--once] | service call WORDS...");
            std::process::exit(2);
        }
    }
}

fn serve(once: bool) -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = Endpoint::bind(NAME)?;
    println!(
        "serving endpoint {:?} (pid {})",
        endpoint.name(),
        std::process::id()
    );
    let mut clients = 0u64;
    loop {
        let port = endpoint.accept()?;
        clients += 1;
        println!("client {clients} connected");
        let worker = std::thread::spawn(move || {
            let mut served = 0u64;
            while let Ok(ev) = port.recv::<String>() {
                served += 1;
                let reply = format!("{} (#{served})", ev.data.to_uppercase());
                if port.post_message(&reply, []).is_err() {
                    break;
                }
            }
            served
        });
        if once {
            println!(
                "client {clients} done after {} messages",
                worker.join().unwrap_or(0)
            );
            return Ok(());
        }
    }
}

fn call(words: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let port = Endpoint::connect(NAME)?;
    println!("connected to {NAME:?} in {:?}", start.elapsed());
    let words: Vec<String> = if words.is_empty() {
        vec![
            "hello".into(),
            "from".into(),
            "another".into(),
            "shell".into(),
        ]
    } else {
        words.to_vec()
    };
    for w in &words {
        let t = Instant::now();
        port.post_message(w, [])?;
        let reply = port.recv::<String>()?.data;
        println!("{w:>12} -> {reply:<20} round trip {:?}", t.elapsed());
    }
    Ok(())
}
