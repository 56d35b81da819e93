//! The web's `port.onmessage = ...`, between two processes: the child sets a handler that
//! runs on its own thread for every message, and an error handler for the `messageerror`
//! case, while its main thread does other work.
//!
//! ```text
//! cargo run --release --example onmessage
//! ```

use std::process::Command;
use std::sync::mpsc;

use shmport::{MessageChannel, MessageEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(shmport::BOOTSTRAP_ENV).is_some() {
        return child();
    }
    let MessageChannel { port1, port2, .. } = MessageChannel::new()?;
    // Posted before the child even exists: delivered once its handler is set (S3).
    port1.post_message(&String::from("queued before the handler"), [])?;
    let mut child = shmport::spawn(&mut Command::new(std::env::current_exe()?), port2)?;
    for line in ["first", "second", "third"] {
        port1.post_message(&line.to_string(), [])?;
    }
    port1.post_message(&42u64, [])?; // the wrong type: the child's error handler sees it
    port1.post_message(&String::from("last"), [])?;
    let handled = port1.recv::<u64>()?.data;
    println!("parent: the child's handler took {handled} messages and 1 messageerror");
    drop(port1);
    child.wait()?;
    Ok(())
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let port = shmport::parent_port()?;
    let (done_tx, done) = mpsc::channel();
    let handler = port.on_message(
        move |ev: MessageEvent<String>| {
            let thread = std::thread::current();
            println!(
                "child [{}]: onmessage {:?}",
                thread.name().unwrap_or("?"),
                ev.data
            );
            if ev.data == "last" {
                done_tx.send(()).unwrap();
            }
        },
        |e| println!("child: onmessageerror: {e}"),
    )?;
    done.recv()?; // the main thread is free meanwhile
    let port = handler.stop()?;
    port.post_message(&5u64, [])?;
    Ok(())
}
