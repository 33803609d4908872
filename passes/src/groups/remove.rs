//! Removing units: slicing constants, applying fixups, re-inferring types.

use super::{ChannelGroup, Discovery};
use cc_ir::{Error, Graph, Result};

/// Removes units `units` (sorted, unique, each < `group.units`, not all of them) of
/// `group` from `g`: slices every constant member (a constant named by several members
/// is rewritten once), applies the fixups, then re-runs shape inference. Errors if the
/// group is blocked or the request is invalid.
pub fn remove_units(g: &mut Graph, group: &ChannelGroup, units: &[usize]) -> Result<()> {
    let d = Discovery {
        groups: vec![group.clone()],
    };
    remove_many(g, &d, &[(0, units.to_vec())])
}

/// Removes units of several groups of one [`Discovery`] of `g` at once:
/// `requests` holds (index into `d.groups`, sorted unique units). Slices shared by
/// several groups (a constant consumed by a Concat of two groups) are combined, so the
/// groups need not be rediscovered between removals.
pub fn remove_many(g: &mut Graph, d: &Discovery, requests: &[(usize, Vec<usize>)]) -> Result<()> {
    let _ = (g, d, requests);
    Err(Error::unsupported("remove_many: not implemented yet"))
}

/// Zeroes, in place, the [`super::Role::Consumes`] slices of units `units` of `group`
/// (the reference for the exactness check: same outputs as removing them).
pub fn zero_consumers(g: &mut Graph, group: &ChannelGroup, units: &[usize]) -> Result<()> {
    let _ = (g, group, units);
    Err(Error::unsupported("zero_consumers: not implemented yet"))
}
