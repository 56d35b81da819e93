//! Number formatting and the spread of ratios over repeated runs.

/// A per-unit figure (faults, switches or system calls per frame): more digits when small.
pub fn per(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// [`per`], or `n/a` where the figure was not measured.
pub fn per_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), per)
}

/// A machine-readable figure: `na` where it was not measured.
pub fn raw_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "na".to_string(), |x| format!("{x:.4}"))
}

/// A rate with a unit prefix: `1.23 M`.
pub fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

/// A duration in nanoseconds, in the unit that suits it.
pub fn nanos(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A length in bytes as `4 KiB`, `16 MiB`, or bytes when it is not a round number.
pub fn len(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes} B"),
            |(unit, name)| format!("{} {name}", bytes / unit),
        )
}

/// Parses `4k`, `1m`, `16MiB`, `4096`.
pub fn parse_len(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let s = s
        .strip_suffix("ib")
        .or_else(|| s.strip_suffix('b'))
        .unwrap_or(&s);
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 10),
        b'm' => (&s[..s.len() - 1], 20),
        b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    digits.parse::<usize>().ok()?.checked_mul(1 << shift)
}

/// Ratios collected over repeated runs, in first-seen order.
#[derive(Default)]
pub struct Spreads {
    /// (label for people, key for `SPREAD` lines, values)
    entries: Vec<(String, String, Vec<f64>)>,
}

impl Spreads {
    pub fn add(&mut self, label: &str, key: &str, value: f64) {
        match self.entries.iter_mut().find(|(_, k, _)| k == key) {
            Some((_, _, values)) => values.push(value),
            None => self
                .entries
                .push((label.to_string(), key.to_string(), vec![value])),
        }
    }

    /// Prints min - max and median of each ratio, readable and as `SPREAD` lines (or JSON).
    pub fn print(&self, runs: u32) {
        crate::say!("\nspread of the ratios over {runs} runs (min - max, median):");
        for (label, _, values) in &self.entries {
            let (min, max, median) = min_max_median(values);
            crate::say!("  {label:<44} {min:>7.2}x - {max:>7.2}x  (median {median:.2}x)");
        }
        for (_, key, values) in &self.entries {
            let (min, max, median) = min_max_median(values);
            crate::json::line(
                "SPREAD",
                format!("{key} runs={runs} min={min:.4} max={max:.4} median={median:.4}"),
            );
        }
    }
}

pub fn min_max_median(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (v[0], v[v.len() - 1], median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_parse_and_print() {
        assert_eq!(parse_len("4k"), Some(4096));
        assert_eq!(parse_len("1M"), Some(1 << 20));
        assert_eq!(parse_len("16MiB"), Some(16 << 20));
        assert_eq!(parse_len("100"), Some(100));
        assert_eq!(parse_len("x"), None);
        assert_eq!(len(16 << 20), "16 MiB");
        assert_eq!(len(100), "100 B");
    }
}
