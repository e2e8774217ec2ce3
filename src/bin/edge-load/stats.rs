//! What the load generator measures with: a process-wide microsecond clock, a latency
//! histogram, and a process's CPU time and memory read from /proc.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the first call in this process (the clock every thread stamps with).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// 64 random bits (from the standard library's per-process random hash keys).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

pub fn random_hex(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    while s.len() < bytes * 2 {
        s.push_str(&format!("{:016x}", random_u64()));
    }
    s.truncate(bytes * 2);
    s
}

/// A client mask key that is never all zero.
pub fn mask_key() -> [u8; 4] {
    let k = (random_u64() as u32) | 0x0101_0101;
    k.to_le_bytes()
}

/// Latencies in µs: exact below 1024, then 64 buckets per power of two (under 1.6 % error).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    pub max: u64,
    pub n: u64,
}

const SUB: u32 = 6;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 1024 + (64 - 10) * (1 << SUB)],
            max: 0,
            n: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 1024 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // ≥ 10
        let sub = (v >> (exp - SUB)) as usize & ((1 << SUB) - 1);
        1024 + (exp as usize - 10) * (1 << SUB) + sub
    }

    /// The lower bound of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 1024 {
            return i as u64;
        }
        let j = i - 1024;
        let exp = (j >> SUB) as u32 + 10;
        let sub = (j & ((1 << SUB) - 1)) as u64;
        (1u64 << exp) | (sub << (exp - SUB))
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.max = self.max.max(v);
        self.n += 1;
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.max = self.max.max(o.max);
        self.n += o.n;
    }

    /// The value at quantile `q` (0..=1), as the lower bound of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        if rank == self.n {
            return self.max;
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

/// Order and loss accounting for one numbered stream: the sequence numbers one receiver sees,
/// expected to be 0, 1, 2, … .
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Sequence {
    /// The next number expected.
    pub next: u64,
    /// Numbers skipped over (a later one arrived first); each may still arrive late.
    pub gaps: u64,
    /// Numbers that arrived after a later one, or twice.
    pub reordered: u64,
}

impl Sequence {
    pub fn see(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            self.gaps += seq - self.next;
            self.next = seq + 1;
        } else {
            self.reordered += 1;
        }
    }
}

/// Clock ticks per second for /proc CPU times.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// User + system CPU time of a process (all its threads), in clock ticks; `None` once it is
/// gone. `pid` is a number or `self`.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    cpu_split(pid).map(|(user, sys)| user + sys)
}

/// User and system CPU time of a process (all its threads), or of one thread
/// (`"self/task/<tid>"`), in clock ticks; `None` once it is gone.
pub fn cpu_split(pid: &str) -> Option<(u64, u64)> {
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Whether a process is running (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 2..].chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Busy clock ticks of the whole machine since boot: the first line of /proc/stat, all but
/// idle and iowait.
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    total.saturating_sub(f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0))
}

/// The machine's CPUs (all of them, whatever this process is pinned to).
pub fn machine_cpus() -> usize {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let n = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    n.max(1)
}

/// A `Vm…:` line of `/proc/<pid>/status` in KiB (0 if unreadable).
pub fn status_kib(pid: &str, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_counts_gaps_and_late_arrivals() {
        let mut s = Sequence::default();
        for v in [0, 1, 2] {
            s.see(v);
        }
        assert_eq!((s.next, s.gaps, s.reordered), (3, 0, 0));
        s.see(5); // 3 and 4 skipped
        assert_eq!((s.next, s.gaps, s.reordered), (6, 2, 0));
        s.see(3); // late
        s.see(5); // twice
        assert_eq!((s.next, s.gaps, s.reordered), (6, 2, 2));
        s.see(6);
        assert_eq!((s.next, s.gaps, s.reordered), (7, 2, 2));
    }

    #[test]
    fn histogram_merge_and_small_values_are_exact() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in 0..100u64 {
            a.record(v);
        }
        for v in 900..1000u64 {
            b.record(v);
        }
        assert_eq!(a.quantile(0.5), 49);
        a.merge(&b);
        assert_eq!(a.n, 200);
        assert_eq!(a.max, 999);
        assert_eq!(a.quantile(0.5), 99);
        assert_eq!(a.quantile(0.505), 900);
        assert_eq!(a.quantile(0.51), 901);
        assert_eq!(a.quantile(0.99), 997);
        assert_eq!(Histogram::default().quantile(0.99), 0);
    }

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.quantile(0.00001), 1);
        for v in [0u64, 1023, 1024, 1 << 20, u64::MAX / 2] {
            assert!(Histogram::value(Histogram::index(v)) <= v);
        }
    }
}
