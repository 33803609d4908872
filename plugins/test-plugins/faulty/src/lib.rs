//! A plugin whose passes misbehave, for the host's failure tests: each must become a
//! one-line error naming the plugin, never a crash.

use cc_plugin::abi::{CcBuffer, CcPassInput, CcPassOutput};
use cc_plugin::cc_ir::{Graph, Op};
use cc_plugin::sdk::{DescriptorHolder, PassEntry};
use cc_plugin::{OptionDecl, PassContext, PassError, PluginPass};

/// Panics inside the pass.
pub struct Panic;
impl PluginPass for Panic {
    const NAME: &'static str = "faulty-panic";
    const SUMMARY: &'static str = "panics (test plugin)";
    const OPTIONS: &'static [OptionDecl] = &[];
    fn run(_g: &mut Graph, _cx: &mut PassContext) -> Result<(), PassError> {
        panic!("index out of bounds in the faulty plugin")
    }
}

/// Returns an error.
pub struct Fail;
impl PluginPass for Fail {
    const NAME: &'static str = "faulty-fail";
    const SUMMARY: &'static str = "fails with a message (test plugin)";
    const OPTIONS: &'static [OptionDecl] = &[OptionDecl::str(
        "why",
        "no reason",
        "the message to fail with",
    )];
    fn run(_g: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        Err(format!("refusing: {}", cx.options.str("why")?).into())
    }
}

/// Leaves a graph that decodes but breaks an IR invariant (a node reads a value no
/// one produces and that is no input or constant).
pub struct Invalid;
impl PluginPass for Invalid {
    const NAME: &'static str = "faulty-invalid";
    const SUMMARY: &'static str = "returns a graph that fails verification (test plugin)";
    const OPTIONS: &'static [OptionDecl] = &[];
    fn run(g: &mut Graph, _cx: &mut PassContext) -> Result<(), PassError> {
        let dangling = g.add_value("faulty_dangling", None)?;
        let out = g.add_value("faulty_out", None)?;
        g.add_node(
            "faulty_node",
            Op::Identity,
            vec![Some(dangling)],
            vec![Some(out)],
        )?;
        Ok(())
    }
}

/// Not through [`PluginPass`]: writes bytes that are not an IR graph and reports
/// success, as a broken plugin written against the raw ABI might.
///
/// # Safety
/// Called by the host with valid pointers.
unsafe extern "C" fn garbage_run(_input: *const CcPassInput, output: *mut CcPassOutput) -> i32 {
    if output.is_null() {
        return 2;
    }
    let out = CcPassOutput {
        ir: CcBuffer::from_vec(b"CCIR\x01\x00\x00\x00\xff\xff\xff\xff".to_vec()),
        ..CcPassOutput::EMPTY
    };
    unsafe { output.write(out) };
    0
}

/// The descriptor, written out instead of through `export_plugin!` so that one pass
/// can use the raw run function above.
#[no_mangle]
pub extern "C" fn cc_plugin_descriptor() -> *const cc_plugin::abi::CcPluginDescriptor {
    static HOLDER: std::sync::OnceLock<DescriptorHolder> = std::sync::OnceLock::new();
    HOLDER
        .get_or_init(|| {
            DescriptorHolder::new(
                "faulty",
                &[
                    PassEntry::of::<Panic>(),
                    PassEntry::of::<Fail>(),
                    PassEntry::of::<Invalid>(),
                    PassEntry::raw(
                        "faulty-garbage",
                        "returns bytes that are not an IR graph (test plugin)",
                        &[],
                        garbage_run,
                    ),
                ],
            )
        })
        .descriptor()
}
