//! Numpy-style broadcasting.

use super::array::strides;
use cc_ir::{Error, Result};

/// The broadcast shape of several shapes (numpy rules); an error when they clash.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(Error::invalid(format!(
                    "shapes {shapes:?} do not broadcast"
                )));
            }
        }
    }
    Ok(out)
}

/// For each element of `out` (row-major), the index of the element of an array of shape
/// `src` that broadcasting maps to it. `src` must broadcast to `out`.
pub fn broadcast_index(src: &[usize], out: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let off = out.len() - src.len();
    let ss = strides(src);
    // Source stride per output axis (0 where the source is broadcast).
    let eff: Vec<usize> = (0..out.len())
        .map(|i| {
            if i < off || src[i - off] == 1 {
                0
            } else {
                ss[i - off]
            }
        })
        .collect();
    let mut idx = Vec::with_capacity(n);
    let mut counter = vec![0usize; out.len()];
    let mut pos = 0usize;
    for _ in 0..n {
        idx.push(pos);
        for ax in (0..out.len()).rev() {
            counter[ax] += 1;
            pos += eff[ax];
            if counter[ax] < out[ax] {
                break;
            }
            pos -= eff[ax] * counter[ax];
            counter[ax] = 0;
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_like_numpy() {
        assert_eq!(
            broadcast_shapes(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert_eq!(broadcast_shapes(&[&[], &[5]]).unwrap(), vec![5]);
        assert!(broadcast_shapes(&[&[2], &[3]]).is_err());
    }

    #[test]
    fn index_maps_repeat_broadcast_axes() {
        assert_eq!(broadcast_index(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_index(&[], &[2]), vec![0, 0]);
        assert_eq!(broadcast_index(&[2, 2], &[2, 2]), vec![0, 1, 2, 3]);
    }
}
