//! Reshape rules: how a reshape maps input axes to output axes, and which axis of a
//! split carries the units.

use super::atoms::Atoms;
use super::rules::{const_ints, norm_axis};
use cc_ir::{Dim, Graph, Op, ValueId};

/// How a Reshape maps an input axis to an output axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReshapeLink {
    /// Input axis `.0` is output axis `.1`.
    Same(usize, usize),
    /// Input axis `i` splits into output axes starting at `o`: input index `c` is in
    /// output index `c / inner` of axis `o` (the inner axes are not linked).
    Split { i: usize, o: usize, inner: usize },
    /// Input axes starting at `i` merge into output axis `o`: output index `c` is in
    /// input index `c / inner` of axis `i`.
    Merge { i: usize, o: usize, inner: usize },
}

/// The axis correspondences of a reshape from `dx` to `dy` (size-1 axes ignored).
pub(crate) fn reshape_links(dx: &[Dim], dy: &[Dim]) -> Vec<ReshapeLink> {
    let known = |d: &Dim| d.known().and_then(|v| usize::try_from(v).ok());
    let mut out = Vec::new();
    let (mut i, mut o) = (0, 0);
    while i < dx.len() && o < dy.len() {
        // Equal sizes, or two unknown sizes at the same place (a batch axis that
        // inference lost): one axis (unknown sizes have no atoms anyway).
        if dx[i] == dy[o] {
            out.push(ReshapeLink::Same(i, o));
            i += 1;
            o += 1;
            continue;
        }
        if known(&dx[i]) == Some(1) {
            i += 1;
            continue;
        }
        if known(&dy[o]) == Some(1) {
            o += 1;
            continue;
        }
        let (Some(mut px), Some(mut py)) = (known(&dx[i]), known(&dy[o])) else {
            break;
        };
        let (i0, o0) = (i, o);
        let (mut i1, mut o1) = (i + 1, o + 1);
        while px != py {
            if px < py {
                let Some(d) = dx.get(i1).and_then(known) else {
                    return out;
                };
                px *= d;
                i1 += 1;
            } else {
                let Some(d) = dy.get(o1).and_then(known) else {
                    return out;
                };
                py *= d;
                o1 += 1;
            }
        }
        let prod = |ds: &[Dim]| ds.iter().filter_map(known).product::<usize>();
        if i1 - i0 == 1 {
            out.push(ReshapeLink::Split {
                i: i0,
                o: o0,
                inner: prod(&dy[o0 + 1..o1]),
            });
        } else if o1 - o0 == 1 {
            out.push(ReshapeLink::Merge {
                i: i0,
                o: o0,
                inner: prod(&dx[i0 + 1..i1]),
            });
        }
        i = i1;
        o = o1;
    }
    out
}

/// True when axis `axis` of `v` is, within `depth` ops (through Unsqueeze, Squeeze and
/// Transpose), indexed by a Gather with a scalar index or cut by Split/Slice.
pub(crate) fn selected_later(g: &Graph, a: &Atoms, v: ValueId, axis: usize, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    g.value(v).uses().iter().any(|u| {
        let n = g.node(u.node());
        let Some(y) = n.output(0) else { return false };
        let rank = a.rank(v).unwrap_or(0);
        match &n.op {
            Op::Gather { axis: ax } => {
                norm_axis(ax.unwrap_or(0), rank) == Some(axis)
                    && n.input(1).and_then(|i| a.rank(i)) == Some(0)
            }
            Op::Split { axis: ax, .. } => norm_axis(ax.unwrap_or(0), rank) == Some(axis),
            Op::Slice => const_ints(g, n.input(3))
                .is_some_and(|axes| axes.iter().any(|&x| norm_axis(x, rank) == Some(axis))),
            Op::Transpose { perm: Some(p) } => p
                .iter()
                .position(|&x| norm_axis(x, rank) == Some(axis))
                .is_some_and(|o| selected_later(g, a, y, o, depth - 1)),
            Op::Unsqueeze { .. } | Op::Squeeze { .. } => {
                let unsq = matches!(n.op, Op::Unsqueeze { .. });
                let Some(ry) = a.rank(y) else { return false };
                let axes: Vec<usize> = const_ints(g, n.input(1))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|&x| norm_axis(x, rank.max(ry)))
                    .collect();
                let new = if unsq {
                    // position of `axis` among the output axes that are not inserted
                    (0..ry).filter(|k| !axes.contains(k)).nth(axis)
                } else if axes.contains(&axis) {
                    None
                } else {
                    Some(axis - axes.iter().filter(|&&k| k < axis).count())
                };
                new.is_some_and(|o| selected_later(g, a, y, o, depth - 1))
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &[i64]) -> Vec<Dim> {
        v.iter().map(|&x| Dim::Known(x)).collect()
    }

    #[test]
    fn reshape_links_cover_flatten_heads_and_merges() {
        // Flatten [1,C,H,W] -> [1,C*H*W]: channel c is a block of H*W.
        assert_eq!(
            reshape_links(&k(&[1, 8, 2, 3]), &k(&[1, 48])),
            vec![
                ReshapeLink::Same(0, 0),
                ReshapeLink::Merge {
                    i: 1,
                    o: 1,
                    inner: 6
                }
            ]
        );
        // Heads split [1,S,H*D] -> [1,S,H,D].
        assert_eq!(
            reshape_links(&k(&[1, 16, 64]), &k(&[1, 16, 4, 16])),
            vec![
                ReshapeLink::Same(0, 0),
                ReshapeLink::Same(1, 1),
                ReshapeLink::Split {
                    i: 2,
                    o: 2,
                    inner: 16
                }
            ]
        );
        // GQA merge [1,KV,rep,S,D] -> [KV*rep,S,D].
        assert_eq!(
            reshape_links(&k(&[1, 2, 2, 16, 16]), &k(&[4, 16, 16])),
            vec![
                ReshapeLink::Merge {
                    i: 1,
                    o: 0,
                    inner: 2
                },
                ReshapeLink::Same(3, 1),
                ReshapeLink::Same(4, 2)
            ]
        );
    }
}
