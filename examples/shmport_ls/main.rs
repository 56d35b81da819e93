//! `shmport_ls`: what shmport objects live on this machine, as `iox2` lists iceoryx2's.
//!
//! ```text
//! cargo run --release --example shmport_ls            # this user's endpoints and broadcast channels
//! cargo run --release --example shmport_ls -- <pid>   # the channels, pools and names a process holds
//! ```
//!
//! It reads the kernel's abstract socket table (`/proc/net/unix`, where endpoint and
//! broadcast names live: nothing is named on disk) and `/proc/<pid>/maps` and `fd` (the
//! memfds shmport creates are named `shmport-channel`, `shmport-heap`, ...). It needs no
//! access to the programs themselves, only permission to read their `/proc` entries.

mod scan;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1) {
        Some(arg) if arg == "-h" || arg == "--help" => {
            println!("usage: shmport_ls [pid]");
        }
        Some(pid) => show_process(pid.parse().map_err(|_| format!("not a pid: {pid}"))?)?,
        None => show_names()?,
    }
    Ok(())
}

fn show_names() -> std::io::Result<()> {
    let uid = scan::effective_uid();
    let names = scan::listeners(uid)?;
    if names.is_empty() {
        println!("no shmport endpoint or broadcast channel of user {uid} is live");
        return Ok(());
    }
    println!("{:<18} {:<40} served by", "kind", "name");
    for l in names {
        let pids: Vec<String> = l.pids.iter().map(u32::to_string).collect();
        let pids = if pids.is_empty() {
            String::from("(not visible)")
        } else {
            pids.join(", ")
        };
        println!("{:<18} {:<40} pid {pids}", l.kind, l.name);
    }
    Ok(())
}

fn show_process(pid: u32) -> std::io::Result<()> {
    let held = scan::holdings(pid)?;
    if held.is_empty() {
        println!("process {pid} holds no shmport shared memory");
    } else {
        println!("process {pid}:");
        println!(
            "{:<16} {:>8} {:>8} {:>14} {:>12}",
            "memory", "objects", "mapped", "mapped bytes", "descriptors"
        );
        for (kind, h) in &held {
            println!(
                "{:<16} {:>8} {:>8} {:>14} {:>12}",
                kind, h.objects, h.mapped, h.mapped_bytes, h.descriptors
            );
        }
    }
    let names: Vec<_> = scan::listeners(scan::effective_uid())?
        .into_iter()
        .filter(|l| l.pids.contains(&pid))
        .collect();
    for l in names {
        println!("serves {} {:?}", l.kind, l.name);
    }
    Ok(())
}
