//! Regenerates tests/conformance/manifest.txt and known_failures.txt by running every
//! ONNX node-test case with the CPU executor (see `cc_tests::conformance`).
//!
//! Usage: `cargo run --release -p cc-tests --bin conformance-manifest`

use cc_tests::conformance::{claimed, claimed_counts, manifest_dir, render, run_all};
use std::process::ExitCode;

fn main() -> ExitCode {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if !shared.join("onnx-node-tests").is_dir() {
        eprintln!(
            "conformance-manifest: {} has no onnx-node-tests folder",
            shared.display()
        );
        return ExitCode::FAILURE;
    }
    let results = match run_all(&shared) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("conformance-manifest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (manifest, known) = render(&results);
    let dir = manifest_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("manifest.txt"), &manifest))
        .and_then(|()| std::fs::write(dir.join("known_failures.txt"), &known));
    if let Err(e) = written {
        eprintln!("conformance-manifest: cannot write {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let (pass, total) = claimed_counts(&results);
    let pass_all = results.values().filter(|o| o.result.is_ok()).count();
    println!(
        "all cases: {pass_all}/{} pass; claimed families: {} with {pass}/{total} cases passing",
        results.len(),
        claimed(&results).len(),
    );
    println!("wrote {}", dir.display());
    ExitCode::SUCCESS
}
