//! Calibration data: example inputs that data-aware passes (activation-aware pruning,
//! reconstruction) run the model on.
//!
//! `--calib FILE.pb` gives one `TensorProto` for a model with one data input;
//! `--calib DIR` gives `DIR/input_0.pb, DIR/input_1.pb, ...` (one per data input, in
//! order; `DIR/test_data_set_0/` is tried when `DIR` itself has none). Axis 0 is the
//! batch: every sample of the file is used.

use cc_ir::{DType, Dim, Error, Graph, Result, Tensor};
use std::path::{Path, PathBuf};

/// Calibration inputs, one tensor per graph input that carries no data.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Where the data came from (for messages).
    pub source: String,
    /// One tensor per data input of the model, in order.
    pub inputs: Vec<Tensor>,
}

/// `dir/input_0.pb, dir/input_1.pb, ...` while they exist.
fn input_files(dir: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("input_{i}.pb")))
        .take_while(|p| p.is_file())
        .collect()
}

impl Calibration {
    /// Calibration inputs given directly.
    pub fn new(source: impl Into<String>, inputs: Vec<Tensor>) -> Calibration {
        Calibration {
            source: source.into(),
            inputs,
        }
    }

    /// Loads a `FILE.pb` or a `DIR` of `input_<i>.pb` files.
    pub fn load(path: &Path) -> Result<Calibration> {
        let files = if path.is_dir() {
            let mut f = input_files(path);
            if f.is_empty() {
                f = input_files(&path.join("test_data_set_0"));
            }
            if f.is_empty() {
                return Err(Error::invalid(format!(
                    "calibration folder {} holds no input_0.pb",
                    path.display()
                )));
            }
            f
        } else if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            return Err(Error::invalid(format!(
                "calibration data {} not found",
                path.display()
            )));
        };
        let inputs = files
            .iter()
            .map(|p| cc_ir::onnx::read_tensor_file(p).map(|(_, t)| t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Calibration::new(path.display().to_string(), inputs))
    }

    /// Samples along axis 0 (of the first input; 1 for scalars).
    pub fn samples(&self) -> usize {
        self.inputs
            .first()
            .and_then(|t| t.shape().first().copied())
            .unwrap_or(1)
    }

    /// Checks the data against the model's data inputs: count, element type, rank, and
    /// every dimension the model fixes; an error names the input and the file.
    pub fn check(&self, g: &Graph) -> Result<()> {
        let data_inputs: Vec<_> = g
            .inputs()
            .iter()
            .copied()
            .filter(|&v| g.const_data(v).is_none())
            .collect();
        if data_inputs.len() != self.inputs.len() {
            return Err(Error::invalid(format!(
                "calibration data {} has {} tensor(s) but the model has {} data input(s)",
                self.source,
                self.inputs.len(),
                data_inputs.len()
            )));
        }
        for (&v, t) in data_inputs.iter().zip(&self.inputs) {
            let name = g.value(v).name();
            let ty = g.value(v).ty.as_ref();
            let mismatch = |what: String| {
                Error::invalid(format!(
                    "calibration data {}: input {name:?} {what}",
                    self.source
                ))
            };
            if let Some(elem) = ty.and_then(|t| t.elem()) {
                if elem != t.dtype() {
                    return Err(mismatch(format!(
                        "has element type {elem} but the data holds {}",
                        t.dtype()
                    )));
                }
            }
            if let Some(dims) = ty.and_then(|t| t.shape()) {
                let fits = dims.len() == t.shape().len()
                    && dims.iter().zip(t.shape()).all(|(d, &n)| match d {
                        Dim::Known(k) => *k == n as i64,
                        _ => true,
                    });
                if !fits {
                    let want: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                    return Err(mismatch(format!(
                        "has shape [{}] but the data has shape {:?}",
                        want.join(","),
                        t.shape()
                    )));
                }
            }
            if t.shape().first() == Some(&0) {
                return Err(mismatch("gets an empty batch".to_string()));
            }
        }
        Ok(())
    }

    /// The calibration inputs split along axis 0 into batches of at most `batch`
    /// samples (all inputs split alike).
    pub fn batches(&self, batch: usize) -> Result<Vec<Vec<Tensor>>> {
        let n = self.samples();
        let batch = batch.max(1);
        if n <= batch {
            return Ok(vec![self.inputs.clone()]);
        }
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + batch).min(n);
            let part = self
                .inputs
                .iter()
                .map(|t| slice_rows(t, start, end))
                .collect::<Result<Vec<_>>>()?;
            out.push(part);
            start = end;
        }
        Ok(out)
    }
}

/// Concatenates tensors along axis 0 (all of one element type, equal trailing dims).
pub fn concat_rows(parts: &[Tensor]) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(Error::invalid("nothing to concatenate"));
    };
    if parts.len() == 1 {
        return Ok(first.clone());
    }
    let tail = first.shape().get(1..).unwrap_or(&[]).to_vec();
    let mut rows = 0usize;
    let mut bytes = Vec::new();
    for t in parts {
        if t.dtype() != first.dtype() || t.shape().is_empty() || t.shape()[1..] != tail[..] {
            return Err(Error::invalid(format!(
                "calibration batches disagree: {} {:?} after {} {:?}",
                t.dtype(),
                t.shape(),
                first.dtype(),
                first.shape()
            )));
        }
        rows += t.shape()[0];
        bytes.extend_from_slice(t.raw()?);
    }
    let mut shape = vec![rows];
    shape.extend(tail);
    Tensor::from_raw(first.dtype(), shape, bytes::Bytes::from(bytes))
}

/// Rows `start..end` of axis 0 of a tensor with raw data.
fn slice_rows(t: &Tensor, start: usize, end: usize) -> Result<Tensor> {
    let rows = t.shape().first().copied().unwrap_or(1);
    if t.dtype() == DType::String || rows == 0 {
        return Err(Error::unsupported(format!(
            "cannot split calibration tensor of {} {:?} into batches",
            t.dtype(),
            t.shape()
        )));
    }
    let raw = t.raw()?;
    let per = raw.len() / rows;
    let bytes = raw
        .get(start * per..end * per)
        .ok_or_else(|| Error::invalid("calibration batch out of range"))?;
    let mut shape = t.shape().to_vec();
    if let Some(s) = shape.first_mut() {
        *s = end - start;
    }
    Tensor::from_raw(t.dtype(), shape, bytes::Bytes::copy_from_slice(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::types::known_shape;
    use cc_ir::ValueType;

    fn graph(shape: Vec<Dim>) -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::Tensor {
                    elem: Some(DType::F32),
                    shape: Some(shape),
                }),
            )
            .unwrap();
        g.set_inputs(vec![x]);
        g
    }

    #[test]
    fn checks_count_type_and_fixed_dims() {
        let g = graph(vec![Dim::Sym("N".into()), Dim::Known(3)]);
        let ok = Calibration::new(
            "c.pb",
            vec![Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap()],
        );
        ok.check(&g).unwrap();
        let bad = Calibration::new(
            "c.pb",
            vec![Tensor::from_f32(vec![2, 4], vec![0.0; 8]).unwrap()],
        );
        let e = bad.check(&g).unwrap_err().to_string();
        assert!(
            e.contains("\"x\" has shape [N,3]") && e.contains("c.pb"),
            "{e}"
        );
        let bad = Calibration::new(
            "c.pb",
            vec![Tensor::from_i64(vec![2, 3], vec![0; 6]).unwrap()],
        );
        let e = bad.check(&g).unwrap_err().to_string();
        assert!(e.contains("element type f32"), "{e}");
        let e = Calibration::new("c.pb", vec![]).check(&g).unwrap_err();
        assert!(e.to_string().contains("0 tensor(s)"), "{e}");
        let _ = known_shape(&[1]);
    }

    #[test]
    fn splits_into_batches() {
        let c = Calibration::new(
            "c",
            vec![Tensor::from_f32(vec![5, 2], (0..10).map(|x| x as f32).collect()).unwrap()],
        );
        assert_eq!(c.samples(), 5);
        let b = c.batches(2).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[2][0].shape(), &[1, 2]);
        assert_eq!(b[1][0].to_f32().unwrap(), vec![4.0, 5.0, 6.0, 7.0]);
        let parts: Vec<Tensor> = b.into_iter().flatten().collect();
        assert_eq!(concat_rows(&parts).unwrap(), c.inputs[0]);
        let odd = Tensor::from_f32(vec![1, 3], vec![0.0; 3]).unwrap();
        assert!(concat_rows(&[parts[0].clone(), odd]).is_err());
    }

    #[test]
    fn loading_reports_missing_data() {
        let e = Calibration::load(Path::new("/nonexistent/calib.pb")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        let dir = std::env::temp_dir();
        let d = dir.join(format!("cc-calib-empty-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = Calibration::load(&d).unwrap_err();
        assert!(e.to_string().contains("no input_0.pb"), "{e}");
        let t = Tensor::from_f32(vec![2, 3], vec![1.0; 6]).unwrap();
        cc_ir::onnx::write_tensor_file(&d.join("input_0.pb"), "x", &t).unwrap();
        let c = Calibration::load(&d).unwrap();
        assert_eq!((c.inputs.len(), c.samples()), (1, 2));
        let c = Calibration::load(&d.join("input_0.pb")).unwrap();
        assert_eq!(c.inputs, vec![t]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
