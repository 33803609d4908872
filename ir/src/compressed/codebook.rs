//! Codebook (weight-clustered) weights: each element is an index into a small table of
//! f32 centroids, one table for the whole tensor or one per channel of an axis.
//!
//! Lowered to standard ONNX as `Gather(centroids, Cast(indices) [+ offsets])`: the
//! indices stay packed (UINT4 two per byte for tables of up to 16 entries, else UINT8),
//! the centroid tables are flattened to one 1-D f32 initializer, and per-channel tables
//! are addressed by adding `c * table_len` (an INT32 initializer broadcast along the
//! channel axis) to the index before the `Gather`.

use crate::compressed::codes_i32;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, ValueId};
use crate::op::{BinaryOp, Op};
use crate::tensor::Tensor;
use crate::types::{known_shape, ValueType};

/// A clustered weight: indices into centroid tables.
#[derive(Clone, Debug)]
pub struct CodebookWeight {
    /// Indices (u4 packed two per byte for tables of up to 16 entries, else u8), in the
    /// logical shape of the weight.
    pub indices: Tensor,
    /// Centroids (f32): `[table_len]` for one table, `[channels, table_len]` per channel.
    pub centroids: Tensor,
    /// The channel axis of the weight for per-channel tables; `None` for one table.
    pub axis: Option<usize>,
}

impl CodebookWeight {
    /// Entries per table (the last dimension of `centroids`).
    pub fn table_len(&self) -> usize {
        self.centroids.shape().last().copied().unwrap_or(0)
    }

    /// Lowest default-domain opset whose ops hold the lowered form (UINT4 needs 21).
    pub fn min_opset(&self) -> i64 {
        if self.indices.dtype() == DType::U4 {
            21
        } else {
            13
        }
    }

    /// Bytes held: packed indices and centroids.
    pub fn byte_len(&self) -> usize {
        self.indices.byte_len() + self.centroids.byte_len()
    }

    /// Granularity as printed: `tensor` or `axis=A`.
    pub fn granularity(&self) -> String {
        match self.axis {
            Some(a) => format!("axis={a}"),
            None => "tensor".into(),
        }
    }

    /// Checks indices and centroids against each other; an error names `what`.
    pub fn check(&self, what: &str) -> Result<()> {
        let bad = |m: String| Error::invalid(format!("codebook weight {what}: {m}"));
        if !matches!(self.indices.dtype(), DType::U4 | DType::U8) {
            return Err(bad(format!(
                "indices of type {:?} (u4 or u8 expected)",
                self.indices.dtype()
            )));
        }
        if self.centroids.dtype() != DType::F32 {
            return Err(bad("centroids are not f32".into()));
        }
        let c = self.centroids.shape();
        match self.axis {
            None if c.len() == 1 => {}
            Some(a) if c.len() == 2 && self.indices.shape().get(a) == c.first() => {}
            _ => {
                return Err(bad(format!(
                    "centroids of shape {c:?} do not fit indices {:?} (axis {:?})",
                    self.indices.shape(),
                    self.axis
                )))
            }
        }
        if self.table_len() == 0 {
            return Err(bad("empty centroid table".into()));
        }
        Ok(())
    }

    /// Per-channel offsets into the flattened tables: `c * table_len` for channel `c`.
    fn offsets(&self) -> Vec<i32> {
        let (k, ch) = (self.table_len(), self.centroids.shape().first().copied());
        (0..ch.unwrap_or(0)).map(|c| (c * k) as i32).collect()
    }
}

/// The weight decoded to f32 in its logical shape (reference path: tests, error
/// measurement).
pub fn decode(cw: &CodebookWeight) -> Result<Vec<f32>> {
    cw.check("(decode)")?;
    let idx = codes_i32(&cw.indices)?;
    let table = cw.centroids.f32_view()?;
    let k = cw.table_len();
    let shape = cw.indices.shape();
    let (dim, inner) = match cw.axis {
        Some(a) => (
            shape.get(a).copied().unwrap_or(1),
            shape.iter().skip(a + 1).product::<usize>(),
        ),
        None => (1, 1),
    };
    idx.iter()
        .enumerate()
        .map(|(i, &c)| {
            let ch = (i / inner.max(1)) % dim.max(1);
            let at = ch * k + c as usize;
            if c as usize >= k {
                return Err(Error::invalid(format!(
                    "codebook weight: index {c} out of range for a table of {k}"
                )));
            }
            table
                .get(at)
                .copied()
                .ok_or_else(|| Error::invalid("codebook weight: centroid table too short"))
        })
        .collect()
}

/// Adds the lowered form of `cw` producing value `v` (named `name`) to `out`: constants
/// (indices, flat centroids, offsets), `Cast`, optional `Add`, `Gather`.
pub(crate) fn lower(out: &mut Graph, v: ValueId, name: &str, cw: CodebookWeight) -> Result<()> {
    cw.check(name)?;
    let shape = cw.indices.shape().to_vec();
    let offsets = cw.offsets();
    let flat_len = cw.centroids.len();
    let table = cw.centroids.reshaped(vec![flat_len])?;
    let idx = out.add_const(&out.unique_name(&format!("{name}_indices")), cw.indices)?;
    let table = out.add_const(&out.unique_name(&format!("{name}_centroids")), table)?;
    let i32_ty = Some(ValueType::tensor(DType::I32, known_shape(&shape)));
    let cast = out.add_value(&out.unique_name(&format!("{name}_index")), i32_ty.clone())?;
    let node = out.unique_name(&format!("{name}_cast"));
    out.add_node(
        &node,
        Op::Cast {
            to: DType::I32,
            saturate: None,
        },
        vec![Some(idx)],
        vec![Some(cast)],
    )?;
    let index = match cw.axis {
        None => cast,
        Some(a) => {
            let mut oshape = vec![1; shape.len()];
            if let Some(d) = oshape.get_mut(a) {
                *d = offsets.len();
            }
            let offs = Tensor::from_i32(oshape, offsets)?;
            let offs = out.add_const(&out.unique_name(&format!("{name}_offsets")), offs)?;
            let sum = out.add_value(&out.unique_name(&format!("{name}_table_index")), i32_ty)?;
            let node = out.unique_name(&format!("{name}_offset"));
            out.add_node(
                &node,
                Op::Binary(BinaryOp::Add),
                vec![Some(cast), Some(offs)],
                vec![Some(sum)],
            )?;
            sum
        }
    };
    let node = out.unique_name(&format!("{name}_lookup"));
    out.add_node(
        &node,
        Op::Gather { axis: None },
        vec![Some(table), Some(index)],
        vec![Some(v)],
    )?;
    Ok(())
}

/// The lowered pattern feeding `v`, as read back from a graph: the `Gather` node, the
/// `Cast` node, the optional `Add` node, and the constants (indices, flat table,
/// offsets).
#[derive(Clone, Debug)]
pub struct CodebookPattern {
    /// The `Gather` producing the weight.
    pub gather: NodeId,
    /// The `Cast` of the indices.
    pub cast: NodeId,
    /// The `Add` of per-channel offsets, if any.
    pub add: Option<NodeId>,
    /// The constant indices (u4/u8).
    pub indices: ValueId,
    /// The constant 1-D f32 table.
    pub table: ValueId,
    /// The constant integer offsets, if any.
    pub offsets: Option<ValueId>,
}

impl CodebookPattern {
    /// Matches `Gather(const f32 [T], Cast(const u4/u8 idx -> i32/i64) [+ const offsets])`
    /// producing `v`, with every intermediate read only by the next node. `None` if `v`
    /// is not produced that way.
    pub fn find(g: &Graph, v: ValueId) -> Option<CodebookPattern> {
        let only_use = |x: ValueId| g.value(x).uses().len() == 1 && !g.is_output(x);
        let sole_const = |x: ValueId| g.const_data(x).is_some() && !g.is_input(x) && only_use(x);
        let (gather, _) = g.value(v).producer()?;
        let gn = g.node(gather);
        if !matches!(
            gn.op,
            Op::Gather {
                axis: None | Some(0)
            }
        ) || gn.inputs().len() != 2
        {
            return None;
        }
        let (table, index) = (gn.input(0)?, gn.input(1)?);
        let t = g.const_data(table)?;
        if !sole_const(table) || t.dtype() != DType::F32 || t.shape().len() != 1 {
            return None;
        }
        if !only_use(index) {
            return None;
        }
        let (pn, _) = g.value(index).producer()?;
        let (cast, add, offsets) = match g.node(pn).op {
            Op::Cast { .. } => (pn, None, None),
            Op::Binary(BinaryOp::Add) => {
                let an = g.node(pn);
                let (a, o) = (an.input(0)?, an.input(1)?);
                let ot = g.const_data(o)?;
                if !sole_const(o) || !only_use(a) || !matches!(ot.dtype(), DType::I32 | DType::I64)
                {
                    return None;
                }
                let (cn, _) = g.value(a).producer()?;
                (cn, Some(pn), Some(o))
            }
            _ => return None,
        };
        let cn = g.node(cast);
        let Op::Cast { to, .. } = cn.op else {
            return None;
        };
        let indices = cn.input(0)?;
        let it = g.const_data(indices)?;
        if !matches!(to, DType::I32 | DType::I64)
            || !sole_const(indices)
            || !matches!(it.dtype(), DType::U4 | DType::U8)
            || cn.outputs().len() != 1
            || gn.outputs().len() != 1
        {
            return None;
        }
        Some(CodebookPattern {
            gather,
            cast,
            add,
            indices,
            table,
            offsets,
        })
    }

    /// The weight this pattern computes, if its offsets are the per-channel form
    /// [`lower`] writes (`c * table_len` along one axis).
    pub fn weight(&self, g: &Graph) -> Option<CodebookWeight> {
        let indices = g.const_data(self.indices)?.clone();
        let table = g.const_data(self.table)?;
        let shape = indices.shape().to_vec();
        let (axis, k) = match self.offsets {
            None => (None, table.len()),
            Some(o) => {
                let ot = g.const_data(o)?;
                let os = ot.shape();
                if os.len() != shape.len() {
                    return None;
                }
                let mut axes = os.iter().enumerate().filter(|(_, &d)| d != 1);
                let (a, &ch) = axes.next()?;
                if axes.next().is_some() || shape.get(a) != Some(&ch) || table.len() % ch != 0 {
                    return None;
                }
                let k = table.len() / ch;
                let vals = ot.to_i64_lossless().ok()?;
                if vals.iter().enumerate().any(|(c, &x)| x != (c * k) as i64) {
                    return None;
                }
                (Some(a), k)
            }
        };
        let centroids = match axis {
            None => table.clone(),
            Some(_) => table.reshaped(vec![table.len() / k.max(1), k]).ok()?,
        };
        let cw = CodebookWeight {
            indices,
            centroids,
            axis,
        };
        cw.check("(import)").ok()?;
        // Every index must address its own table.
        let idx = codes_i32(&cw.indices).ok()?;
        idx.iter().all(|&c| (c as usize) < k).then_some(cw)
    }
}

/// Raises every lowered codebook pattern of `g` (see [`CodebookPattern`]) whose output
/// is not a graph output back into a codebook value. Returns how many were raised.
pub(crate) fn raise(g: &mut Graph) -> Result<usize> {
    let mut raised = 0;
    for id in g.topo_order()? {
        let Some(v) = g.node(id).output(0) else {
            continue;
        };
        if !matches!(g.node(id).op, Op::Gather { .. }) || g.is_output(v) {
            continue;
        }
        let Some(p) = CodebookPattern::find(g, v) else {
            continue;
        };
        let Some(cw) = p.weight(g) else { continue };
        let ty = ValueType::tensor(DType::F32, known_shape(cw.indices.shape()));
        let consts: Vec<ValueId> = [Some(p.indices), Some(p.table), p.offsets]
            .into_iter()
            .flatten()
            .collect();
        let mids: Vec<ValueId> = [p.cast, p.add.unwrap_or(p.cast)]
            .iter()
            .filter_map(|&n| g.node(n).output(0))
            .collect();
        g.remove_node(p.gather);
        if let Some(a) = p.add {
            g.remove_node(a);
        }
        g.remove_node(p.cast);
        // Free the dead values' names (so lowering again writes the same names) and data.
        for v in consts.into_iter().chain(mids) {
            if g.is_live(v) {
                continue;
            }
            let free = g.unique_name(&format!("{}.raised", g.value(v).name()));
            g.rename_value(v, &free)?;
            g.value_mut(v).data = None;
        }
        let val = g.value_mut(v);
        val.ty = Some(ty);
        val.compressed = Some(crate::compressed::Compressed::Codebook(cw));
        raised += 1;
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compressed::{lower_compressed, pack_4bit, raise_compressed, Compressed};

    fn weight(axis: Option<usize>) -> CodebookWeight {
        let idx: Vec<i32> = (0..12).map(|i| (i * 5) % 4).collect();
        let indices = Tensor::from_raw(DType::U4, vec![3, 4], pack_4bit(&idx).into()).unwrap();
        let centroids = match axis {
            None => Tensor::from_f32(vec![4], vec![-1.0, 0.0, 0.5, 2.0]).unwrap(),
            Some(a) => {
                let ch = [3, 4][a];
                let v = (0..ch * 4).map(|i| i as f32 * 0.25).collect();
                Tensor::from_f32(vec![ch, 4], v).unwrap()
            }
        };
        CodebookWeight {
            indices,
            centroids,
            axis,
        }
    }

    #[test]
    fn decode_uses_the_channel_table() {
        // Indices 0 1 2 3 / 0 1 2 3 / 0 1 2 3 (i*5 % 4).
        assert_eq!(
            decode(&weight(None)).unwrap(),
            [-1.0, 0.0, 0.5, 2.0].repeat(3)
        );
        let d = decode(&weight(Some(0))).unwrap();
        assert_eq!(&d[4..8], &[1.0, 1.25, 1.5, 1.75]);
        let d = decode(&weight(Some(1))).unwrap();
        // Column c, index c: table c entry c = (4c + c) / 4.
        assert_eq!(&d[0..4], &[0.0, 1.25, 2.5, 3.75]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut w = weight(Some(0));
        w.axis = Some(1);
        assert!(w
            .check("w")
            .unwrap_err()
            .to_string()
            .contains("codebook weight w"));
    }

    #[test]
    fn lowering_round_trips_through_raise() {
        for axis in [None, Some(0), Some(1)] {
            let mut g = Graph::new("g");
            let w = g
                .add_value(
                    "w",
                    Some(ValueType::tensor(DType::F32, known_shape(&[3, 4]))),
                )
                .unwrap();
            g.value_mut(w).compressed = Some(Compressed::Codebook(weight(axis)));
            let y = g.add_value("y", None).unwrap();
            g.add_node(
                "neg",
                Op::Unary(crate::op::UnaryOp::Neg),
                vec![Some(w)],
                vec![Some(y)],
            )
            .unwrap();
            g.set_outputs(vec![y]);
            g.meta.opset_imports = vec![(String::new(), 17)];
            let mut l = lower_compressed(&g).unwrap();
            assert_eq!(l.meta.opset_imports, vec![(String::new(), 21)]);
            let p = CodebookPattern::find(&l, w).unwrap();
            assert_eq!(p.add.is_some(), axis.is_some());
            assert_eq!(raise_compressed(&mut l).unwrap(), 1);
            let Some(Compressed::Codebook(cw)) = &l.value(w).compressed else {
                panic!("not raised")
            };
            assert_eq!(cw.axis, axis);
            assert_eq!(decode(cw).unwrap(), decode(&weight(axis)).unwrap());
            assert_eq!(l.node_count(), 1, "only the reader is left");
        }
    }
}
