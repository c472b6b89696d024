//! This process's resident memory, as Linux reports it in `/proc/self/status`; `None` elsewhere.

/// Resident memory now, in MB (MiB).
pub(crate) fn resident_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

/// The most resident memory so far, in MB (MiB).
pub(crate) fn peak_resident_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

fn status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
