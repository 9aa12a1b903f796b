//! What Linux's `/proc` says about a process: CPU time (`stat` utime + stime) and memory
//! (`status` VmRSS, VmHWM), plus the machine's load average. Linux only, like the benchmarks.

use std::sync::OnceLock;

use crate::Result;

/// `self` or a pid.
pub type Pid<'a> = &'a str;

/// User plus system CPU time so far, in seconds.
pub fn cpu_seconds(pid: Pid<'_>) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its closing ')' start at 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let i = n.checked_sub(3).ok_or("bad field")?;
        Ok(fields.get(i).ok_or("short /proc stat")?.parse()?)
    };
    let ticks = field(14)? + field(15)?;
    Ok(ticks as f64 / clock_ticks())
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/PID/status`, in MiB.
pub fn memory_mib(pid: Pid<'_>, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line =
        status.lines().find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':'))).ok_or_else(|| format!("no {key} for {pid}"))?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("unreadable /proc status")?.parse()?;
    Ok(kib as f64 / 1024.0)
}

/// `USER_HZ`, the unit of `/proc/PID/stat` times (100 on every usual Linux build).
fn clock_ticks() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// CPU seconds used between two readings, as a percentage of one core over `secs`.
pub fn percent(before: f64, after: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        (after - before).max(0.0) / secs * 100.0
    } else {
        0.0
    }
}
