//! safetensors files: reading with checks that name the offending tensor, and
//! atomic writing (temporary file, then rename) so that no half-written file
//! is ever left behind.

use crate::error::{Error, Result};
use crate::model::NamedTensor;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One tensor of a file, still in its stored dtype.
#[derive(Clone, Debug)]
pub struct RawTensor {
    /// Stored dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
}

/// The contents of a safetensors file.
#[derive(Clone, Debug)]
pub struct TensorFile {
    /// Where it came from.
    pub path: PathBuf,
    /// Tensors by name.
    pub tensors: BTreeMap<String, RawTensor>,
    /// The header's `__metadata__`.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads and parses `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, v)| {
                (
                    name,
                    RawTensor {
                        dtype: v.dtype(),
                        shape: v.shape().to_vec(),
                        bytes: v.data().to_vec(),
                    },
                )
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// Names and shapes of every tensor.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect()
    }

    /// Tensor `name` as f32, or `None` when absent; an error when it is not
    /// f32 or holds a non-finite value.
    pub fn f32(&self, name: &str) -> Result<Option<NamedTensor>> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        if t.dtype != Dtype::F32 {
            return Err(Error::tensor(
                name,
                format!(
                    "dtype {:?} in {}, expected F32",
                    t.dtype,
                    self.path.display()
                ),
            ));
        }
        let data: Vec<f32> = t
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                name,
                format!("non-finite value {} at flat index {i}", data[i]),
            ));
        }
        Ok(Some(NamedTensor::new(name, t.shape.clone(), data)))
    }

    /// Tensor `name` as f32, with an error when absent.
    pub fn require_f32(&self, name: &str) -> Result<NamedTensor> {
        self.f32(name)?
            .ok_or_else(|| Error::tensor(name, format!("missing from {}", self.path.display())))
    }

    /// Tensor `name` as integers (I64 or I32), or `None` when absent.
    pub fn ints(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<i64>)>> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        let data: Vec<i64> = match t.dtype {
            Dtype::I64 => t
                .bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            Dtype::I32 => t
                .bytes
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            other => {
                return Err(Error::tensor(
                    name,
                    format!("dtype {other:?}, expected I64 (or I32)"),
                ));
            }
        };
        Ok(Some((t.shape.clone(), data)))
    }

    /// The f32 tensors, and the integer scalars (counters such as
    /// BatchNorm's `num_batches_tracked` or a checkpoint's step).
    pub fn params_and_counters(&self) -> Result<(Vec<NamedTensor>, BTreeMap<String, i64>)> {
        let mut floats = Vec::new();
        let mut ints = BTreeMap::new();
        for (name, t) in &self.tensors {
            if matches!(t.dtype, Dtype::I64 | Dtype::I32) {
                let (shape, v) = self.ints(name)?.unwrap_or_default();
                if v.len() != 1 || shape.len() > 1 {
                    return Err(Error::tensor(
                        name,
                        format!("shape {shape:?}, expected a scalar"),
                    ));
                }
                ints.insert(name.clone(), v[0]);
            } else {
                floats.push(self.require_f32(name)?);
            }
        }
        Ok((floats, ints))
    }

    /// Every tensor as f32 (all must be f32 and finite).
    pub fn all_f32(&self) -> Result<Vec<NamedTensor>> {
        self.tensors.keys().map(|k| self.require_f32(k)).collect()
    }
}

/// Writes `tensors` (f32) to `path` atomically, with optional metadata.
pub fn write(
    path: impl AsRef<Path>,
    tensors: &[NamedTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_with_counters(path, tensors, &BTreeMap::new(), metadata)
}

/// Writes f32 `tensors` and i64 scalar `counters` to `path` atomically.
pub fn write_with_counters(
    path: impl AsRef<Path>,
    tensors: &[NamedTensor],
    counters: &BTreeMap<String, i64>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let mut items: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let b = bytemuck::cast_slice::<f32, u8>(&t.data).to_vec();
            (t.name.clone(), Dtype::F32, t.shape.clone(), b)
        })
        .collect();
    for (name, v) in counters {
        items.push((
            name.clone(),
            Dtype::I64,
            Vec::new(),
            v.to_le_bytes().to_vec(),
        ));
    }
    let views = items
        .iter()
        .map(|(name, dtype, shape, b)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::tensor(name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, metadata).map_err(|e| Error::file(path, e))?;
    write_atomic(path, &data)
}

/// Writes `data` to a temporary file beside `path`, then renames it over
/// `path`, so readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, e));
    }
    Ok(())
}
