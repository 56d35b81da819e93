//! What `shmport_ls` reads: the abstract socket table (`/proc/net/unix`) for this user's
//! endpoint and broadcast names, and `/proc/<pid>/{maps,fd}` for what a process holds.
//! Only std: anything here works on a machine without shmport's source.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

/// A name this user's processes listen on, and the processes that hold its socket.
#[derive(Debug, PartialEq, Eq)]
pub struct Listener {
    /// `Endpoint` or `BroadcastChannel`.
    pub kind: &'static str,
    /// The name as the program gave it.
    pub name: String,
    pub pids: Vec<u32>,
}

/// This user's live endpoints and broadcast channels, from the kernel's table of abstract
/// sockets (`@shmport/<uid>/<name>`; a broadcast channel's door is `bc/<name>.door`).
pub fn listeners(uid: u32) -> std::io::Result<Vec<Listener>> {
    let table = fs::read_to_string("/proc/net/unix")?;
    let prefix = format!("@shmport/{uid}/");
    let mut by_inode: BTreeMap<u64, (&'static str, String)> = BTreeMap::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path; a listener has state 01 and the
        // accept-connections flag (0x10000).
        let [_, _, _, flags, _, state, inode, path] = cols[..] else {
            continue;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & 0x1_0000 != 0);
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        if !listening || state != "01" {
            continue;
        }
        let entry = match rest.strip_prefix("bc/") {
            Some(b) => match broadcast_name(b) {
                Some(name) => ("BroadcastChannel", name.to_owned()),
                None => continue, // a broadcast's lock or body socket, not a member
            },
            None => ("Endpoint", rest.to_owned()),
        };
        if let Ok(inode) = inode.parse() {
            by_inode.insert(inode, entry);
        }
    }
    let owners = socket_owners(&by_inode.keys().copied().collect());
    // One line per name: a broadcast channel has a listener per member (its slot) and
    // one door, held by one of them.
    let mut merged: BTreeMap<(&'static str, String), Vec<u32>> = BTreeMap::new();
    for (inode, key) in by_inode {
        let pids = merged.entry(key).or_default();
        for &pid in owners.get(&inode).into_iter().flatten() {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    Ok(merged
        .into_iter()
        .map(|((kind, name), mut pids)| {
            pids.sort_unstable();
            Listener { kind, name, pids }
        })
        .collect())
}

/// The broadcast name of a listener under `bc/`: `<name>.door` (the door) or `<name>/<k>`
/// (member slot `k`); `None` for the others (`<name>/lock`, bodies `<name>.<token>`).
fn broadcast_name(rest: &str) -> Option<&str> {
    if let Some(name) = rest.strip_suffix(".door") {
        return Some(name);
    }
    let (name, slot) = rest.rsplit_once('/')?;
    (!slot.is_empty() && slot.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}

/// Which processes (that we may look into) hold a descriptor of each socket inode.
fn socket_owners(inodes: &BTreeSet<u64>) -> BTreeMap<u64, Vec<u32>> {
    let mut owners: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return owners;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue; // another user's process, or gone
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(inode) = inode.filter(|i| inodes.contains(i)) {
                let pids = owners.entry(inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    owners
}

/// The shared memory of one kind a process holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// Distinct objects (memfds) mapped or open.
    pub objects: usize,
    /// Of those, mapped into the process.
    pub mapped: usize,
    /// Bytes mapped.
    pub mapped_bytes: u64,
    /// Descriptors open on them.
    pub descriptors: usize,
}

/// What `pid` holds, by kind of shmport memory (`channel`, `heap`, `buffer`, `broadcast`,
/// ...: the memfd names are `shmport-<kind>`).
pub fn holdings(pid: u32) -> std::io::Result<BTreeMap<String, Holding>> {
    let mut objects: BTreeMap<String, BTreeMap<u64, (bool, u64, usize)>> = BTreeMap::new();
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    for line in maps.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // address perms offset dev inode path...
        let (Some(range), Some(inode), Some(kind)) = (cols.first(), cols.get(4), memfd_kind(&cols))
        else {
            continue;
        };
        let (Some((lo, hi)), Ok(inode)) = (range.split_once('-'), inode.parse::<u64>()) else {
            continue;
        };
        let len =
            u64::from_str_radix(hi, 16).unwrap_or(0) - u64::from_str_radix(lo, 16).unwrap_or(0);
        let o = objects.entry(kind).or_default().entry(inode).or_default();
        o.0 = true;
        o.1 += len;
    }
    for fd in fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let Some(target) = target.to_str() else {
            continue;
        };
        let parts: Vec<&str> = target.split_whitespace().collect();
        let Some(kind) = parts
            .first()
            .and_then(|p| p.strip_prefix("/memfd:shmport-"))
        else {
            continue;
        };
        // The descriptor does not say its inode: `fdinfo` does not either, but `stat` of
        // the link target does.
        let inode = fs::metadata(fd.path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let o = objects
            .entry(kind.to_owned())
            .or_default()
            .entry(inode.unwrap_or(0))
            .or_default();
        o.2 += 1;
    }
    Ok(objects
        .into_iter()
        .map(|(kind, objs)| {
            let h = Holding {
                objects: objs.len(),
                mapped: objs.values().filter(|o| o.0).count(),
                mapped_bytes: objs.values().map(|o| o.1).sum(),
                descriptors: objs.values().map(|o| o.2).sum(),
            };
            (kind, h)
        })
        .collect())
}

/// `channel`, `heap`, ... for a maps line of a shmport memfd (`/memfd:shmport-heap (deleted)`).
fn memfd_kind(cols: &[&str]) -> Option<String> {
    cols.get(5)?
        .strip_prefix("/memfd:shmport-")
        .map(str::to_owned)
}

/// This process's effective user id (from /proc, to stay within std).
pub fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(0)
}
