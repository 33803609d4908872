//! Offsets of buffers in one arena, for the code-generating backends' storage plans:
//! best-fit reuse of released ranges (adjacent ones merged), growing the trailing free
//! range or the arena's end otherwise. Sizes are rounded up to the alignment.

/// An offset allocator over one arena.
#[derive(Clone, Debug)]
pub struct Arena {
    align: usize,
    /// Free ranges (offset, length), sorted by offset, adjacent ones merged.
    free: Vec<(usize, usize)>,
    end: usize,
}

impl Arena {
    /// An empty arena whose offsets and sizes are multiples of `align` (at least 1).
    pub fn new(align: usize) -> Arena {
        Arena {
            align: align.max(1),
            free: Vec::new(),
            end: 0,
        }
    }

    /// `bytes` rounded up to the alignment (at least one unit).
    fn rounded(&self, bytes: usize) -> usize {
        bytes.max(1).div_ceil(self.align) * self.align
    }

    /// The offset of a new buffer of `bytes`.
    pub fn alloc(&mut self, bytes: usize) -> usize {
        let need = self.rounded(bytes);
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &(_, s))| s >= need)
            .min_by_key(|(_, &(o, s))| (s, o))
            .map(|(i, _)| i);
        if let Some(i) = best {
            let (o, s) = self.free[i];
            if s == need {
                self.free.remove(i);
            } else {
                self.free[i] = (o + need, s - need);
            }
            return o;
        }
        // Grow the last free range if it ends at the arena's end.
        if let Some(i) = self.free.iter().position(|&(o, s)| o + s == self.end) {
            let (o, _) = self.free.remove(i);
            self.end = o + need;
            return o;
        }
        let o = self.end;
        self.end += need;
        o
    }

    /// Returns the buffer of `bytes` at `off` for reuse.
    pub fn release(&mut self, off: usize, bytes: usize) {
        let size = self.rounded(bytes);
        self.free.push((off, size));
        self.free.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.free.len());
        for &(o, s) in &self.free {
            match merged.last_mut() {
                Some((lo, ls)) if *lo + *ls == o => *ls += s,
                _ => merged.push((o, s)),
            }
        }
        self.free = merged;
    }

    /// The arena's size: the end of the highest buffer ever placed.
    pub fn size(&self) -> usize {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_reuses_and_coalesces() {
        let mut a = Arena::new(64);
        let x = a.alloc(100);
        let y = a.alloc(64);
        assert_eq!((x, y), (0, 128));
        a.release(x, 100);
        assert_eq!(a.alloc(10), 0);
        a.release(0, 10);
        a.release(y, 64);
        // all free and coalesced: a larger request reuses from 0
        assert_eq!(a.alloc(192), 0);
        assert_eq!(a.size(), 192);
        // growing the trailing block
        a.release(0, 192);
        assert_eq!(a.alloc(256), 0);
        assert_eq!(a.size(), 256);
    }

    #[test]
    fn arena_reuses_and_merges_free_ranges() {
        let mut a = Arena::new(256);
        let x = a.alloc(100);
        let y = a.alloc(600);
        let z = a.alloc(10);
        assert_eq!((x, y, z), (0, 256, 1024));
        a.release(x, 100);
        a.release(y, 600);
        // Merged into one free range of 1024 bytes at 0.
        assert_eq!(a.free, vec![(0, 1024)]);
        assert_eq!(a.alloc(900), 0);
        assert_eq!(a.alloc(10), 1280);
        assert_eq!(a.size(), 1536);
    }
}
