//! ONNX node-test conformance of the CPU executor, driven by
//! `tests/conformance/manifest.txt` (see `cc_tests::conformance` for the rules and
//! tolerances).
//!
//! Every case the manifest lists must pass. Every case of every claimed family must be
//! listed in the manifest or in `known_failures.txt`, and the counts are printed:
//! "conformance: N/M cases of the manifest pass" and "claimed families: P/T". After a
//! change to the executor, regenerate both files with
//! `cargo run --release -p cc-tests --bin conformance-manifest`.

use cc_tests::conformance::{
    case_dirs, case_name, claimed, claimed_counts, listed, manifest_dir, run_all,
};
use cc_tests::shared_dir;
use std::collections::BTreeSet;

fn read_list(file: &str) -> Vec<String> {
    let path = manifest_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    listed(&text)
}

#[test]
fn manifest_cases_pass_and_claimed_families_are_covered() {
    let Some(shared) = shared_dir() else { return };
    if case_dirs(&shared).is_empty() {
        cc_tests::skip::<()>("no ONNX node tests under shared/onnx-node-tests");
        return;
    }
    let manifest = read_list("manifest.txt");
    let known: BTreeSet<String> = read_list("known_failures.txt").into_iter().collect();
    assert!(!manifest.is_empty(), "the manifest lists no cases");
    let results = run_all(&shared).unwrap();

    let mut failures = Vec::new();
    let mut passed = 0;
    for name in &manifest {
        match results.get(name).map(|o| &o.result) {
            Some(Ok(())) => passed += 1,
            Some(Err(f)) => failures.push(format!("{name}: [{}] {}", f.kind.tag(), f.msg)),
            None => failures.push(format!("{name}: no such case folder")),
        }
    }
    println!(
        "conformance: {passed}/{} cases of the manifest pass",
        manifest.len()
    );
    let (p, t) = claimed_counts(&results);
    let fams = claimed(&results);
    println!(
        "claimed families: {p}/{t} cases pass ({} families: {})",
        fams.len(),
        fams.join(", ")
    );
    for f in &failures {
        println!("  FAIL {f}");
    }

    // Coverage: each case of a claimed family is in one of the two files.
    let listed_all: BTreeSet<&String> = manifest.iter().chain(&known).collect();
    let uncovered: Vec<&String> = results
        .iter()
        .filter(|(n, o)| fams.contains(&o.family) && !listed_all.contains(n))
        .map(|(n, _)| n)
        .collect();
    let newly_passing: Vec<&String> = known
        .iter()
        .filter(|n| results.get(*n).is_some_and(|o| o.result.is_ok()))
        .collect();
    if !newly_passing.is_empty() {
        println!(
            "note: {} known failures now pass (regenerate the manifest): {newly_passing:?}",
            newly_passing.len()
        );
    }
    assert!(
        failures.is_empty(),
        "{} manifest cases fail",
        failures.len()
    );
    assert!(
        uncovered.is_empty(),
        "cases of claimed families in neither manifest.txt nor known_failures.txt \
         (run `cargo run --release -p cc-tests --bin conformance-manifest`): {uncovered:?}"
    );
    let all: BTreeSet<String> = case_dirs(&shared).iter().map(|d| case_name(d)).collect();
    for n in &known {
        assert!(all.contains(n), "known failure {n} has no case folder");
    }
}
