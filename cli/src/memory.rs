//! Peak memory of this process, for the report.

/// Peak resident set size in bytes (Linux `VmHWM`), `None` where unavailable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_peak_rss_on_linux() {
        if cfg!(target_os = "linux") {
            let v = super::peak_rss_bytes().unwrap();
            assert!(v > 1024 * 1024, "peak RSS {v} bytes is implausibly small");
        }
    }
}
