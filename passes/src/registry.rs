//! The pass registry: every built-in (and linked-in) pass submits a [`PassInfo`].

use crate::error::PassError;
use crate::options::{OptionSpec, Options};
use crate::pass::Pass;
use std::sync::RwLock;

/// A registered pass: name, summary, option schema and constructor.
pub struct PassInfo {
    /// Name used in pipelines.
    pub name: &'static str,
    /// One-line summary (shown by `cc-compile --list-passes`).
    pub summary: &'static str,
    /// Option schema.
    pub options: &'static [OptionSpec],
    /// Builds an instance from parsed options.
    pub create: fn(&Options) -> Result<Box<dyn Pass>, PassError>,
}

impl PassInfo {
    /// Parses `given` (key, value) pairs against this pass's schema.
    pub fn parse_options(&self, given: &[(String, String)]) -> Result<Options, PassError> {
        Options::parse(self.name, self.options, given)
    }

    /// An instance with default options.
    pub fn create_default(&self) -> Result<Box<dyn Pass>, PassError> {
        (self.create)(&Options::defaults(self.name, self.options)?)
    }
}

inventory::collect!(PassInfo);

/// Passes registered at run time (by plugins); never removed.
static DYNAMIC: RwLock<Vec<&'static PassInfo>> = RwLock::new(Vec::new());

/// The run-time registrations (a poisoned lock still holds a consistent list: entries
/// are only ever pushed whole).
fn dynamic() -> Vec<&'static PassInfo> {
    DYNAMIC.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Registers a pass at run time (what the plugin host does for each plugin pass).
/// A name already taken — by a built-in or an earlier registration — is an error
/// naming it; the registry is left unchanged.
pub fn register(info: &'static PassInfo) -> Result<(), PassError> {
    let mut list = DYNAMIC.write().unwrap_or_else(|e| e.into_inner());
    let builtin = inventory::iter::<PassInfo>
        .into_iter()
        .any(|p| p.name == info.name);
    if builtin || list.iter().any(|p| p.name == info.name) {
        return Err(PassError::Ir(cc_ir::Error::invalid(format!(
            "pass {:?} is already registered{}",
            info.name,
            if builtin { " (a built-in pass)" } else { "" }
        ))));
    }
    list.push(info);
    Ok(())
}

/// All registered passes, sorted by name.
pub fn all_passes() -> Vec<&'static PassInfo> {
    let mut v: Vec<&'static PassInfo> = inventory::iter::<PassInfo>.into_iter().collect();
    v.extend(dynamic());
    v.sort_by_key(|p| p.name);
    v
}

/// The pass registered under `name`.
pub fn find(name: &str) -> Option<&'static PassInfo> {
    inventory::iter::<PassInfo>
        .into_iter()
        .find(|p| p.name == name)
        .or_else(|| dynamic().into_iter().find(|p| p.name == name))
}

/// The pass registered under `name`, or an error listing all registered names.
pub fn lookup(name: &str) -> Result<&'static PassInfo, PassError> {
    find(name).ok_or_else(|| PassError::UnknownPass {
        name: name.to_string(),
        known: all_passes().iter().map(|p| p.name.to_string()).collect(),
    })
}

/// A listing of all registered passes for `--list-passes`: one line per pass (name and
/// summary, names aligned), then one indented line per option with kind, default and help.
pub fn describe_passes() -> String {
    let passes = all_passes();
    let width = passes.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for p in passes {
        out.push_str(&format!("{:width$}  {}\n", p.name, p.summary));
        for o in p.options {
            out.push_str(&format!(
                "{:width$}    {}=<{}> (default {}): {}\n",
                "",
                o.name,
                o.kind.describe(),
                o.default,
                o.help
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_are_registered_sorted_and_unique() {
        let names: Vec<&str> = all_passes().iter().map(|p| p.name).collect();
        for want in [
            "canonicalize",
            "dce",
            "fold",
            "fold-batchnorm",
            "remove-identity",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        for p in all_passes() {
            assert!(
                !p.summary.is_empty() && !p.summary.contains('\n'),
                "{}",
                p.name
            );
            let pass = p.create_default().unwrap();
            assert_eq!(pass.name(), p.name);
        }
    }

    #[test]
    fn listing_shows_summaries_and_options() {
        let text = describe_passes();
        let fold = text.lines().find(|l| l.starts_with("fold ")).unwrap();
        assert!(fold.contains(find("fold").unwrap().summary), "{text}");
        assert!(text.contains("growth=<a number> (default 4)"), "{text}");
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        let all: Vec<&str> = all_passes().iter().map(|p| p.name).collect();
        assert_eq!(names, all);
    }

    #[test]
    fn unknown_pass_lists_all() {
        let e = lookup("flod").err().unwrap().to_string();
        assert!(
            e.starts_with("unknown pass \"flod\"; registered passes: "),
            "{e}"
        );
        assert!(e.contains("canonicalize, codebook, dce, fold"), "{e}");
        assert!(find("fold").is_some());
    }
}
