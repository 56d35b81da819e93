//! The MDN "basic" Channel Messaging demo, between two processes.
//!
//! The parent creates a channel and hands `port2` to a child process (the web page handing
//! a port to its iframe); it sends a greeting, the child prints it and replies once, and
//! the parent prints the reply.
//!
//! ```text
//! cargo run --release --example basic
//! ```

use std::process::Command;

use shmport::MessageChannel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    let exe = std::env::current_exe()?;
    let mut child = shmport::spawn(&mut Command::new(exe), port2)?;
    println!(
        "parent {}: started child {}, handed it port2",
        std::process::id(),
        child.id()
    );

    port1.post_message(&String::from("Hello from the main page!"), [])?;
    let reply = port1.recv::<String>()?.data;
    println!("parent {}: {reply}", std::process::id());

    child.wait()?;
    Ok(())
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let port = shmport::parent_port()?;
    let greeting = port.recv::<String>()?.data;
    println!(
        "child  {}: Message received by child: \"{greeting}\"",
        std::process::id()
    );
    port.post_message(&String::from("Message back from the child process"), [])?;
    Ok(())
}
