//! A plugin built as if against the next SDK: its descriptor carries `ABI_VERSION + 1`
//! and a layout the host must not read. The host reads the version alone and refuses.

use cc_plugin::abi::ABI_VERSION;

/// A descriptor of a future ABI: the version first, then fields this host does not know.
#[repr(C)]
pub struct FutureDescriptor {
    /// The next ABI version.
    pub abi_version: u32,
    /// Something the current layout has elsewhere (a host reading it would misread).
    pub flags: u64,
}

static DESCRIPTOR: FutureDescriptor = FutureDescriptor {
    abi_version: ABI_VERSION + 1,
    flags: u64::MAX,
};

/// The descriptor, as the next ABI would export it.
#[no_mangle]
pub extern "C" fn cc_plugin_descriptor() -> *const FutureDescriptor {
    &DESCRIPTOR
}
