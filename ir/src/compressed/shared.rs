//! Randomized parameter sharing (ROAST / STABLE-RPS): many weights read one shared f32
//! array through a seeded hash of each element's position, with a ±1 sign hash.
//!
//! All weights of one `share` run are laid end to end in a global position space; the
//! weight at `offset` with `n` elements owns positions `offset .. offset + n` (row-major).
//! The shared array has `m = L·M` slots: chunks of `L` consecutive positions, `M` (a
//! prime) chunk slots. For position `p` (`P = 2^31 − 1`, every hash value below `P`):
//!
//! ```text
//! c = p div L,  i = p mod L            chunk and place in the chunk
//! f = c div M,  k = c mod M            fold (M chunks each) and chunk in the fold
//! A = 1 + ((a1·f + b1) mod P) mod (M − 1)
//! B = (a2·f + b2) mod P mod M
//! slot = ((A·k + B) mod M)·L + i       a random affine permutation of each fold's chunks
//! t = (a3·p + b3) mod P,  u = (t·p + c3) mod P
//! sign = +1 if u is even, −1 if odd    (quadratic hash: no alternating pattern)
//! w[p] = scale · sign · shared[slot]
//! ```
//!
//! Like STABLE-RPS's RandomFold, the positions are cut into folds of `m` and every
//! fold is mapped onto the whole array by a bijection (`M` prime makes every `A` in
//! `1..M` invertible), so each slot holds ⌊N/m⌋ or ⌈N/m⌉ elements: the best possible
//! load. Within a chunk the slots are contiguous, as in ROAST. With `m ≥ N` there is one
//! fold and the map is injective, so `ratio=1` reproduces every weight exactly. `scale`
//! (a power of two near the weight's RMS, as ROAST's per-module scale) lets layers of
//! different magnitude share slots; being a power of two, it divides and multiplies
//! back exactly.
//!
//! The products stay below 2^62 (`a·f`, `t·p` with both factors below 2^31), so the
//! lowered ONNX form computes the same integers in int64.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::op::{BinaryOp, Op};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// The prime modulus of every hash: 2^31 − 1.
pub const PRIME: u64 = 2_147_483_647;

/// The seeded mapping from global positions to slots and signs (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Chunk length `L` (≥ 1): consecutive positions that stay consecutive in the array.
    pub chunk: u64,
    /// Chunk slots `M` (a prime ≥ 2); the array has `L·M` slots.
    pub chunks: u64,
    /// `a1, b1, a2, b2`: the hashes of the fold giving `A` and `B` (each in `1..P`).
    pub perm: [u64; 4],
    /// `a3, b3, c3`: the sign hash of the position (each in `1..P`).
    pub sign: [u64; 3],
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl HashParams {
    /// Parameters for chunks of `chunk` and at least `min_chunks` chunk slots (rounded
    /// up to a prime), with the hash coefficients drawn from `seed`.
    pub fn new(seed: u64, chunk: u64, min_chunks: u64) -> Result<HashParams> {
        let chunk = chunk.max(1);
        let chunks = next_prime(min_chunks.max(2));
        if chunk.saturating_mul(chunks) >= PRIME {
            return Err(Error::invalid(format!(
                "shared weights: {chunks} chunks of {chunk} do not fit below 2^31"
            )));
        }
        let mut s = seed;
        let mut draw = || 1 + splitmix(&mut s) % (PRIME - 1);
        Ok(HashParams {
            chunk,
            chunks,
            perm: [draw(), draw(), draw(), draw()],
            sign: [draw(), draw(), draw()],
        })
    }

    /// Slots of the shared array: `L·M`.
    pub fn slots(&self) -> u64 {
        self.chunk * self.chunks
    }

    /// Checks the invariants the formula and its int64 lowering rely on.
    pub fn check(&self, what: &str) -> Result<()> {
        let bad = |m: &str| Error::invalid(format!("shared weight {what}: {m}"));
        if self.chunk == 0 || self.chunks < 2 || !is_prime(self.chunks) {
            return Err(bad("chunk length 0 or chunk count not a prime ≥ 2"));
        }
        if self.chunk.saturating_mul(self.chunks) >= PRIME {
            return Err(bad("array of 2^31 slots or more"));
        }
        if self
            .perm
            .iter()
            .chain(&self.sign)
            .any(|&x| x == 0 || x >= PRIME)
        {
            return Err(bad("hash coefficient out of 1..2^31-1"));
        }
        Ok(())
    }

    /// First slot of chunk `c` (global chunk index).
    pub fn chunk_base(&self, c: u64) -> u64 {
        let (m, [a1, b1, a2, b2]) = (self.chunks, self.perm);
        let (f, k) = (c / m, c % m);
        let a = 1 + ((a1 * f + b1) % PRIME) % (m - 1).max(1);
        let b = ((a2 * f + b2) % PRIME) % m;
        ((a * k + b) % m) * self.chunk
    }

    /// The slot of global position `p`.
    pub fn slot(&self, p: u64) -> u64 {
        self.chunk_base(p / self.chunk) + p % self.chunk
    }

    /// True when position `p` reads its slot negated.
    pub fn negative(&self, p: u64) -> bool {
        let [a3, b3, c3] = self.sign;
        let t = (a3 * p + b3) % PRIME;
        ((t * p + c3) % PRIME) % 2 == 1
    }
}

/// True when `n` is prime.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The smallest prime ≥ `n`.
pub fn next_prime(n: u64) -> u64 {
    let mut p = n.max(2);
    while !is_prime(p) {
        p += 1;
    }
    p
}

/// A weight read from a shared array (randomized parameter sharing).
#[derive(Clone, Debug)]
pub struct SharedWeight {
    /// The shared f32 array `[L·M]`; every weight of one `share` run holds the same
    /// tensor (clones share its bytes).
    pub array: Tensor,
    /// The name the array is written under (one initializer for all its weights).
    pub array_name: String,
    /// The weight's logical shape.
    pub shape: Vec<usize>,
    /// The weight's first position in the global position space.
    pub offset: u64,
    /// The weight's scale (a power of two).
    pub scale: f32,
    /// The position → slot / sign mapping.
    pub hash: HashParams,
}

impl SharedWeight {
    /// Elements of the weight.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a weight without elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lowest default-domain opset of the lowered form (`Range` needs 11).
    pub fn min_opset(&self) -> i64 {
        11
    }

    /// Bytes this weight holds beyond the shared array: its scale (the array is counted
    /// once per array, see [`Compressed::shared_array`](crate::Compressed::shared_array)).
    pub fn byte_len(&self) -> usize {
        4
    }

    /// Checks the array against the mapping; an error names `what`.
    pub fn check(&self, what: &str) -> Result<()> {
        self.hash.check(what)?;
        let bad = |m: String| Error::invalid(format!("shared weight {what}: {m}"));
        if self.array.dtype() != DType::F32 || self.array.shape() != [self.hash.slots() as usize] {
            return Err(bad(format!(
                "array {} {:?} is not f32 [{}]",
                self.array.dtype(),
                self.array.shape(),
                self.hash.slots()
            )));
        }
        let end = self.offset.checked_add(self.len() as u64);
        if end.is_none_or(|e| e >= PRIME) {
            return Err(bad("positions reach 2^31".into()));
        }
        if !self.scale.is_finite() || self.scale == 0.0 {
            return Err(bad(format!("scale {}", self.scale)));
        }
        Ok(())
    }
}

/// The weight decoded to f32 in its logical shape (row-major): what the executor runs
/// and the lowered ONNX form computes.
pub fn decode(sw: &SharedWeight) -> Result<Vec<f32>> {
    sw.check("(decode)")?;
    let arr = sw.array.f32_view()?;
    let h = &sw.hash;
    let (n, start) = (sw.len() as u64, sw.offset);
    let mut out = Vec::with_capacity(n as usize);
    let mut p = start;
    while p < start + n {
        let c = p / h.chunk;
        let end = ((c + 1) * h.chunk).min(start + n);
        let (base, first) = (h.chunk_base(c), c * h.chunk);
        for q in p..end {
            let v = arr
                .get((base + q - first) as usize)
                .copied()
                .ok_or_else(|| Error::invalid("shared weight: slot out of range"))?;
            let v = v * sw.scale;
            out.push(if h.negative(q) { -v } else { v });
        }
        p = end;
    }
    Ok(out)
}

/// A copy of `g` in which every shared weight is a plain f32 constant (decoded once):
/// how the CPU executor runs them. `None` when `g` has no shared weight.
pub fn materialize(g: &Graph) -> Result<Option<Graph>> {
    let vs: Vec<ValueId> = crate::compressed::compressed_values(g)
        .into_iter()
        .filter(|&v| matches!(g.value(v).compressed, Some(super::Compressed::Shared(_))))
        .collect();
    if vs.is_empty() {
        return Ok(None);
    }
    let mut out = g.clone();
    for v in vs {
        let Some(super::Compressed::Shared(sw)) = out.value_mut(v).compressed.take() else {
            continue;
        };
        let w =
            decode(&sw).map_err(|e| Error::invalid(format!("value {}: {e}", g.value(v).name())))?;
        out.value_mut(v).data = Some(Tensor::from_f32_vec(sw.shape.clone(), w)?);
    }
    Ok(Some(out))
}

/// What [`lower`] adds once per shared array: the array decoded over the whole position
/// space, `sign(p) · array[slot(p)]` for `p` in `0..end` (unscaled), in int64 integer
/// ops; each weight then takes its slice of it.
pub(crate) struct ArrayConsts {
    decoded: ValueId,
}

fn scalar(out: &mut Graph, name: &str, x: u64) -> Result<ValueId> {
    let t = Tensor::from_i64(vec![], vec![x as i64])?;
    out.add_const(&out.unique_name(name), t)
}

impl ArrayConsts {
    /// The decoding chain for the array of `sw` over positions `0..end`.
    fn new(out: &mut Graph, sw: &SharedWeight, end: u64) -> Result<ArrayConsts> {
        let a = sw.array_name.clone();
        let h = &sw.hash;
        let array = out.add_const(&out.unique_name(&a), sw.array.clone())?;
        let c = [
            h.perm[0], h.perm[1], h.perm[2], h.perm[3], h.sign[0], h.sign[1], h.sign[2],
        ];
        let names = ["a1", "b1", "a2", "b2", "a3", "b3", "c3"];
        let mut coef = [array; 7];
        for (slot, (n, x)) in coef.iter_mut().zip(names.iter().zip(c)) {
            *slot = scalar(out, &format!("{a}_{n}"), x)?;
        }
        let chunk = scalar(out, &format!("{a}_chunk"), h.chunk)?;
        let chunks = scalar(out, &format!("{a}_chunks"), h.chunks)?;
        let chunks_less_one = scalar(out, &format!("{a}_chunks_less_one"), h.chunks - 1)?;
        let prime = scalar(out, &format!("{a}_prime"), PRIME)?;
        let zero = scalar(out, &format!("{a}_zero"), 0)?;
        let one = scalar(out, &format!("{a}_one"), 1)?;
        let two = scalar(out, &format!("{a}_two"), 2)?;
        let limit = scalar(out, &format!("{a}_end"), end)?;
        // Intermediates stay untyped (no value_info records: the file stays small).
        let mut step = 0usize;
        let mut node = |out: &mut Graph, op: Op, ins: Vec<ValueId>| -> Result<ValueId> {
            step += 1;
            let label = out.unique_name(&format!("{a}/s{step}"));
            let o = out.add_value(&label, None)?;
            let ins = ins.into_iter().map(Some).collect();
            out.add_node(&label, op, ins, vec![Some(o)])?;
            Ok(o)
        };
        let (add, mul, div) = (
            Op::Binary(BinaryOp::Add),
            Op::Binary(BinaryOp::Mul),
            Op::Binary(BinaryOp::Div),
        );
        let md = Op::Mod { fmod: None };
        let p = node(out, Op::Range, vec![zero, limit, one])?;
        let c = node(out, div.clone(), vec![p, chunk])?;
        let i = node(out, md.clone(), vec![p, chunk])?;
        let f = node(out, div, vec![c, chunks])?;
        let kk = node(out, md.clone(), vec![c, chunks])?;
        // A = 1 + ((a1·f + b1) mod P) mod (M − 1)
        let x = node(out, mul.clone(), vec![f, coef[0]])?;
        let x = node(out, add.clone(), vec![x, coef[1]])?;
        let x = node(out, md.clone(), vec![x, prime])?;
        let x = node(out, md.clone(), vec![x, chunks_less_one])?;
        let a_ = node(out, add.clone(), vec![x, one])?;
        // B = ((a2·f + b2) mod P) mod M
        let x = node(out, mul.clone(), vec![f, coef[2]])?;
        let x = node(out, add.clone(), vec![x, coef[3]])?;
        let x = node(out, md.clone(), vec![x, prime])?;
        let b = node(out, md.clone(), vec![x, chunks])?;
        // slot = ((A·k + B) mod M)·L + i
        let x = node(out, mul.clone(), vec![a_, kk])?;
        let x = node(out, add.clone(), vec![x, b])?;
        let x = node(out, md.clone(), vec![x, chunks])?;
        let x = node(out, mul.clone(), vec![x, chunk])?;
        let slot = node(out, add.clone(), vec![x, i])?;
        // sign bit = ((((a3·p + b3) mod P)·p + c3) mod P) mod 2
        let x = node(out, mul.clone(), vec![p, coef[4]])?;
        let x = node(out, add.clone(), vec![x, coef[5]])?;
        let x = node(out, md.clone(), vec![x, prime])?;
        let x = node(out, mul.clone(), vec![x, p])?;
        let x = node(out, add, vec![x, coef[6]])?;
        let x = node(out, md.clone(), vec![x, prime])?;
        let bit = node(out, md, vec![x, two])?;
        let signs = Tensor::from_f32(vec![2], vec![1.0, -1.0])?;
        let signs = out.add_const(&out.unique_name(&format!("{a}_signs")), signs)?;
        let gather = Op::Gather { axis: None };
        let z = node(out, gather.clone(), vec![array, slot])?;
        let s = node(out, gather, vec![signs, bit])?;
        let decoded = node(out, mul, vec![z, s])?;
        Ok(ArrayConsts { decoded })
    }
}

/// Adds the lowered form of `sw` producing `v` (named `name`) to `out`. Once per array
/// (kept in `arrays` by array name): the array, the hash constants and the array decoded
/// over all positions — `Range(0, end)`, the hash of the module docs in int64 `Div`,
/// `Mod`, `Mul`, `Add`, then `Gather(array, slot) · Gather([1, −1], sign bit)`. Per
/// weight: its `Slice(offset, offset + n)` of that, times its scale, `Reshape`d to its
/// shape (three nodes, so many small weights cost the file little).
pub(crate) fn lower(
    out: &mut Graph,
    v: ValueId,
    name: &str,
    sw: SharedWeight,
    arrays: &mut BTreeMap<String, ArrayConsts>,
) -> Result<()> {
    sw.check(name)?;
    if !arrays.contains_key(&sw.array_name) {
        // The decoded span covers every weight of this array still to be lowered.
        let mut end = sw.offset + sw.len() as u64;
        for u in crate::compressed::compressed_values(out) {
            if let Some(super::Compressed::Shared(o)) = &out.value(u).compressed {
                if o.array_name == sw.array_name {
                    end = end.max(o.offset + o.len() as u64);
                }
            }
        }
        let k = ArrayConsts::new(out, &sw, end)?;
        arrays.insert(sw.array_name.clone(), k);
    }
    let Some(k) = arrays.get(&sw.array_name) else {
        return Err(Error::invalid(format!("shared weight {name}: no array")));
    };
    let decoded = k.decoded;
    let n = sw.len() as u64;
    let ints = |out: &mut Graph, what: &str, x: u64| -> Result<ValueId> {
        let t = Tensor::from_i64(vec![1], vec![x as i64])?;
        out.add_const(&out.unique_name(&format!("{name}_{what}")), t)
    };
    let start = ints(out, "start", sw.offset)?;
    let end = ints(out, "end", sw.offset + n)?;
    let axes = ints(out, "axis", 0)?;
    let label = out.unique_name(&format!("{name}/slice"));
    let part = out.add_value(&label, None)?;
    out.add_node(
        &label,
        Op::Slice,
        vec![Some(decoded), Some(start), Some(end), Some(axes)],
        vec![Some(part)],
    )?;
    let scale = Tensor::from_f32(vec![], vec![sw.scale])?;
    let scale = out.add_const(&out.unique_name(&format!("{name}_scale")), scale)?;
    let label = out.unique_name(&format!("{name}/scale"));
    let w = out.add_value(&label, None)?;
    out.add_node(
        &label,
        Op::Binary(BinaryOp::Mul),
        vec![Some(part), Some(scale)],
        vec![Some(w)],
    )?;
    let dims: Vec<i64> = sw.shape.iter().map(|&d| d as i64).collect();
    let shape = Tensor::from_i64(vec![dims.len()], dims)?;
    let shape = out.add_const(&out.unique_name(&format!("{name}_shape")), shape)?;
    let label = out.unique_name(&format!("{name}/reshape"));
    out.add_node(
        &label,
        Op::Reshape { allowzero: None },
        vec![Some(w), Some(shape)],
        vec![Some(v)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(n: usize, chunk: u64, slots: u64, seed: u64) -> SharedWeight {
        let hash = HashParams::new(seed, chunk, slots.div_ceil(chunk)).unwrap();
        let m = hash.slots() as usize;
        let array = Tensor::from_f32(vec![m], (0..m).map(|i| i as f32).collect()).unwrap();
        SharedWeight {
            array,
            array_name: "shared".into(),
            shape: vec![n],
            offset: 0,
            scale: 1.0,
            hash,
        }
    }

    #[test]
    fn one_fold_is_a_bijection_and_folds_balance_the_load() {
        for (n, chunk) in [(1000u64, 1u64), (1000, 32), (4096, 32), (777, 7), (5, 64)] {
            let h = HashParams::new(7, chunk, n.div_ceil(chunk)).unwrap();
            let mut seen = vec![false; h.slots() as usize];
            for p in 0..n {
                let s = h.slot(p) as usize;
                assert!(!seen[s], "n {n} chunk {chunk}: slot {s} twice");
                seen[s] = true;
            }
            // Many folds: every slot holds ⌊N/m⌋ or ⌈N/m⌉ positions.
            let h = HashParams::new(9, chunk, (n / 4).div_ceil(chunk)).unwrap();
            let m = h.slots();
            let mut load = vec![0u64; m as usize];
            let total = 10 * m + m / 3;
            for p in 0..total {
                load[h.slot(p) as usize] += 1;
            }
            let (lo, hi) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            assert!(*lo >= total / m && *hi <= total.div_ceil(m), "{lo}..{hi}");
        }
    }

    #[test]
    fn signs_are_balanced_and_not_periodic() {
        let h = HashParams::new(3, 32, 1000).unwrap();
        let neg = (0..100_000).filter(|&p| h.negative(p)).count();
        assert!((49_000..51_000).contains(&neg), "{neg} negative of 100000");
        // Neighbours agree about half the time (a linear hash would alternate).
        let same = (0..100_000)
            .filter(|&p| h.negative(p) == h.negative(p + 1))
            .count();
        assert!((48_000..52_000).contains(&same), "{same}");
    }

    #[test]
    fn decode_applies_slot_sign_and_scale() {
        let mut w = weight(300, 8, 300, 1);
        w.offset = 17;
        w.scale = 0.5;
        let d = decode(&w).unwrap();
        for (j, &x) in d.iter().enumerate() {
            let p = 17 + j as u64;
            let s = w.hash.slot(p) as f32 * 0.5;
            assert_eq!(x, if w.hash.negative(p) { -s } else { s });
        }
        assert!(HashParams::new(1, 1 << 20, 1 << 12).is_err());
        w.array = Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap();
        assert!(decode(&w)
            .unwrap_err()
            .to_string()
            .contains("shared weight"));
    }

    #[test]
    fn primes() {
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(24), 29);
        assert_eq!(next_prime(29), 29);
        assert!(!is_prime(1) && is_prime(1_000_003) && !is_prime(1_000_001));
    }
}
