//! The process's own figures for `/metrics`, under Prometheus's standard
//! names, read from procfs: resident memory, CPU time, open descriptors and
//! threads. What a node's operator watches for growth over days.

/// One reading; `None` where procfs is not there (not Linux).
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub threads: u64,
}

impl ProcessStats {
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        // SAFETY: sysconf only reads a system constant.
        let (page, ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        let mut stats = parse(&stat, &statm, page.max(1) as u64, ticks.max(1) as u64)?;
        stats.open_fds = open_fds;
        Some(stats)
    }

    /// The gauges and the counter in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (name, help, kind, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                self.resident_bytes as f64,
            ),
            (
                "process_cpu_seconds_total",
                "User and system CPU time spent in seconds.",
                "counter",
                self.cpu_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                self.open_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                "gauge",
                self.threads as f64,
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        text
    }
}

/// `/proc/self/stat` and `/proc/self/statm` as the kernel writes them. The
/// command name in `stat` is in parentheses and may hold spaces, so fields
/// are counted from the last `)`.
fn parse(stat: &str, statm: &str, page: u64, ticks: u64) -> Option<ProcessStats> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from the state (field 3): utime is 14, stime 15, threads 20.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessStats {
        resident_bytes: resident_pages * page,
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks as f64,
        open_fds: 0,
        threads: field(20)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_command_name() {
        let stat = "4242 (live kit) ingress) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    250 150 0 0 20 0 7 0 12345 300000000 9000 18446744073709551615";
        let stats = parse(stat, "75000 9000 2000 100 0 20000 0", 4096, 100).expect("parsed");
        assert_eq!(stats.resident_bytes, 9000 * 4096);
        assert_eq!(stats.cpu_seconds, 4.0);
        assert_eq!(stats.threads, 7);
    }

    #[test]
    fn truncated_stat_is_none_not_a_panic() {
        assert_eq!(parse("12 (x) S 1 2", "1 2", 4096, 100), None);
        assert_eq!(parse("no parenthesis", "1 2", 4096, 100), None);
        assert_eq!(parse("1 (x) S", "", 4096, 100), None);
    }

    #[test]
    fn this_process_reads() {
        let stats = ProcessStats::read().expect("procfs");
        assert!(stats.resident_bytes > 0 && stats.threads >= 1 && stats.open_fds >= 3);
        assert!(stats.render().contains("process_resident_memory_bytes "));
    }
}
