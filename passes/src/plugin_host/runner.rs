//! A plugin pass as a [`Pass`]: the graph goes out as IR wire bytes, comes back as IR
//! wire bytes, and is decoded and verified before it replaces the input.

use crate::error::PassError;
use crate::options::Options;
use crate::pass::{Changed, Pass, PassCx, Stat};
use cc_ir::Graph;
use cc_plugin::abi::{CcBuffer, CcFreeFn, CcPassInput, CcPassOutput, CcRunFn, CcStr};

/// What running one plugin pass needs.
#[derive(Clone, Copy)]
pub(super) struct PassHandle {
    /// `plugin-name (path)`, for messages.
    pub plugin: &'static str,
    pub pass: &'static str,
    pub run: CcRunFn,
    pub free_buffer: CcFreeFn,
}

/// One instance of a plugin pass with its options.
pub(super) struct PluginPassInstance {
    pub handle: PassHandle,
    pub options: String,
}

impl PluginPassInstance {
    /// The instance for these (validated) options.
    pub fn new(handle: PassHandle, options: &Options) -> Result<Self, PassError> {
        let mut text = String::new();
        for (k, v) in options.values() {
            let v = v.to_string();
            if v.contains('\n') {
                return Err(handle.error(format!("option {k} contains a line break")));
            }
            text.push_str(&format!("{k}={v}\n"));
        }
        Ok(PluginPassInstance {
            handle,
            options: text,
        })
    }
}

impl PassHandle {
    fn error(&self, message: impl Into<String>) -> PassError {
        PassError::Plugin {
            plugin: self.plugin.to_string(),
            message: message.into().replace('\n', " "),
        }
    }

    /// Copies a plugin buffer and hands it back to the plugin's allocator.
    fn take(&self, buffer: CcBuffer) -> Result<Vec<u8>, String> {
        // SAFETY: the plugin filled the buffer per the ABI; it is read once, then freed
        // once by the library that allocated it.
        let bytes = unsafe { buffer.copy_bytes() };
        if !buffer.ptr.is_null() {
            unsafe { (self.free_buffer)(buffer) };
        }
        bytes
    }
}

/// A statistic from its text: an integer, a number, or text.
fn stat_of(text: &str) -> Stat {
    if let Ok(i) = text.parse::<i64>() {
        Stat::Int(i)
    } else if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Stat::Float(f)
    } else {
        Stat::Text(text.to_string())
    }
}

impl Pass for PluginPassInstance {
    fn name(&self) -> &str {
        self.handle.pass
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let h = self.handle;
        let input_bytes = cc_ir::ir_wire::encode(g);
        let input = CcPassInput {
            ir: input_bytes.as_ptr(),
            ir_len: input_bytes.len(),
            options: CcStr::borrow(&self.options),
            seed: cx.seed(),
        };
        let mut out = CcPassOutput::EMPTY;
        // SAFETY: the run function comes from a validated descriptor of a library that
        // stays loaded; input and output are valid for the call.
        let code = unsafe { (h.run)(&input, &mut out) };
        let ir = h.take(out.ir);
        let stats = h.take(out.stats);
        let error = h.take(out.error);
        if code != 0 {
            let message = match error {
                Ok(e) if !e.is_empty() => String::from_utf8_lossy(&e).into_owned(),
                Ok(_) => format!("returned {code} without a message"),
                Err(e) => format!("returned {code} with an unreadable message ({e})"),
            };
            return Err(h.error(format!("pass {} failed: {message}", h.pass)));
        }
        let ir = ir.map_err(|e| h.error(format!("pass {} output: {e}", h.pass)))?;
        let new = cc_ir::ir_wire::decode(&ir)
            .map_err(|e| h.error(format!("pass {} returned malformed IR: {e}", h.pass)))?;
        cc_ir::verify::verify(&new)
            .map_err(|e| h.error(format!("pass {} returned an invalid graph: {e}", h.pass)))?;
        let stats = stats.map_err(|e| h.error(format!("pass {} statistics: {e}", h.pass)))?;
        for line in String::from_utf8_lossy(&stats).lines() {
            if let Some((k, v)) = line.split_once('=') {
                cx.stat(k, stat_of(v));
            }
        }
        let changed = Changed(ir != input_bytes);
        *g = new;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_keep_their_kind() {
        assert_eq!(stat_of("12"), Stat::Int(12));
        assert_eq!(stat_of("0.25"), Stat::Float(0.25));
        assert_eq!(stat_of("NaN"), Stat::Text("NaN".into()));
        assert_eq!(stat_of("a b"), Stat::Text("a b".into()));
    }
}
