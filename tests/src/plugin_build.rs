//! Builds the workspace's plugin crates (cdylibs) and the `cc-compile` binary for the
//! plugin tests, once per test process, with the same cargo that runs the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The built plugin libraries.
#[derive(Clone, Debug)]
pub struct PluginLibs {
    /// The example plugin (`lamp` pass).
    pub lamp: PathBuf,
    /// Passes that panic, fail, or return malformed or invalid IR.
    pub faulty: PathBuf,
    /// A descriptor of the next ABI version.
    pub future_abi: PathBuf,
    /// The `cc-compile` binary.
    pub cc_compile: PathBuf,
}

/// The repository root.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `lib<name>.so` (or the platform's form) in `dir`.
fn library(dir: &Path, crate_name: &str) -> PathBuf {
    dir.join(format!(
        "{}{crate_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// Builds the three plugin crates and cc-compile in release mode into the workspace's target folder
/// (the tests' own build has released its lock by the time tests run); the error is
/// cargo's output.
pub fn build_plugins() -> Result<&'static PluginLibs, String> {
    static BUILT: OnceLock<Result<PluginLibs, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--release", "--quiet"])
                .args(["-p", "cc-plugin-lamp"])
                .args(["-p", "cc-plugin-faulty"])
                .args(["-p", "cc-plugin-future-abi"])
                .args(["-p", "cc-cli", "--bin", "cc-compile", "--lib"])
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building the plugins failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            let dir = if target.is_absolute() {
                target.join("release")
            } else {
                root.join(target).join("release")
            };
            Ok(PluginLibs {
                lamp: library(&dir, "cc_plugin_lamp"),
                faulty: library(&dir, "cc_plugin_faulty"),
                future_abi: library(&dir, "cc_plugin_future_abi"),
                cc_compile: dir.join(format!("cc-compile{}", std::env::consts::EXE_SUFFIX)),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}
