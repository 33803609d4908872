//! From atom components to [`ChannelGroup`]s.

use super::atoms::Atoms;
use super::Discovery;
use cc_ir::{Graph, Result};

/// Builds the groups from the linked atoms.
pub(crate) fn groups(g: &Graph, a: &mut Atoms) -> Result<Discovery> {
    let _ = (g, a);
    Ok(Discovery::default())
}
