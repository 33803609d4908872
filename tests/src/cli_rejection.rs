//! The check every failing `cc-compile` run must pass, shared by the cc-tests tests
//! and (through `#[path]`) the cc-cli tests.

use std::path::Path;
use std::process::Output;

/// Asserts a failed run: exit code 2, exactly one stderr line starting `error: ` and
/// containing every needle, no output file at `out` and no temporary file beside it.
pub fn assert_rejected(output: &Output, out: &Path, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in: {stderr}");
    }
    assert!(!out.exists(), "an output file was written");
    let dir = out.parent().unwrap_or(Path::new("."));
    let left = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        })
        .unwrap_or(false);
    assert!(!left, "temporary files left behind");
}
