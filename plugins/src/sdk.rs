//! What a plugin author writes against: the [`PluginPass`] trait, the [`PassContext`]
//! a pass runs with, and the glue [`crate::export_plugin!`] expands to (descriptor
//! construction, the panic-catching run trampoline, the buffer free function).

use crate::abi::{
    raw_bytes, CcBuffer, CcOptionSpec, CcPassDescriptor, CcPassInput, CcPassOutput,
    CcPluginDescriptor, CcRunFn, CcStr, ABI_VERSION,
};
use crate::options::{OptionDecl, OptionValues};
use cc_ir::Graph;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The error a plugin pass returns: any error, shown to the user as one line.
pub type PassError = Box<dyn std::error::Error + Send + Sync>;

/// A compression pass implemented in a plugin.
pub trait PluginPass {
    /// Name used in pipelines (`[a-z0-9_-]`; must not clash with a built-in pass).
    const NAME: &'static str;
    /// One-line summary for `cc-compile --list-passes`.
    const SUMMARY: &'static str;
    /// The option schema; the host validates the pipeline's options against it.
    const OPTIONS: &'static [OptionDecl];
    /// Transforms `g` in place. Errors become a one-line message naming the plugin.
    fn run(g: &mut Graph, cx: &mut PassContext) -> Result<(), PassError>;
}

/// What a plugin pass sees besides the graph: its options, the seed, a statistics sink.
#[derive(Clone, Debug, Default)]
pub struct PassContext {
    /// The options, validated by the host.
    pub options: OptionValues,
    seed: u64,
    stats: Vec<(String, String)>,
}

impl PassContext {
    /// A context with these options and seed.
    pub fn new(options: OptionValues, seed: u64) -> Self {
        PassContext {
            options,
            seed,
            stats: Vec::new(),
        }
    }
    /// The pipeline's seed, for passes that draw random numbers.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Records a statistic for the report (a key recorded again takes the new value).
    pub fn stat(&mut self, key: &str, value: impl Display) {
        let value = value.to_string().replace('\n', " ");
        match self.stats.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.stats.push((key.to_string(), value)),
        }
    }
    /// The statistics recorded so far.
    pub fn stats(&self) -> &[(String, String)] {
        &self.stats
    }
}

/// What a pass run on wire bytes gives: the output graph's wire bytes and the
/// statistics as (key, value) text.
pub type PassOutput = (Vec<u8>, Vec<(String, String)>);

/// Runs pass `P` on wire bytes: decode, run, encode. Used by the trampoline, and by
/// plugin authors' unit tests to exercise a pass exactly as the host will.
pub fn run_on_bytes<P: PluginPass>(
    ir: &[u8],
    options: &str,
    seed: u64,
) -> Result<PassOutput, String> {
    let mut g = cc_ir::ir_wire::decode(ir).map_err(|e| format!("input IR: {e}"))?;
    let mut cx = PassContext::new(OptionValues::parse(options)?, seed);
    P::run(&mut g, &mut cx).map_err(|e| e.to_string())?;
    Ok((cc_ir::ir_wire::encode(&g), cx.stats))
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

thread_local! {
    /// While a pass runs on this thread: `Some`, holding the location of a panic once
    /// one happens. The host reports the panic as one error line; nothing is printed.
    static PANIC_IN_PASS: std::cell::RefCell<Option<Option<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Installs (once) a panic hook that records the location of panics inside passes and
/// leaves every other panic to the previous hook.
fn capture_pass_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = PANIC_IN_PASS.with(|p| match p.try_borrow_mut() {
                Ok(mut slot) if slot.is_some() => {
                    *slot = Some(
                        info.location()
                            .map(|l| format!("{}:{}", l.file(), l.line())),
                    );
                    true
                }
                _ => false,
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs `f` with panics captured: `Err` holds "panicked at FILE:LINE: message".
fn catch_pass_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    capture_pass_panics();
    PANIC_IN_PASS.with(|p| *p.borrow_mut() = Some(None));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    let location = PANIC_IN_PASS.with(|p| p.borrow_mut().take().flatten());
    outcome.map_err(|payload| {
        let message = panic_message(payload.as_ref());
        match location {
            Some(at) => format!("panicked at {at}: {message}"),
            None => format!("panicked: {message}"),
        }
    })
}

/// The `extern "C"` run function of pass `P`: never unwinds; a panic becomes an error
/// ("panicked: ...").
///
/// # Safety
/// `input` and `output` must be valid pointers as the ABI describes (the host's job).
pub unsafe extern "C" fn run_trampoline<P: PluginPass>(
    input: *const CcPassInput,
    output: *mut CcPassOutput,
) -> i32 {
    if input.is_null() || output.is_null() {
        return 2;
    }
    let outcome = catch_pass_panic(|| {
        // SAFETY: the host passes a valid input whose buffers live during the call.
        let input = unsafe { &*input };
        let ir = unsafe { raw_bytes(input.ir, input.ir_len) }?;
        let options = unsafe { input.options.to_str() }?;
        run_on_bytes::<P>(ir, options, input.seed)
    });
    let result = outcome.and_then(|r| r);
    let (code, out) = match result {
        Ok((ir, stats)) => {
            let stats = OptionValues::to_text(&stats);
            let out = CcPassOutput {
                ir: CcBuffer::from_vec(ir),
                stats: CcBuffer::from_vec(stats.into_bytes()),
                error: CcBuffer::EMPTY,
            };
            (0, out)
        }
        Err(message) => {
            let out = CcPassOutput {
                error: CcBuffer::from_vec(message.into_bytes()),
                ..CcPassOutput::EMPTY
            };
            (1, out)
        }
    };
    // SAFETY: checked non-null above; the host owns the output slot.
    unsafe { output.write(out) };
    code
}

/// Frees a buffer this library allocated (the descriptor's `free_buffer`).
///
/// # Safety
/// `buffer` must come from this library's [`CcBuffer::from_vec`] and be freed once.
pub unsafe extern "C" fn free_buffer(buffer: CcBuffer) {
    drop(unsafe { buffer.into_vec() });
}

/// One pass's entry in a descriptor, built from a [`PluginPass`].
#[derive(Clone, Copy, Debug)]
pub struct PassEntry {
    name: &'static str,
    summary: &'static str,
    options: &'static [OptionDecl],
    run: CcRunFn,
}

impl PassEntry {
    /// The entry of pass `P`.
    pub fn of<P: PluginPass>() -> PassEntry {
        PassEntry {
            name: P::NAME,
            summary: P::SUMMARY,
            options: P::OPTIONS,
            run: run_trampoline::<P>,
        }
    }

    /// An entry for a pass written directly against the C ABI: `run` must follow
    /// [`CcRunFn`]'s contract (never unwind, fill the output, allocate with
    /// [`CcBuffer::from_vec`] so the descriptor's `free_buffer` can free it).
    pub fn raw(
        name: &'static str,
        summary: &'static str,
        options: &'static [OptionDecl],
        run: CcRunFn,
    ) -> PassEntry {
        PassEntry {
            name,
            summary,
            options,
            run,
        }
    }
}

/// The descriptor and everything it points to, kept alive for the library's lifetime
/// (in a `static` that [`crate::export_plugin!`] declares).
pub struct DescriptorHolder {
    _options: Vec<Vec<CcOptionSpec>>,
    _passes: Vec<CcPassDescriptor>,
    descriptor: CcPluginDescriptor,
}

// SAFETY: the holder is immutable after construction and points only at static text
// and at its own heap allocations, which never move or change.
unsafe impl Sync for DescriptorHolder {}
// SAFETY: as above.
unsafe impl Send for DescriptorHolder {}

impl DescriptorHolder {
    /// The descriptor of plugin `name` with these passes, for the current ABI.
    pub fn new(name: &'static str, entries: &[PassEntry]) -> DescriptorHolder {
        let options: Vec<Vec<CcOptionSpec>> = entries
            .iter()
            .map(|e| e.options.iter().map(OptionDecl::to_c).collect())
            .collect();
        let passes: Vec<CcPassDescriptor> = entries
            .iter()
            .zip(&options)
            .map(|(e, o)| CcPassDescriptor {
                name: CcStr::from_static(e.name),
                summary: CcStr::from_static(e.summary),
                options: o.as_ptr(),
                options_len: o.len(),
                run: Some(e.run),
            })
            .collect();
        let descriptor = CcPluginDescriptor {
            abi_version: ABI_VERSION,
            name: CcStr::from_static(name),
            passes: passes.as_ptr(),
            passes_len: passes.len(),
            free_buffer: Some(free_buffer),
        };
        DescriptorHolder {
            _options: options,
            _passes: passes,
            descriptor,
        }
    }

    /// The descriptor, valid as long as the holder.
    pub fn descriptor(&self) -> *const CcPluginDescriptor {
        &self.descriptor
    }
}

/// Exports a plugin: its name and its passes (types implementing
/// [`PluginPass`](crate::PluginPass)). Expands to the one exported symbol,
/// `cc_plugin_descriptor`, which builds the descriptor once; panics never cross the
/// boundary (a panicking pass returns an error; a failing construction returns null).
///
/// ```ignore
/// cc_plugin::export_plugin!("my-plugin", [MyPass, OtherPass]);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($name:expr, [$($pass:ty),+ $(,)?]) => {
        /// The plugin descriptor (cc-compile plugin ABI).
        #[no_mangle]
        pub extern "C" fn cc_plugin_descriptor() -> *const $crate::abi::CcPluginDescriptor {
            static HOLDER: ::std::sync::OnceLock<$crate::sdk::DescriptorHolder> =
                ::std::sync::OnceLock::new();
            ::std::panic::catch_unwind(|| {
                HOLDER
                    .get_or_init(|| {
                        $crate::sdk::DescriptorHolder::new(
                            $name,
                            &[$($crate::sdk::PassEntry::of::<$pass>()),+],
                        )
                    })
                    .descriptor()
            })
            .unwrap_or(::std::ptr::null())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::CcPassOutput;
    use cc_ir::Op;

    /// Renames the graph to the `name` option; panics when asked to.
    struct Rename;
    impl PluginPass for Rename {
        const NAME: &'static str = "rename";
        const SUMMARY: &'static str = "renames the graph";
        const OPTIONS: &'static [OptionDecl] = &[
            OptionDecl::str("name", "renamed", "the new name"),
            OptionDecl::bool("panic", "false", "panic instead"),
        ];
        fn run(g: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
            if cx.options.bool("panic")? {
                panic!("asked to panic");
            }
            g.name = cx.options.str("name")?.to_string();
            cx.stat("renamed", 1);
            Ok(())
        }
    }

    fn graph() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node("n", Op::Identity, vec![Some(x)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        g
    }

    /// Calls the trampoline as the host does; returns (code, ir, stats, error).
    fn call(ir: &[u8], options: &str) -> (i32, Vec<u8>, String, String) {
        let input = CcPassInput {
            ir: ir.as_ptr(),
            ir_len: ir.len(),
            options: CcStr::borrow(options),
            seed: 3,
        };
        let mut out = CcPassOutput::EMPTY;
        let code = unsafe { run_trampoline::<Rename>(&input, &mut out) };
        let text = |b: CcBuffer| String::from_utf8(unsafe { b.into_vec() }).unwrap();
        let ir = unsafe { out.ir.into_vec() };
        (code, ir, text(out.stats), text(out.error))
    }

    #[test]
    fn trampoline_runs_the_pass_on_wire_bytes() {
        let bytes = cc_ir::ir_wire::encode(&graph());
        let (code, ir, stats, err) = call(&bytes, "name=new\npanic=false\n");
        assert_eq!((code, err.as_str(), stats.as_str()), (0, "", "renamed=1\n"));
        assert_eq!(cc_ir::ir_wire::decode(&ir).unwrap().name, "new");
    }

    #[test]
    fn panics_and_bad_input_become_errors() {
        let bytes = cc_ir::ir_wire::encode(&graph());
        let (code, ir, _, err) = call(&bytes, "name=x\npanic=true\n");
        assert_eq!((code, ir.len()), (1, 0));
        assert!(err.starts_with("panicked at plugins/src/sdk.rs:"), "{err}");
        assert!(err.ends_with(": asked to panic"), "{err}");
        let (code, _, _, err) = call(b"junk", "name=x\npanic=false\n");
        assert_eq!(code, 1);
        assert!(err.starts_with("input IR: IR wire:"), "{err}");
        let (code, _, _, err) = call(&bytes, "panic=false\n");
        assert_eq!(code, 1);
        assert!(err.contains("\"name\""), "{err}");
        assert_eq!(
            unsafe { run_trampoline::<Rename>(std::ptr::null(), std::ptr::null_mut()) },
            2
        );
    }

    #[test]
    fn descriptor_lists_the_passes_for_this_abi() {
        let holder = DescriptorHolder::new("demo", &[PassEntry::of::<Rename>()]);
        let d = unsafe { &*holder.descriptor() };
        assert_eq!(d.abi_version, ABI_VERSION);
        assert_eq!(unsafe { d.name.to_str() }, Ok("demo"));
        assert_eq!(d.passes_len, 1);
        let p = unsafe { &*d.passes };
        assert_eq!(unsafe { p.name.to_str() }, Ok("rename"));
        assert_eq!(p.options_len, 2);
        let o = unsafe { &*p.options.add(1) };
        assert_eq!(unsafe { o.name.to_str() }, Ok("panic"));
        assert!(p.run.is_some() && d.free_buffer.is_some());
    }
}
