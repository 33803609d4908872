//! The C ABI between cc-compile (the host) and a plugin library.
//!
//! A plugin exports one symbol, [`DESCRIPTOR_SYMBOL`], an `extern "C"` function with no
//! arguments returning `*const CcPluginDescriptor` (null on failure). The descriptor's
//! first field is the ABI version: the host reads that `u32` alone, refuses any version
//! but [`ABI_VERSION`], and only then reads the rest.
//!
//! Only bytes cross the boundary: the IR wire format ([`cc_ir::ir_wire`]) in, the
//! options as text, the IR wire format out, plus statistics and an error message as
//! text. Whoever allocates frees: the host owns the input buffers for the duration of
//! the call; the plugin allocates the output buffers and the host hands each back to
//! the plugin's `free_buffer` after copying it. Strings in the descriptor are borrowed
//! from the library and stay valid while it is loaded (the host never unloads one).
//!
//! ```c
//! typedef struct { const uint8_t *ptr; size_t len; } CcStr;            /* UTF-8, not NUL-terminated */
//! typedef struct { uint8_t *ptr; size_t len; size_t cap; } CcBuffer;   /* plugin-allocated */
//! typedef struct { CcStr name; uint32_t kind; int64_t int_min, int_max;
//!                  CcStr choices; CcStr default_value; CcStr help; } CcOptionSpec;
//! typedef struct { const uint8_t *ir; size_t ir_len; CcStr options; uint64_t seed; } CcPassInput;
//! typedef struct { CcBuffer ir, stats, error; } CcPassOutput;
//! typedef int32_t (*CcRunFn)(const CcPassInput *, CcPassOutput *);
//! typedef struct { CcStr name, summary; const CcOptionSpec *options; size_t options_len;
//!                  CcRunFn run; } CcPassDescriptor;
//! typedef struct { uint32_t abi_version; CcStr name; const CcPassDescriptor *passes;
//!                  size_t passes_len; void (*free_buffer)(CcBuffer); } CcPluginDescriptor;
//! const CcPluginDescriptor *cc_plugin_descriptor(void);
//! ```

/// The ABI version this SDK speaks. The host refuses a plugin built for another.
pub const ABI_VERSION: u32 = 1;

/// The name of the one symbol a plugin exports.
pub const DESCRIPTOR_SYMBOL: &str = "cc_plugin_descriptor";

/// The descriptor function's type.
pub type DescriptorFn = unsafe extern "C" fn() -> *const CcPluginDescriptor;

/// A borrowed UTF-8 string (pointer and length, no terminating NUL).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CcStr {
    /// First byte; may be null only when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl CcStr {
    /// A string borrowed from static text.
    pub const fn from_static(s: &'static str) -> CcStr {
        CcStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// A string borrowed from `s`, valid while `s` lives.
    pub fn borrow(s: &str) -> CcStr {
        CcStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The text, or why it cannot be read (null with a length, not UTF-8).
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a`.
    pub unsafe fn to_str<'a>(self) -> Result<&'a str, String> {
        let bytes = unsafe { raw_bytes(self.ptr, self.len)? };
        std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
    }
}

/// A byte buffer allocated by the plugin (a `Vec<u8>`'s parts); the receiver hands it
/// back to the allocator's `free_buffer`.
#[repr(C)]
#[derive(Debug)]
pub struct CcBuffer {
    /// First byte; null for an empty buffer that owns nothing.
    pub ptr: *mut u8,
    /// Bytes in use.
    pub len: usize,
    /// Bytes allocated.
    pub cap: usize,
}

impl CcBuffer {
    /// A buffer owning nothing.
    pub const EMPTY: CcBuffer = CcBuffer {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };

    /// Gives up `v`'s allocation to a buffer (to be freed with [`CcBuffer::into_vec`]
    /// by the same library).
    pub fn from_vec(v: Vec<u8>) -> CcBuffer {
        if v.capacity() == 0 {
            return CcBuffer::EMPTY;
        }
        let mut v = std::mem::ManuallyDrop::new(v);
        CcBuffer {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// Takes the allocation back.
    ///
    /// # Safety
    /// The buffer must come from [`CcBuffer::from_vec`] in this same library (same
    /// allocator) and not have been freed.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }

    /// A copy of the bytes, or why they cannot be read.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes.
    pub unsafe fn copy_bytes(&self) -> Result<Vec<u8>, String> {
        Ok(unsafe { raw_bytes(self.ptr, self.len)? }.to_vec())
    }
}

/// The kind of an option value, as [`CcOptionSpec::kind`].
pub mod option_kind {
    /// An integer in `int_min..=int_max`.
    pub const INT: u32 = 0;
    /// A finite number.
    pub const FLOAT: u32 = 1;
    /// `true`/`false`.
    pub const BOOL: u32 = 2;
    /// Any text.
    pub const STR: u32 = 3;
    /// One of the `|`-separated words in `choices`.
    pub const ENUM: u32 = 4;
}

/// One option of a pass: what `--list-passes` shows and what the host validates the
/// pipeline's `key=value` against before the pass runs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CcOptionSpec {
    /// Option name.
    pub name: CcStr,
    /// One of [`option_kind`].
    pub kind: u32,
    /// Smallest integer allowed (`i64::MIN`: no bound); `INT` only.
    pub int_min: i64,
    /// Largest integer allowed (`i64::MAX`: no bound); `INT` only.
    pub int_max: i64,
    /// `|`-separated words; `ENUM` only.
    pub choices: CcStr,
    /// The default value as text; it must parse as the kind.
    pub default_value: CcStr,
    /// One-line help.
    pub help: CcStr,
}

/// What the host hands a pass.
#[repr(C)]
#[derive(Debug)]
pub struct CcPassInput {
    /// The graph in the IR wire format.
    pub ir: *const u8,
    /// Its length.
    pub ir_len: usize,
    /// Every option of the schema, defaults filled in, validated, one `key=value` per line.
    pub options: CcStr,
    /// The pipeline's seed, for passes that draw random numbers.
    pub seed: u64,
}

/// What a pass hands back: the new graph on success (return 0), or an error message
/// (non-zero return). Statistics are `key=value` lines.
#[repr(C)]
#[derive(Debug)]
pub struct CcPassOutput {
    /// The transformed graph in the IR wire format.
    pub ir: CcBuffer,
    /// Statistics for the report, one `key=value` per line.
    pub stats: CcBuffer,
    /// The error message (UTF-8) when the pass failed.
    pub error: CcBuffer,
}

impl CcPassOutput {
    /// An output with every buffer empty.
    pub const EMPTY: CcPassOutput = CcPassOutput {
        ir: CcBuffer::EMPTY,
        stats: CcBuffer::EMPTY,
        error: CcBuffer::EMPTY,
    };
}

/// A pass's run function: 0 on success, anything else on failure (message in `error`).
pub type CcRunFn =
    unsafe extern "C" fn(input: *const CcPassInput, output: *mut CcPassOutput) -> i32;

/// Frees a buffer the plugin allocated.
pub type CcFreeFn = unsafe extern "C" fn(buffer: CcBuffer);

/// One pass of a plugin.
#[repr(C)]
#[derive(Debug)]
pub struct CcPassDescriptor {
    /// Name used in pipelines (`[a-z0-9_-]`, unique across built-ins and plugins).
    pub name: CcStr,
    /// One-line summary for `--list-passes`.
    pub summary: CcStr,
    /// The option schema.
    pub options: *const CcOptionSpec,
    /// Number of options.
    pub options_len: usize,
    /// Runs the pass.
    pub run: Option<CcRunFn>,
}

/// What [`DESCRIPTOR_SYMBOL`] returns. `abi_version` must stay the first field in
/// every version.
#[repr(C)]
#[derive(Debug)]
pub struct CcPluginDescriptor {
    /// [`ABI_VERSION`] of the SDK the plugin was built with.
    pub abi_version: u32,
    /// The plugin's name.
    pub name: CcStr,
    /// Its passes.
    pub passes: *const CcPassDescriptor,
    /// Number of passes.
    pub passes_len: usize,
    /// Frees the buffers in [`CcPassOutput`].
    pub free_buffer: Option<CcFreeFn>,
}

/// `len` bytes at `ptr` (an empty slice for length 0).
///
/// # Safety
/// When `len > 0`, `ptr` must point to `len` readable bytes that outlive `'a`.
pub unsafe fn raw_bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], String> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(format!("null pointer with length {len}"));
    }
    if len > isize::MAX as usize {
        return Err(format!("length {len} is impossible"));
    }
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}
