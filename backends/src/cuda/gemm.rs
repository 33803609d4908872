//! The tiled shared-memory GEMM every matrix op lowers to, and Gemm/MatMul.
//!
//! `C[z][m][n] = sum_k A(z,m,k) * B(z,k,n)` in 64x64 output tiles per block of 256
//! threads (each thread 4x4 outputs, strided by 16 so shared-memory reads do not
//! conflict), stepping K by 16. The operand loaders and the store are code snippets:
//! a loader sets `v` from `(z, m, k)` / `(z, k, n)` (dequantizing quantized weights as
//! it loads), the store writes `v` for `(z, m, n)` after the bias and the fused
//! elementwise epilogue. Conv reuses it as an implicit GEMM ([`super::conv`]).

use super::elementwise::chain_code;
use super::shapes::{broadcast_index, dims, f32_literal, require_f32};
use super::weights::{Buf, Param, Weights};
use super::Draft;
use cc_ir::{Error, Graph, NodeId, Op, Result};

/// Output tile rows/columns and the K step.
pub const TILE: usize = 64;
/// K step of the tiled loop.
pub const TILE_K: usize = 16;
/// Threads per GEMM block.
pub const THREADS: u32 = 256;

/// A GEMM to emit.
#[derive(Clone, Debug)]
pub struct GemmSpec {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Independent GEMMs (grid z).
    pub batch: usize,
    /// Sets `v` from `z, m, k`.
    pub load_a: String,
    /// True when consecutive k of A are adjacent in memory (loads run along k).
    pub a_k_contig: bool,
    /// Sets `v` from `z, k, n`.
    pub load_b: String,
    /// True when consecutive k of B are adjacent in memory.
    pub b_k_contig: bool,
    /// Writes `v` (the sum) for `z, m, n`.
    pub store: String,
}

impl GemmSpec {
    /// The kernel body (after the signature) and its grid.
    pub fn body(&self) -> Result<(String, [u32; 3])> {
        let grid = [self.n.div_ceil(TILE), self.m.div_ceil(TILE), self.batch];
        if grid[1] > 65535 || grid[2] > 65535 || grid[0] > i32::MAX as usize {
            return Err(Error::unsupported(format!(
                "cuda backend: GEMM {}x{}x{} (batch {}) exceeds the grid limits",
                self.m, self.n, self.k, self.batch
            )));
        }
        let tile_loop = |rows: &str, k_contig: bool, load: &str, dst: &str, row_var: &str| {
            // The thread -> (row, kk) mapping follows the contiguous index so that
            // neighbouring threads read neighbouring addresses.
            let (kk, rr) = if k_contig {
                (format!("i % {TILE_K}"), format!("i / {TILE_K}"))
            } else {
                (format!("i / {TILE}"), format!("i % {TILE}"))
            };
            format!(
                "        for (int i = threadIdx.x; i < {TILE} * {TILE_K}; i += {THREADS}) {{\n            int kk = {kk}, rr = {rr};\n            int k = k0 + kk, {row_var} = {rows} + rr;\n            float v = 0.0f;\n            if ({row_var} < {lim} && k < {K}) {{\n{load}            }}\n            {dst}[kk][rr] = v;\n        }}\n",
                lim = if row_var == "m" { self.m } else { self.n },
                K = self.k,
                load = indent(load, 16),
            )
        };
        let body = format!(
            "    __shared__ float As[{TILE_K}][{TILE} + 4];\n    __shared__ float Bs[{TILE_K}][{TILE} + 4];\n    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;\n    const int m0 = blockIdx.y * {TILE}, n0 = blockIdx.x * {TILE};\n    const int z = blockIdx.z;\n    (void)z;\n    float acc[4][4];\n    #pragma unroll\n    for (int i = 0; i < 4; ++i) {{\n        #pragma unroll\n        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;\n    }}\n    for (int k0 = 0; k0 < {K}; k0 += {TILE_K}) {{\n{la}{lb}        __syncthreads();\n        #pragma unroll\n        for (int kk = 0; kk < {TILE_K}; ++kk) {{\n            float ra[4], rb[4];\n            #pragma unroll\n            for (int i = 0; i < 4; ++i) {{ ra[i] = As[kk][ty + 16 * i]; rb[i] = Bs[kk][tx + 16 * i]; }}\n            #pragma unroll\n            for (int i = 0; i < 4; ++i) {{\n                #pragma unroll\n                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);\n            }}\n        }}\n        __syncthreads();\n    }}\n    #pragma unroll\n    for (int i = 0; i < 4; ++i) {{\n        #pragma unroll\n        for (int j = 0; j < 4; ++j) {{\n            const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;\n            if (m >= {M} || n >= {N}) continue;\n            float v = acc[i][j];\n{store}        }}\n    }}\n",
            K = self.k,
            M = self.m,
            N = self.n,
            la = tile_loop("m0", self.a_k_contig, &self.load_a, "As", "m"),
            lb = tile_loop("n0", self.b_k_contig, &self.load_b, "Bs", "n"),
            store = indent(&self.store, 12),
        );
        Ok((body, [grid[0] as u32, grid[1] as u32, grid[2] as u32]))
    }
}

/// `code` with each line indented by `n` spaces (lines already carry 4).
pub fn indent(code: &str, n: usize) -> String {
    let pad = " ".repeat(n.saturating_sub(4));
    code.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

/// The fused epilogue after an anchor node: the code of `chain` (the elementwise nodes
/// after it, possibly none) at flat index `o`, and the value finally written.
pub fn epilogue(
    g: &Graph,
    anchor: NodeId,
    chain: &[NodeId],
    w: &mut Weights,
    params: &mut Vec<Param>,
) -> Result<(String, cc_ir::ValueId)> {
    let label = g.node_label(anchor);
    let y = g
        .node(anchor)
        .output(0)
        .ok_or_else(|| Error::invalid(format!("node {label} has no output")))?;
    require_f32(g, y, &label)?;
    if chain.is_empty() {
        return Ok((String::new(), y));
    }
    chain_code(g, chain, Some(y), &dims(g, y)?, "o", w, params)
}

/// Lowers a Gemm or MatMul node and the elementwise `chain` fused after it.
pub fn lower(g: &Graph, id: NodeId, chain: &[NodeId], w: &mut Weights) -> Result<Draft> {
    let node = g.node(id);
    let label = g.node_label(id);
    let input = |slot: usize| {
        node.input(slot)
            .ok_or_else(|| Error::invalid(format!("node {label}: input {slot} missing")))
    };
    let (a_v, b_v) = (input(0)?, input(1)?);
    let a = w.operand(g, a_v, &label)?;
    let b = w.operand(g, b_v, &label)?;
    let mut params = vec![Param {
        name: "y".into(),
        ty: "float*",
        buf: Buf::Value(a_v), // replaced below with the final output
    }];
    params.extend(a.params("a"));
    params.extend(b.params("b"));
    let mut helpers = a.helper("$K_a");
    helpers.push_str(&b.helper("$K_b"));
    let la = |i: &str| a.load("a", "$K_a", i);
    let lb = |i: &str| b.load("b", "$K_b", i);
    let (ad, bd) = (dims(g, a_v)?, dims(g, b_v)?);
    let y_v = node
        .output(0)
        .ok_or_else(|| Error::invalid(format!("node {label} has no output")))?;
    let yd = dims(g, y_v)?;
    let spec = match &node.op {
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let (ta, tb) = (trans_a.unwrap_or(0) != 0, trans_b.unwrap_or(0) != 0);
            let ([d0, d1], [e0, e1]) = (two(&ad, &label)?, two(&bd, &label)?);
            let (m, k) = if ta { (d1, d0) } else { (d0, d1) };
            let n = if tb { e0 } else { e1 };
            if (if tb { e1 } else { e0 }) != k {
                return Err(Error::invalid(format!(
                    "node {label}: Gemm shapes {ad:?} x {bd:?} do not agree"
                )));
            }
            let mut store = format!("    const int o = m * {n} + n;\n");
            let alpha = alpha.unwrap_or(1.0);
            if alpha != 1.0 {
                store.push_str(&format!("    v *= {};\n", f32_literal(alpha)));
            }
            if let Some(c_v) = node.input(2) {
                let beta = beta.unwrap_or(1.0);
                let c = w.plain_f32(g, c_v, &label)?;
                params.push(Param::input("c", c));
                let ci = broadcast_index("o", &[m, n], &dims(g, c_v)?)?;
                let term = if beta == 1.0 {
                    format!("c[{ci}]")
                } else {
                    format!("{} * c[{ci}]", f32_literal(beta))
                };
                store.push_str(&format!("    v += {term};\n"));
            }
            GemmSpec {
                m,
                n,
                k,
                batch: 1,
                load_a: format!(
                    "    v = {};\n",
                    if ta {
                        la(&format!("k * {m} + m"))
                    } else {
                        la(&format!("m * {k} + k"))
                    }
                ),
                a_k_contig: !ta,
                load_b: format!(
                    "    v = {};\n",
                    if tb {
                        lb(&format!("n * {k} + k"))
                    } else {
                        lb(&format!("k * {n} + n"))
                    }
                ),
                b_k_contig: tb,
                store,
            }
        }
        Op::MatMul => matmul_spec(&ad, &bd, &yd, &label, &la, &lb)?,
        other => {
            return Err(Error::unsupported(format!(
                "cuda backend: node {label}: {} is not a GEMM",
                other.onnx_type().1
            )))
        }
    };
    let (code, last) = epilogue(g, id, chain, w, &mut params)?;
    if let Some(p) = params.first_mut() {
        p.buf = Buf::Value(last);
    }
    let mut spec = spec;
    spec.store.push_str(&code);
    spec.store.push_str("    y[o] = v;\n");
    let (body, grid) = spec.body()?;
    let mut nodes = vec![label];
    nodes.extend(chain.iter().map(|&c| g.node_label(c)));
    let mut base = node.op.onnx_type().1.to_ascii_lowercase();
    if a.is_quantized() || b.is_quantized() {
        base.push_str("_dq");
    }
    for &c in chain {
        base.push('_');
        base.push_str(&g.node(c).op.onnx_type().1.to_ascii_lowercase());
    }
    Ok(Draft {
        base,
        nodes,
        params,
        helpers,
        body,
        grid,
        block: THREADS,
        output: last,
    })
}

fn two(d: &[usize], label: &str) -> Result<[usize; 2]> {
    match d {
        [a, b] => Ok([*a, *b]),
        _ => Err(Error::unsupported(format!(
            "cuda backend: node {label}: Gemm operand of rank {} (expected 2)",
            d.len()
        ))),
    }
}

/// MatMul with numpy semantics: 1-D operands promoted, a 2-D right operand folds the
/// left operand's leading dimensions into M, otherwise batches run over grid z with
/// broadcasting.
fn matmul_spec(
    ad: &[usize],
    bd: &[usize],
    yd: &[usize],
    label: &str,
    la: &dyn Fn(&str) -> String,
    lb: &dyn Fn(&str) -> String,
) -> Result<GemmSpec> {
    if ad.is_empty() || bd.is_empty() {
        return Err(Error::invalid(format!("node {label}: MatMul of a scalar")));
    }
    let a2: Vec<usize> = if ad.len() == 1 {
        vec![1, ad[0]]
    } else {
        ad.to_vec()
    };
    let b2: Vec<usize> = if bd.len() == 1 {
        vec![bd[0], 1]
    } else {
        bd.to_vec()
    };
    let (ar, br) = (a2.len(), b2.len());
    let (m, k) = (a2[ar - 2], a2[ar - 1]);
    let (kb, n) = (b2[br - 2], b2[br - 1]);
    if k != kb {
        return Err(Error::invalid(format!(
            "node {label}: MatMul shapes {ad:?} x {bd:?} do not agree"
        )));
    }
    let store = format!("    const int o = (z * {m} + m) * {n} + n;\n");
    if br == 2 {
        let rows: usize = a2[..ar - 1].iter().product();
        return Ok(GemmSpec {
            m: rows,
            n,
            k,
            batch: 1,
            load_a: format!("    v = {};\n", la(&format!("m * {k} + k"))),
            a_k_contig: true,
            load_b: format!("    v = {};\n", lb(&format!("k * {n} + n"))),
            b_k_contig: false,
            store: format!("    const int o = m * {n} + n;\n"),
        });
    }
    let batch_dims = broadcast_dims(&a2[..ar - 2], &b2[..br - 2]).ok_or_else(|| {
        Error::invalid(format!(
            "node {label}: MatMul batch dimensions of {ad:?} and {bd:?} do not broadcast"
        ))
    })?;
    let want: usize = batch_dims.iter().product::<usize>() * m * n;
    if yd.iter().product::<usize>() != want {
        return Err(Error::invalid(format!(
            "node {label}: MatMul output {yd:?} does not fit {ad:?} x {bd:?}"
        )));
    }
    let batch: usize = batch_dims.iter().product();
    let za = broadcast_index("z", &batch_dims, &a2[..ar - 2])?;
    let zb = broadcast_index("z", &batch_dims, &b2[..br - 2])?;
    Ok(GemmSpec {
        m,
        n,
        k,
        batch,
        load_a: format!(
            "    v = {};\n",
            la(&format!("({za}) * {} + m * {k} + k", m * k))
        ),
        a_k_contig: true,
        load_b: format!(
            "    v = {};\n",
            lb(&format!("({zb}) * {} + k * {n} + n", k * n))
        ),
        b_k_contig: false,
        store,
    })
}

/// Multidirectional broadcast of two shapes, `None` when they do not broadcast.
fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(m: usize, n: usize, k: usize) -> GemmSpec {
        GemmSpec {
            m,
            n,
            k,
            batch: 1,
            load_a: "    v = a[m * 7 + k];\n".into(),
            a_k_contig: true,
            load_b: "    v = b[k * 5 + n];\n".into(),
            b_k_contig: false,
            store: "    y[m * 5 + n] = v;\n".into(),
        }
    }

    #[test]
    fn grid_covers_the_output_in_tiles() {
        let (body, grid) = spec(130, 5, 7).body().unwrap();
        assert_eq!(grid, [1, 3, 1]);
        assert!(body.contains("if (m < 130 && k < 7) {"), "{body}");
        assert!(body.contains("if (n < 5 && k < 7) {"), "{body}");
        assert!(body.contains("if (m >= 130 || n >= 5) continue;"));
        // A runs along k (k-contiguous), B along n.
        assert!(body.contains("int kk = i % 16, rr = i / 16;"));
        assert!(body.contains("int kk = i / 64, rr = i % 64;"));
        // Balanced braces.
        assert_eq!(body.matches('{').count(), body.matches('}').count());
        let mut big = spec(64 * 70000, 1, 1);
        big.batch = 1;
        assert!(big.body().is_err());
    }

    #[test]
    fn batched_matmul_broadcasts_the_batch() {
        let id = |s: &str| format!("A[{s}]");
        let s = matmul_spec(&[2, 3, 4, 5], &[3, 5, 6], &[2, 3, 4, 6], "mm", &id, &id).unwrap();
        assert_eq!((s.m, s.n, s.k, s.batch), (4, 6, 5, 6));
        assert_eq!(s.load_a, "    v = A[(z) * 20 + m * 5 + k];\n");
        assert_eq!(s.load_b, "    v = A[((z) % 3) * 30 + k * 6 + n];\n");
        let s = matmul_spec(&[2, 3, 4, 5], &[5, 6], &[2, 3, 4, 6], "mm", &id, &id).unwrap();
        assert_eq!((s.m, s.n, s.k, s.batch), (24, 6, 5, 1));
        let s = matmul_spec(&[5], &[5, 6], &[6], "mm", &id, &id).unwrap();
        assert_eq!((s.m, s.n, s.k), (1, 6, 5));
        assert!(matmul_spec(&[2, 4], &[5, 6], &[2, 6], "mm", &id, &id).is_err());
        assert!(matmul_spec(&[2, 4, 5], &[3, 5, 6], &[2, 4, 6], "mm", &id, &id).is_err());
        assert_eq!(broadcast_dims(&[2, 1], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_dims(&[], &[4]), Some(vec![4]));
        assert_eq!(broadcast_dims(&[2], &[3]), None);
    }
}
