//! The plugin host: loads third-party pass libraries built against the cc-plugin SDK
//! (`--plugin PATH`, the `CC_PLUGIN_PATH` folders) and registers their passes next to
//! the built-ins, so pipelines, `--list-passes` and reports treat them alike.
//!
//! Loading checks, in order: the file loads, it exports `cc_plugin_descriptor`, the
//! descriptor's ABI version is ours, the descriptor is well-formed, and no pass name is
//! taken. Any failure is a one-line [`PassError::Plugin`] naming the library, and
//! registers nothing. A plugin pass's failure or panic (caught inside the plugin by the
//! SDK) is an error of that pass; malformed or invalid output graphs are refused.
//! Libraries are never unloaded: their code and strings stay valid for the process.

mod descriptor;
mod runner;

use crate::error::PassError;
use crate::options::Options;
use crate::pass::Pass;
use crate::registry::{self, PassInfo};
use cc_plugin::abi::{DescriptorFn, DESCRIPTOR_SYMBOL};
use runner::{PassHandle, PluginPassInstance};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The environment variable listing folders whose plugins load at start-up.
pub const PLUGIN_PATH_VAR: &str = "CC_PLUGIN_PATH";

/// A loaded plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedPlugin {
    /// The name the plugin gives itself.
    pub name: String,
    /// The library file (canonical path).
    pub path: PathBuf,
    /// Its passes, in the plugin's order.
    pub passes: Vec<String>,
}

/// Everything loaded so far, and the run handles of their passes.
struct Host {
    plugins: Vec<LoadedPlugin>,
    passes: Vec<PassHandle>,
}

static HOST: Mutex<Host> = Mutex::new(Host {
    plugins: Vec::new(),
    passes: Vec::new(),
});

fn host() -> std::sync::MutexGuard<'static, Host> {
    HOST.lock().unwrap_or_else(|e| e.into_inner())
}

/// The constructor every plugin pass registers: finds the pass's handle by name.
fn create_plugin_pass(options: &Options) -> Result<Box<dyn Pass>, PassError> {
    let handle = host()
        .passes
        .iter()
        .find(|h| h.pass == options.pass())
        .copied()
        .ok_or_else(|| PassError::Plugin {
            plugin: "(unknown)".into(),
            message: format!("no loaded plugin provides pass {:?}", options.pass()),
        })?;
    Ok(Box::new(PluginPassInstance::new(handle, options)?))
}

/// Loads the plugin library at `path` and registers its passes. Loading the same file
/// again returns the earlier result.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, PassError> {
    let shown = path.display().to_string();
    let fail = |message: String| PassError::Plugin {
        plugin: shown.clone(),
        message,
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut host = host();
    if let Some(p) = host.plugins.iter().find(|p| p.path == canonical) {
        return Ok(p.clone());
    }
    // SAFETY: loading a library runs its initialisers; that is what a plugin is.
    let library = unsafe { libloading::Library::new(&canonical) }
        .map_err(|e| fail(format!("cannot load the library: {e}")))?;
    // SAFETY: the symbol's type is fixed by the plugin ABI.
    let describe = unsafe { library.get::<DescriptorFn>(DESCRIPTOR_SYMBOL.as_bytes()) }
        .map(|f| *f)
        .map_err(|_| {
            fail(format!(
                "the library does not export {DESCRIPTOR_SYMBOL} (not a cc-compile plugin?)"
            ))
        })?;
    // Never unloaded: pass functions and descriptor strings stay valid.
    std::mem::forget(library);
    // SAFETY: the descriptor function takes nothing and returns a pointer that `read`
    // validates before use.
    let spec = unsafe { descriptor::read(describe()) }.map_err(fail)?;
    let label: &'static str = Box::leak(format!("{} ({shown})", spec.name).into_boxed_str());
    let plugin_fail = |message: String| PassError::Plugin {
        plugin: label.to_string(),
        message,
    };
    for (i, p) in spec.passes.iter().enumerate() {
        if spec.passes[..i].iter().any(|q| q.name == p.name) {
            return Err(plugin_fail(format!("declares pass {:?} twice", p.name)));
        }
        if let Some(existing) = registry::find(p.name) {
            let owner = host
                .plugins
                .iter()
                .find(|l| l.passes.iter().any(|n| n == existing.name))
                .map_or("a built-in pass".to_string(), |l| {
                    format!("plugin {} ({})", l.name, l.path.display())
                });
            return Err(plugin_fail(format!(
                "pass {:?} is already provided by {owner}; nothing was loaded",
                p.name
            )));
        }
    }
    for p in &spec.passes {
        let summary = format!("{} [plugin {}]", p.summary, spec.name);
        let info: &'static PassInfo = Box::leak(Box::new(PassInfo {
            name: p.name,
            summary: Box::leak(summary.into_boxed_str()),
            options: p.options,
            create: create_plugin_pass,
        }));
        registry::register(info).map_err(|e| plugin_fail(e.to_string()))?;
        host.passes.push(PassHandle {
            plugin: label,
            pass: p.name,
            run: p.run,
            free_buffer: spec.free_buffer,
        });
    }
    let loaded = LoadedPlugin {
        name: spec.name,
        path: canonical,
        passes: spec.passes.iter().map(|p| p.name.to_string()).collect(),
    };
    host.plugins.push(loaded.clone());
    Ok(loaded)
}

/// Whether `path` looks like a shared library of this platform.
fn is_library(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
}

/// Loads every library in the folders of `list` (separated like `PATH`), in folder
/// order then file-name order. A folder that does not exist is an error.
pub fn load_plugin_dirs(list: &std::ffi::OsStr) -> Result<Vec<LoadedPlugin>, PassError> {
    let mut loaded = Vec::new();
    for dir in std::env::split_paths(list).filter(|d| !d.as_os_str().is_empty()) {
        let fail = |e: std::io::Error| PassError::Plugin {
            plugin: format!("folder {} (from {PLUGIN_PATH_VAR})", dir.display()),
            message: format!("cannot list it: {e}"),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(fail)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_library(p))
            .collect();
        files.sort();
        for f in files {
            loaded.push(load_plugin(&f)?);
        }
    }
    Ok(loaded)
}

/// The plugins loaded so far.
pub fn loaded_plugins() -> Vec<LoadedPlugin> {
    host().plugins.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_and_non_libraries_are_clear_errors() {
        let e = load_plugin(Path::new("/no/such/libx.so"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("plugin /no/such/libx.so: cannot open:"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("cc-plugin-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join(format!("libfake.{}", std::env::consts::DLL_EXTENSION));
        std::fs::write(&fake, b"not a library").unwrap();
        let e = load_plugin(&fake).unwrap_err().to_string();
        assert!(e.contains("cannot load the library"), "{e}");
        let e = load_plugin_dirs(dir.as_os_str()).unwrap_err().to_string();
        assert!(e.contains("libfake"), "{e}");
        let e = load_plugin_dirs(std::ffi::OsStr::new("/no/such/dir"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("folder /no/such/dir (from CC_PLUGIN_PATH)"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(loaded_plugins().is_empty());
    }
}
