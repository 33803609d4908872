//! The weights blob `PREFIX.weights.bin`: a 64-byte header (magic `CCWEIGHT`, total
//! length and FNV-1a hash of the payload, both little-endian u64) followed by every
//! constant the generated code reads, each at a 64-byte aligned offset.

/// Magic bytes at the start of the blob.
pub const MAGIC: &[u8; 8] = b"CCWEIGHT";
/// Alignment of every entry and the header length.
pub const ALIGN: usize = 64;

/// A blob under construction.
#[derive(Clone, Debug)]
pub struct Blob {
    bytes: Vec<u8>,
}

impl Default for Blob {
    fn default() -> Self {
        Blob {
            bytes: vec![0; ALIGN],
        }
    }
}

impl Blob {
    /// Appends `data` at the next aligned offset; returns that offset.
    pub fn add(&mut self, data: &[u8]) -> usize {
        let off = self.bytes.len().div_ceil(ALIGN) * ALIGN;
        self.bytes.resize(off, 0);
        self.bytes.extend_from_slice(data);
        off
    }

    /// Total length including the header, as the finished blob will have it.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.bytes.len() == ALIGN
    }

    /// The finished blob: header filled in. Returns (bytes, payload hash).
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        let hash = fnv1a(&self.bytes[ALIGN..]);
        let len = self.bytes.len() as u64;
        self.bytes[..8].copy_from_slice(MAGIC);
        self.bytes[8..16].copy_from_slice(&len.to_le_bytes());
        self.bytes[16..24].copy_from_slice(&hash.to_le_bytes());
        (self.bytes, hash)
    }
}

/// 64-bit FNV-1a (the generated `model_init` computes the same to check the blob).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_header_describes_payload() {
        let mut b = Blob::default();
        assert!(b.is_empty());
        let a = b.add(&[1, 2, 3]);
        let c = b.add(&[9; 10]);
        assert_eq!((a, c), (64, 128));
        let (bytes, hash) = b.finish();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 138);
        assert_eq!(hash, fnv1a(&bytes[64..]));
        assert_eq!(&bytes[128..138], &[9; 10]);
    }

    #[test]
    fn fnv1a_known_value() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
