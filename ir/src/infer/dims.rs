//! Dimension arithmetic shared by the op families: numpy broadcasting, products,
//! unification of dims that must agree.

use crate::types::Dim;
use std::ops::Range;

/// Broadcasts two dims (numpy rules); `Err(())` when both are known and incompatible.
///
/// Symbolic dims: equal names match; a symbol against 1 stays the symbol; two different
/// symbols give Unknown; a known size other than 1 wins over a symbol or Unknown.
pub(crate) fn broadcast_dim(a: &Dim, b: &Dim) -> Result<Dim, ()> {
    Ok(match (a, b) {
        (Dim::Known(1), _) => b.clone(),
        (_, Dim::Known(1)) => a.clone(),
        (Dim::Known(x), Dim::Known(y)) if x != y => return Err(()),
        (Dim::Known(_), _) => a.clone(),
        (_, Dim::Known(_)) => b.clone(),
        (Dim::Sym(x), Dim::Sym(y)) if x == y => a.clone(),
        _ => Dim::Unknown,
    })
}

/// Broadcasts shapes (numpy multidirectional broadcasting). `Ok(None)` when any rank is
/// unknown; `Err(message)` when two known dims are incompatible.
pub fn broadcast(shapes: &[Option<&[Dim]>]) -> Result<Option<Vec<Dim>>, String> {
    let mut out: Vec<Dim> = Vec::new();
    for s in shapes {
        let Some(s) = s else { return Ok(None) };
        let r = out.len().max(s.len());
        let mut next = Vec::with_capacity(r);
        for i in 0..r {
            let a = (i + out.len()).checked_sub(r).and_then(|j| out.get(j));
            let b = (i + s.len()).checked_sub(r).and_then(|j| s.get(j));
            next.push(match (a, b) {
                (Some(a), Some(b)) => broadcast_dim(a, b).map_err(|()| {
                    format!("cannot broadcast {} with {}", fmt_dims(&out), fmt_dims(s))
                })?,
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b.clone(),
                (None, None) => Dim::Unknown,
            });
        }
        out = next;
    }
    Ok(Some(out))
}

/// Unifies two dims that must be equal (Concat's non-axis dims, Gemm's inner dims):
/// `Err(())` when both are known and differ; a known dim wins; equal symbols stay.
pub(crate) fn unify(a: &Dim, b: &Dim) -> Result<Dim, ()> {
    Ok(match (a, b) {
        (Dim::Known(x), Dim::Known(y)) if x != y => return Err(()),
        (Dim::Known(_), _) => a.clone(),
        (_, Dim::Known(_)) => b.clone(),
        (Dim::Sym(x), Dim::Sym(y)) if x == y => a.clone(),
        (Dim::Sym(_), Dim::Unknown) => a.clone(),
        (Dim::Unknown, Dim::Sym(_)) => b.clone(),
        _ => Dim::Unknown,
    })
}

/// The product of dims: known when all are known (and it does not overflow); a single
/// symbolic dim times 1s stays that symbol.
pub(crate) fn product(dims: &[Dim]) -> Dim {
    let mut p: i64 = 1;
    let mut sym: Option<&Dim> = None;
    for d in dims {
        match d {
            Dim::Known(v) => match p.checked_mul(*v) {
                Some(x) => p = x,
                None => return Dim::Unknown,
            },
            Dim::Sym(_) if sym.is_none() => sym = Some(d),
            _ => return Dim::Unknown,
        }
    }
    match sym {
        None => Dim::Known(p),
        Some(s) if p == 1 => s.clone(),
        Some(_) => Dim::Unknown,
    }
}

/// Applies `f` to a known dim; anything else becomes Unknown.
pub(crate) fn map_known(d: &Dim, f: impl FnOnce(i64) -> Option<i64>) -> Dim {
    match d.known().and_then(f) {
        Some(v) => Dim::Known(v),
        None => Dim::Unknown,
    }
}

/// Known dims from integers.
pub(crate) fn known(v: &[i64]) -> Vec<Dim> {
    v.iter().map(|&x| Dim::Known(x)).collect()
}

/// `n` unknown dims.
pub(crate) fn unknowns(n: usize) -> Vec<Dim> {
    vec![Dim::Unknown; n]
}

/// Renders dims as `[a,b,c]`.
pub(crate) fn fmt_dims(d: &[Dim]) -> String {
    let s: Vec<String> = d.iter().map(ToString::to_string).collect();
    format!("[{}]", s.join(","))
}

/// The axes `Shape { start, end }` reports for a rank-`rank` input: negative bounds
/// count from the end, both are clamped to `0..=rank`, and an end before the start
/// gives an empty range.
pub fn shape_range(start: Option<i64>, end: Option<i64>, rank: usize) -> Range<usize> {
    let r = i64::try_from(rank).unwrap_or(i64::MAX);
    let fix = |v: i64| usize::try_from((if v < 0 { v + r } else { v }).clamp(0, r)).unwrap_or(0);
    let (s, e) = (fix(start.unwrap_or(0)), fix(end.unwrap_or(r)));
    s..e.max(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::testutil::dims;

    fn b(a: &str, c: &str) -> Result<String, String> {
        let (x, y) = (dims(a), dims(c));
        broadcast(&[Some(&x), Some(&y)]).map(|o| fmt_dims(&o.unwrap()))
    }

    #[test]
    fn numpy_broadcasting_with_symbols() {
        assert_eq!(b("2,1,4", "3,1").unwrap(), "[2,3,4]");
        assert_eq!(b("N,3", "1,3").unwrap(), "[N,3]");
        assert_eq!(b("N,3", "N,1").unwrap(), "[N,3]");
        assert_eq!(b("N", "M").unwrap(), "[?]");
        assert_eq!(b("N", "5").unwrap(), "[5]");
        assert_eq!(b("?", "1").unwrap(), "[?]");
        assert_eq!(b("", "2,2").unwrap(), "[2,2]");
        assert!(b("2,3", "4,3").unwrap_err().contains("cannot broadcast"));
        assert_eq!(broadcast(&[None, Some(&dims("2"))]).unwrap(), None);
    }

    #[test]
    fn unify_and_product() {
        assert_eq!(unify(&Dim::Known(3), &Dim::Unknown), Ok(Dim::Known(3)));
        assert!(unify(&Dim::Known(3), &Dim::Known(4)).is_err());
        assert_eq!(product(&dims("2,3,4")), Dim::Known(24));
        assert_eq!(product(&dims("2,N")), Dim::Unknown);
        assert_eq!(product(&dims("1,N,1")), Dim::Sym("N".into()));
        assert_eq!(product(&dims("N,N")), Dim::Unknown);
        assert_eq!(map_known(&Dim::Known(3), |v| Some(v * 2)), Dim::Known(6));
    }

    #[test]
    fn shape_ranges_clamp_and_count_from_the_end() {
        assert_eq!(shape_range(None, None, 4), 0..4);
        assert_eq!(shape_range(Some(-2), None, 4), 2..4);
        assert_eq!(shape_range(Some(1), Some(-1), 4), 1..3);
        assert_eq!(shape_range(Some(-9), Some(9), 4), 0..4);
        assert_eq!(shape_range(Some(3), Some(1), 4), 3..3);
        assert_eq!(shape_range(Some(0), None, 0), 0..0);
    }
}
