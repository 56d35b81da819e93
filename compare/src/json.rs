//! The machine-readable output: every `RESULT`, `RATIO` and `SPREAD` line a mode prints goes
//! through [`line`], which prints it (text output) or keeps it for one JSON document printed
//! at the end (`--json`). The JSON carries the same figures under the same names, so a
//! script can read either.
//!
//! With `--json`, stdout holds the JSON document alone and the human-readable tables go to
//! stderr (see [`say!`](crate::say)).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);
static LINES: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

/// Switches to JSON output for the rest of the process.
pub fn enable() {
    JSON.store(true, Ordering::Relaxed);
}

/// Whether `--json` was given.
pub fn enabled() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Prints a human-readable line: to stdout, or to stderr under `--json`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::json::enabled() {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

/// A machine-readable line of `kind` (`RESULT`, `RATIO`, `SPREAD`): `key=value` fields
/// separated by spaces, values without spaces (`na` where a figure was not measured).
pub fn line(kind: &'static str, fields: String) {
    if enabled() {
        LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((kind, fields));
    } else {
        println!("{kind} {fields}");
    }
}

/// Under `--json`, prints the document: what ran where, then the lines kept so far, each an
/// object of its fields, in three arrays (`results`, `ratios`, `spreads`).
pub fn finish(mode: &str) {
    if !enabled() {
        return;
    }
    let lines = std::mem::take(&mut *LINES.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"tool\": \"shmport-compare\",");
    let _ = writeln!(out, "  \"mode\": {},", string(mode));
    let _ = writeln!(
        out,
        "  \"cpus\": {},",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(out, "  \"load_average\": [{}],", load_average().join(", "));
    let _ = writeln!(out, "  \"busy_loops\": {},", crate::load::running());
    let groups = [
        ("results", "RESULT"),
        ("ratios", "RATIO"),
        ("spreads", "SPREAD"),
    ];
    for (i, (name, kind)) in groups.iter().enumerate() {
        let objects: Vec<String> = lines
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, fields)| format!("    {}", object(fields)))
            .collect();
        let comma = if i + 1 < groups.len() { "," } else { "" };
        if objects.is_empty() {
            let _ = writeln!(out, "  \"{name}\": []{comma}");
        } else {
            let _ = writeln!(out, "  \"{name}\": [\n{}\n  ]{comma}", objects.join(",\n"));
        }
    }
    out.push('}');
    println!("{out}");
}

/// The 1, 5 and 15 minute load averages, as JSON numbers (none where unreadable).
fn load_average() -> Vec<String> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter(|v| v.parse::<f64>().is_ok())
        .map(str::to_string)
        .collect()
}

/// `a=1 b=x c=na` as `{"a": 1, "b": "x", "c": null}`.
fn object(fields: &str) -> String {
    let members: Vec<String> = fields
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| format!("{}: {}", string(k), value(v)))
        .collect();
    format!("{{{}}}", members.join(", "))
}

fn value(v: &str) -> String {
    match v {
        "na" => return "null".to_string(),
        "true" | "false" => return v.to_string(),
        _ => {}
    }
    if v.parse::<u64>().is_ok() || v.parse::<i64>().is_ok() {
        return v.to_string();
    }
    match v.parse::<f64>() {
        // Rust's float syntax is wider than JSON's (`+1`, `.5`): print it again.
        Ok(x) if x.is_finite() => format!("{x}"),
        Ok(_) => "null".to_string(),
        Err(_) => string(v),
    }
}

fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_an_object_with_numbers_nulls_and_strings() {
        assert_eq!(
            object("mode=small run=1 p50_ns=648 sys=na ok=true name=a\"b"),
            r#"{"mode": "small", "run": 1, "p50_ns": 648, "sys": null, "ok": true, "name": "a\"b"}"#
        );
        assert_eq!(value("NaN"), "null");
        assert_eq!(value("+.5"), "0.5");
        assert_eq!(value("-3"), "-3");
    }
}
