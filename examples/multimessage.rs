//! The MDN "multimessage" Channel Messaging demo, between two processes.
//!
//! The parent sends each line of standard input (or, when standard input is a terminal, a
//! built-in list of lines) to a child process. The child keeps a numbered list of what it
//! received and acknowledges each line; the parent prints every acknowledgement.
//!
//! ```text
//! cargo run --release --example multimessage
//! printf 'one\ntwo\nthree\n' | cargo run --release --example multimessage
//! ```

use std::io::{BufRead, IsTerminal};
use std::process::Command;

use shmport::MessageChannel;

const BUILT_IN: &[&str] = &[
    "Buy milk",
    "Walk the dog",
    "Write the shared-memory layout spec",
    "Measure the round trip",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    let mut child = shmport::spawn(&mut Command::new(std::env::current_exe()?), port2)?;

    let stdin = std::io::stdin();
    let lines: Vec<String> = if stdin.is_terminal() {
        BUILT_IN.iter().map(|s| s.to_string()).collect()
    } else {
        stdin.lock().lines().collect::<Result<_, _>>()?
    };
    for line in &lines {
        port1.post_message(line, [])?;
        println!("{}", port1.recv::<String>()?.data);
    }
    drop(port1); // the child sees Disconnected and prints its list
    child.wait()?;
    Ok(())
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let port = shmport::parent_port()?;
    let mut list = Vec::new();
    while let Ok(ev) = port.recv::<String>() {
        port.post_message(&format!("Message received by child: \"{}\"", ev.data), [])?;
        list.push(ev.data);
    }
    eprintln!("child's list:");
    for (i, item) in list.iter().enumerate() {
        eprintln!("{:>3}. {item}", i + 1);
    }
    Ok(())
}
