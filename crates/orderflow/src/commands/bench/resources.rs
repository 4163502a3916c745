//! What the run cost the machine: CPU seconds of the whole machine (every process: the servers too) and the
//! peak resident memory of this process, read from Linux's `/proc`.

/// Ticks per second of `/proc/stat` (USER_HZ, 100 on every mainstream Linux architecture).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds the whole machine has spent busy since boot (user, nice, system, irq, softirq, steal), when
/// `/proc/stat` can be read.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Some(busy / TICKS_PER_SEC)
}

/// This process's peak resident set size in bytes (`VmHWM`), when `/proc/self/status` can be read.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sums every sample of metric `name` in a Prometheus text snapshot (all label sets).
pub fn metric_sum(snapshot: &str, name: &str) -> f64 {
    snapshot
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_label_set_of_one_metric_only() {
        let text = "# TYPE a counter\na{client=\"x\"} 2\na{client=\"y\"} 3\nab 100\na 1\n";
        assert_eq!(metric_sum(text, "a"), 6.0);
        assert_eq!(metric_sum(text, "ab"), 100.0);
        assert_eq!(metric_sum(text, "missing"), 0.0);
    }

    #[test]
    fn reads_this_machine() {
        assert!(machine_busy_secs().is_some_and(|s| s > 0.0));
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
