//! Reading a plugin's C descriptor into owned, validated Rust data. Everything the
//! library hands over is checked (ABI version first, then pointers, UTF-8, names,
//! option schemas) and copied; nothing here trusts the plugin.

use crate::options::{OptionKind, OptionSpec};
use crate::pipeline::is_word;
use cc_plugin::abi::{
    option_kind, CcFreeFn, CcOptionSpec, CcPassDescriptor, CcPluginDescriptor, CcRunFn, CcStr,
    ABI_VERSION,
};

/// Limits that catch a corrupt descriptor before it is read further.
const MAX_PASSES: usize = 1024;
const MAX_OPTIONS: usize = 256;

/// One pass a plugin offers, copied out of its descriptor.
pub(super) struct PassSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub options: &'static [OptionSpec],
    pub run: CcRunFn,
}

/// A plugin's descriptor, copied and validated.
pub(super) struct PluginSpec {
    pub name: String,
    pub passes: Vec<PassSpec>,
    pub free_buffer: CcFreeFn,
}

/// Text kept for the rest of the process (plugins are never unloaded, and the
/// registry holds `'static` names).
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// A descriptor string, copied.
///
/// # Safety
/// `s` must come from a descriptor whose library is loaded.
unsafe fn text(s: CcStr, what: &str) -> Result<String, String> {
    unsafe { s.to_str() }
        .map(str::to_owned)
        .map_err(|e| format!("{what}: {e}"))
}

/// Reads the descriptor at `d`.
///
/// # Safety
/// `d` must be what the library's descriptor function returned, with the library
/// still loaded.
pub(super) unsafe fn read(d: *const CcPluginDescriptor) -> Result<PluginSpec, String> {
    if d.is_null() {
        return Err("its descriptor function returned null (the plugin failed to start)".into());
    }
    // The version is the one field every ABI version shares: read it alone first.
    let version = unsafe { std::ptr::read(d.cast::<u32>()) };
    if version != ABI_VERSION {
        return Err(format!(
            "built for plugin ABI version {version}, but this cc-compile speaks version \
             {ABI_VERSION}; rebuild the plugin against the matching cc-plugin SDK"
        ));
    }
    let d = unsafe { &*d };
    let name = unsafe { text(d.name, "plugin name") }?;
    let free_buffer = d
        .free_buffer
        .ok_or("its descriptor has no free_buffer function")?;
    if d.passes_len > MAX_PASSES {
        return Err(format!("its descriptor claims {} passes", d.passes_len));
    }
    if d.passes_len > 0 && d.passes.is_null() {
        return Err("its descriptor's pass list is null".into());
    }
    let mut passes = Vec::with_capacity(d.passes_len);
    for i in 0..d.passes_len {
        let p = unsafe { &*d.passes.add(i) };
        passes.push(unsafe { read_pass(p) }.map_err(|e| format!("pass #{i}: {e}"))?);
    }
    Ok(PluginSpec {
        name,
        passes,
        free_buffer,
    })
}

/// Reads one pass descriptor.
///
/// # Safety
/// As [`read`].
unsafe fn read_pass(p: &CcPassDescriptor) -> Result<PassSpec, String> {
    let name = unsafe { text(p.name, "name") }?;
    if name.is_empty() || !name.chars().all(is_word) {
        return Err(format!(
            "pass name {name:?} is not a pipeline word (letters, digits, - _ . : /)"
        ));
    }
    let summary = unsafe { text(p.summary, "summary") }?.replace('\n', " ");
    let run = p
        .run
        .ok_or_else(|| format!("pass {name:?} has no run function"))?;
    if p.options_len > MAX_OPTIONS {
        return Err(format!("pass {name:?} claims {} options", p.options_len));
    }
    if p.options_len > 0 && p.options.is_null() {
        return Err(format!("pass {name:?}: its option list is null"));
    }
    let mut options = Vec::with_capacity(p.options_len);
    for i in 0..p.options_len {
        let o = unsafe { &*p.options.add(i) };
        options.push(unsafe { read_option(o) }.map_err(|e| format!("pass {name:?}: {e}"))?);
    }
    Ok(PassSpec {
        name: leak(&name),
        summary: leak(&summary),
        options: Box::leak(options.into_boxed_slice()),
        run,
    })
}

/// Reads one option spec and checks that its default parses.
///
/// # Safety
/// As [`read`].
unsafe fn read_option(o: &CcOptionSpec) -> Result<OptionSpec, String> {
    let name = unsafe { text(o.name, "option name") }?;
    if name.is_empty() || !name.chars().all(is_word) {
        return Err(format!("option name {name:?} is not a pipeline word"));
    }
    let default = unsafe { text(o.default_value, "default") }?;
    let help = unsafe { text(o.help, "help") }?.replace('\n', " ");
    let bound = |v: i64, none: i64| (v != none).then_some(v);
    let kind = match o.kind {
        option_kind::INT => OptionKind::Int {
            min: bound(o.int_min, i64::MIN),
            max: bound(o.int_max, i64::MAX),
        },
        option_kind::FLOAT => OptionKind::Float,
        option_kind::BOOL => OptionKind::Bool,
        option_kind::STR => OptionKind::Str,
        option_kind::ENUM => {
            let words = unsafe { text(o.choices, "choices") }?;
            let words: Vec<&'static str> = words.split('|').map(leak).collect();
            OptionKind::Enum(Box::leak(words.into_boxed_slice()))
        }
        k => return Err(format!("option {name:?} has unknown kind {k}")),
    };
    if kind.parse(&default).is_none() {
        return Err(format!(
            "option {name:?}: default {default:?} is not {}",
            kind.describe()
        ));
    }
    Ok(OptionSpec {
        name: leak(&name),
        kind,
        default: leak(&default),
        help: leak(&help),
    })
}
