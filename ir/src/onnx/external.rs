//! External tensor data: files beside the model, memory-mapped and shared.
//!
//! A tensor whose `data_location` is EXTERNAL names a file (`location`, relative to the
//! model's folder) and a byte range (`offset`, `length`). Each file is mapped once per
//! import and every tensor slices the same mapping, so the weights are never copied.

use crate::error::{Error, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Resolves external data files relative to a base folder, mapping each file once.
#[derive(Debug, Default)]
pub struct ExternalFiles {
    base_dir: Option<PathBuf>,
    maps: HashMap<PathBuf, Bytes>,
}

impl ExternalFiles {
    /// A resolver for files under `base_dir` (`None`: external data is an error).
    pub fn new(base_dir: Option<&Path>) -> Self {
        ExternalFiles {
            base_dir: base_dir.map(Path::to_path_buf),
            maps: HashMap::new(),
        }
    }

    /// The bytes `offset..offset+length` of `location` (to the end when `length` is
    /// `None`), for the tensor `tensor`.
    pub fn read(
        &mut self,
        tensor: &str,
        location: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Bytes> {
        let base = self.base_dir.as_ref().ok_or_else(|| {
            Error::unsupported(format!(
                "tensor {tensor:?}: external data {location:?} but no model folder is known"
            ))
        })?;
        let rel = Path::new(location);
        let safe = !location.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe {
            return Err(Error::invalid(format!(
                "tensor {tensor:?}: external data location {location:?} must be a relative path inside the model folder"
            )));
        }
        let path = base.join(rel);
        let data = match self.maps.get(&path) {
            Some(b) => b.clone(),
            None => {
                let b = map_file(&path)?;
                self.maps.insert(path.clone(), b.clone());
                b
            }
        };
        let total = data.len() as u64;
        let end = match length {
            Some(l) => offset.checked_add(l),
            None => Some(total),
        };
        match end {
            Some(end) if offset <= end && end <= total => {
                Ok(data.slice(offset as usize..end as usize))
            }
            _ => Err(Error::invalid(format!(
                "tensor {tensor:?}: external data range {offset}+{} is outside {} ({total} bytes)",
                length.map_or("rest".to_string(), |l| l.to_string()),
                path.display()
            ))),
        }
    }
}

/// Memory-maps a whole file as shared [`Bytes`] (empty files are read as empty).
pub fn map_file(path: &Path) -> Result<Bytes> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only; like every ONNX runtime we assume model files are
    // not truncated or rewritten by another process while they are loaded.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_and_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.bin"), [1u8, 2, 3, 4, 5, 6]).unwrap();
        let mut ext = ExternalFiles::new(Some(dir.path()));
        assert_eq!(&ext.read("t", "w.bin", 2, Some(3)).unwrap()[..], &[3, 4, 5]);
        assert_eq!(&ext.read("t", "./w.bin", 4, None).unwrap()[..], &[5, 6]);
        let err = ext.read("t", "w.bin", 4, Some(3)).unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
        let err = ext.read("t", "../w.bin", 0, None).unwrap_err().to_string();
        assert!(err.contains("relative path"), "{err}");
        let err = ext
            .read("t", "missing.bin", 0, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.bin"), "{err}");
        let mut none = ExternalFiles::new(None);
        assert!(none.read("t", "w.bin", 0, None).is_err());
    }
}
