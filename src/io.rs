//! safetensors files: reading with checks that name the offending tensor, and
//! atomic writing (temporary file, then rename) so that no half-written file
//! is ever left behind.

use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A host tensor of f32 with its name and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// PyTorch-style name.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// A tensor; panics in debug builds if `data` does not match `shape`.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            name: name.into(),
            shape,
            data,
        }
    }
}

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
        if let Some(name) = duplicate_key(&bytes) {
            return Err(Error::tensor(
                name,
                format!("appears twice in the header of {}", path.display()),
            ));
        }
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

/// The first key that a safetensors header (already parsed once, so
/// well-formed) holds twice: serde keeps the last of equal keys silently.
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    struct Keys(Option<String>);
    impl<'de> serde::de::Visitor<'de> for &mut Keys {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if self.0.is_none() && !seen.insert(k.clone()) {
                    self.0 = Some(k);
                }
            }
            Ok(())
        }
    }
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(n).ok()?)?)?;
    let mut keys = Keys(None);
    let mut de = serde_json::Deserializer::from_slice(header);
    serde::Deserializer::deserialize_map(&mut de, &mut keys).ok()?;
    keys.0
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
/// The same tensors and metadata always give the same bytes (see
/// [`serialize`]).
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
    let metadata: BTreeMap<String, String> = metadata.unwrap_or_default().into_iter().collect();
    let data = serialize(&items, &metadata)?;
    write_atomic(path, &data)
}

/// A safetensors file of `tensors` (name, dtype, shape, little-endian
/// bytes) and `metadata`, byte for byte the same for the same input:
/// safetensors' own serializer writes its metadata map in a per-process
/// random order. The header is `__metadata__` (keys sorted) and then the
/// tensors ordered as safetensors orders them (dtypes in descending order,
/// then names), their data in that order, so every tensor is aligned to its
/// dtype; the header is padded with spaces to a multiple of 8 bytes.
pub fn serialize(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let json = |s: &str| serde_json::to_string(s).map_err(|e| Error::Invalid(e.to_string()));
    let mut order: Vec<&(String, Dtype, Vec<usize>, Vec<u8>)> = tensors.iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut fields = Vec::with_capacity(order.len() + 1);
    if !metadata.is_empty() {
        let kv = metadata
            .iter()
            .map(|(k, v)| Ok(format!("{}:{}", json(k)?, json(v)?)))
            .collect::<Result<Vec<_>>>()?;
        fields.push(format!("\"__metadata__\":{{{}}}", kv.join(",")));
    }
    let mut offset = 0usize;
    for w in order.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::tensor(&w[0].0, "given twice"));
        }
    }
    for (name, dtype, shape, bytes) in &order {
        if name == "__metadata__" {
            return Err(Error::tensor(name, "reserved name"));
        }
        let elems = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()))
            .map(|bits| bits.div_ceil(8));
        if elems != Some(bytes.len()) {
            return Err(Error::tensor(
                name,
                format!(
                    "{} bytes do not match {dtype:?} shape {shape:?}",
                    bytes.len()
                ),
            ));
        }
        let end = offset + bytes.len();
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        fields.push(format!(
            "{}:{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(name)?,
            shape.join(",")
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", fields.join(",")).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, _, bytes) in &order {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Where a write to `path` lands: `path` itself, or the file a chain of
/// symbolic links at `path` ends in (which need not exist yet).
pub fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(&p).map_err(|e| Error::file(path, e))?;
                p = match p.parent() {
                    Some(dir) if t.is_relative() => dir.join(t),
                    _ => t,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::file(path, "too many levels of symbolic links"))
}

/// The directory and file name of `target` (a resolved output path).
fn dir_and_name<'a>(path: &Path, target: &'a Path) -> Result<(&'a Path, &'a std::ffi::OsStr)> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file name"))?;
    Ok((dir, name))
}

/// The temporary file of process `pid` for `name`: `.NAME.tmpPID`.
fn temp_name(name: &std::ffi::OsStr, pid: u32) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(".");
    s.push(name);
    s.push(format!(".tmp{pid}"));
    s
}

/// Removes the temporary files `.NAME.tmpPID` in `dir` left by processes
/// that no longer run (killed mid-write). Liveness is read from
/// `/proc/PID`; without /proc nothing is removed.
fn remove_stale_temps(dir: &Path, name: &std::ffi::OsStr) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp");
    let prefix = prefix.as_encoded_bytes();
    let me = std::process::id();
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .as_encoded_bytes()
            .strip_prefix(prefix)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        let regular = e.file_type().is_ok_and(|t| t.is_file());
        if pid != me && regular && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `data` to a temporary file beside `path`, then renames it over
/// `path`, so readers see either the old file or the whole new one. A
/// symbolic link at `path` stays one: the file it points to is replaced
/// (the temporary file goes beside that file). A directory, device, FIFO
/// or socket at `path` is refused, never replaced. The temporary file
/// `.NAME.tmpPID` is removed on every error, and those that killed
/// processes left beside the target are removed first.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let target = resolve_links(path)?;
    if let Ok(m) = std::fs::metadata(&target)
        && !m.is_file()
    {
        return Err(Error::file(path, not_regular(&m)));
    }
    let (dir, name) = dir_and_name(path, &target)?;
    remove_stale_temps(dir, name);
    let tmp = dir.join(temp_name(name, std::process::id()));
    let res = (|| -> std::io::Result<()> {
        use std::io::Write;
        // A leftover of this very process id (reused) is ours to replace;
        // create_new then never follows a link planted at the name.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Ok(m) = std::fs::metadata(&target) {
            f.set_permissions(m.permissions())?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, e));
    }
    Ok(())
}

/// Why an existing `m` cannot be written over.
fn not_regular(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "is a directory, expected a file path"
    } else if t.is_char_device() || t.is_block_device() {
        "is a device, not a regular file: refusing to replace it"
    } else if t.is_fifo() {
        "is a FIFO, not a regular file: refusing to replace it"
    } else if t.is_socket() {
        "is a socket, not a regular file: refusing to replace it"
    } else {
        "is not a regular file: refusing to replace it"
    }
}

/// Checks, before a run starts and without leaving a file behind, that
/// output `path` of command-line flag `flag` can be written: its directory
/// exists and takes new files, it is no directory, device or other
/// non-regular file, and it is not the same file (device and inode,
/// through symbolic links) as any of `inputs`. Errors name the flag and
/// the path.
pub fn check_output(path: &Path, flag: &str, inputs: &[&Path]) -> Result<()> {
    let err = |msg: String| Error::file(path, format!("{flag}: {msg}"));
    let target = resolve_links(path).map_err(|e| err(e.to_string()))?;
    match std::fs::metadata(&target) {
        Ok(m) if !m.is_file() => return Err(err(not_regular(&m).into())),
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            for input in inputs {
                if let Ok(i) = std::fs::metadata(input)
                    && (i.dev(), i.ino()) == (m.dev(), m.ino())
                {
                    return Err(err(format!(
                        "is the same file as input {}; write the output elsewhere",
                        input.display()
                    )));
                }
            }
        }
        Err(_) => {}
    }
    let (dir, name) = dir_and_name(path, &target).map_err(|e| err(e.to_string()))?;
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(format!("directory {} does not exist", dir.display())));
        }
        Err(e) => return Err(err(format!("directory {}: {}", dir.display(), io_msg(&e)))),
        Ok(m) if !m.is_dir() => {
            return Err(err(format!("{} is not a directory", dir.display())));
        }
        Ok(_) => {}
    }
    // Whether the directory takes a new file (permissions, read-only or
    // special file systems such as /proc) is known only by trying: the
    // probe is the temporary file a write would make, removed at once.
    takes_new_file(&dir.join(temp_name(name, std::process::id()))).map_err(|e| {
        err(format!(
            "directory {} is not writable: {}",
            dir.display(),
            io_msg(&e)
        ))
    })
}

/// Whether a directory takes a new file, known only by trying: creates
/// `probe` in it and removes it at once (an existing `probe` says yes).
fn takes_new_file(probe: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Checks, before a run starts and without leaving anything behind, that
/// output directory `dir` of command-line flag `flag` can take new files:
/// an existing `dir` (through symbolic links) must be a directory that
/// takes a new file; a missing one is created at the first write with its
/// parents, so the nearest existing ancestor must be a directory that
/// takes one. Errors name the flag and the path.
pub fn check_output_dir(dir: &Path, flag: &str) -> Result<()> {
    let err = |msg: String| Error::file(dir, format!("{flag}: {msg}"));
    if dir.as_os_str().is_empty() {
        return Err(err("an empty path names no directory".into()));
    }
    // The nearest existing ancestor (`dir` itself when it exists).
    let mut at = dir;
    let existing = loop {
        match std::fs::metadata(at) {
            Ok(m) => break (at, m),
            // A missing path, or one under a file (that file is refused).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                at = match at.parent() {
                    Some(p) if p.as_os_str().is_empty() => Path::new("."),
                    Some(p) => p,
                    None => return Err(err(io_msg(&e))),
                };
            }
            Err(e) => return Err(err(format!("{}: {}", at.display(), io_msg(&e)))),
        }
    };
    let (at, m) = existing;
    if !m.is_dir() {
        return Err(err(if at == dir {
            "is not a directory".into()
        } else {
            format!("{} is not a directory", at.display())
        }));
    }
    let probe = at.join(format!(".lstm-wgpu-probe.tmp{}", std::process::id()));
    takes_new_file(&probe).map_err(|e| {
        err(format!(
            "directory {} is not writable: {}",
            at.display(),
            io_msg(&e)
        ))
    })
}

/// Whether writes to output paths `a` and `b` land in the same file:
/// the same directory (through symbolic links) and name, or one existing
/// file (device and inode, e.g. hard links).
pub fn same_output(a: &Path, b: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (ta, tb) = (resolve_links(a)?, resolve_links(b)?);
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(&ta), std::fs::metadata(&tb))
        && (ma.dev(), ma.ino()) == (mb.dev(), mb.ino())
    {
        return Ok(true);
    }
    let (da, na) = dir_and_name(a, &ta)?;
    let (db, nb) = dir_and_name(b, &tb)?;
    let canon = |d: &Path| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
    Ok(na == nb && canon(da) == canon(db))
}

/// An I/O error's message without the trailing `(os error N)`.
pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed when dropped.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("lstm-wgpu-io-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn items() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        vec![
            ("w".into(), Dtype::F32, vec![2, 3], vec![7; 24]),
            ("step".into(), Dtype::I64, vec![], vec![1; 8]),
            ("a".into(), Dtype::F32, vec![1], vec![2; 4]),
        ]
    }

    #[test]
    fn serialize_matches_safetensors_and_sorts_metadata() {
        let it = items();
        let views = it
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect::<Vec<_>>();
        let one = BTreeMap::from([("k \"q\"".to_string(), "v\n1".to_string())]);
        let theirs =
            safetensors::serialize(views, Some(one.clone().into_iter().collect())).unwrap();
        assert_eq!(serialize(&it, &one).unwrap(), theirs);
        // Many keys: always the same bytes, keys in order, and it parses.
        let meta: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("key{i}"), format!("{i}")))
            .collect();
        let a = serialize(&it, &meta).unwrap();
        let mut rev = it.clone();
        rev.reverse();
        assert_eq!(serialize(&rev, &meta).unwrap(), a);
        let st = SafeTensors::deserialize(&a).unwrap();
        assert_eq!(st.tensor("w").unwrap().shape(), &[2, 3]);
        assert_eq!(st.tensor("step").unwrap().data(), &[1; 8]);
        let (n, m) = SafeTensors::read_metadata(&a).unwrap();
        assert_eq!(n % 8, 0);
        let m = m.metadata().clone().unwrap();
        assert_eq!(m.len(), 20);
        let text = String::from_utf8_lossy(&a[8..8 + n]).into_owned();
        let pos: Vec<usize> = meta
            .keys()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
        // Shapes that do not match the bytes are refused.
        let bad = vec![("x".to_string(), Dtype::F32, vec![3], vec![0u8; 8])];
        assert!(serialize(&bad, &BTreeMap::new()).is_err());
    }

    #[test]
    fn read_refuses_duplicate_tensor_names() {
        let file = |second: &str, at: usize| {
            let header = format!(
                r#"{{"x":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}},"{second}":{{"dtype":"F32","shape":[1],"data_offsets":[{at},{}]}}}}"#,
                at + 4
            );
            let mut h = header.into_bytes();
            h.resize(h.len().next_multiple_of(8), b' ');
            let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
            bytes.extend(&h);
            bytes.extend(vec![0; at + 4]);
            bytes
        };
        let d = TempDir::new("dup");
        let bytes = file("x", 0);
        // safetensors alone accepts it, keeping one `x`.
        assert_eq!(SafeTensors::deserialize(&bytes).unwrap().len(), 1);
        let p = d.0.join("dup.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        let e = TensorFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("`x`") && e.contains("twice"), "{e}");
        // The same file with distinct names reads.
        std::fs::write(&p, file("y", 4)).unwrap();
        assert_eq!(TensorFile::read(&p).unwrap().tensors.len(), 2);
    }

    #[test]
    fn write_atomic_follows_symlinks() {
        let d = TempDir::new("link");
        let real = d.0.join("real.st");
        std::fs::write(&real, b"old").unwrap();
        let link = d.0.join("link.st");
        std::os::unix::fs::symlink("real.st", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A dangling link gets its target created.
        let dangling = d.0.join("dangling.st");
        std::os::unix::fs::symlink("later.st", &dangling).unwrap();
        write_atomic(&dangling, b"x").unwrap();
        assert_eq!(std::fs::read(d.0.join("later.st")).unwrap(), b"x");
        assert_eq!(d.names(), ["dangling.st", "later.st", "link.st", "real.st"]);
    }

    #[test]
    fn write_atomic_refuses_non_regular_files() {
        let d = TempDir::new("special");
        let fifo = d.0.join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let sub = d.0.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let link = d.0.join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for (p, what) in [(&fifo, "FIFO"), (&sub, "directory"), (&link, "FIFO")] {
            let e = write_atomic(p, b"x").unwrap_err().to_string();
            assert!(e.contains(what) && e.contains(&*p.to_string_lossy()), "{e}");
            let e = check_output(p, "--out", &[]).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("--out"), "{e}");
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(std::fs::metadata(&sub).unwrap().is_dir());
        assert_eq!(d.names(), ["fifo", "sub", "to-fifo"]);
        // Devices, through the same check (nothing is written).
        let e = check_output(Path::new("/dev/null"), "--out", &[]).unwrap_err();
        assert!(e.to_string().contains("device"), "{e}");
    }

    #[test]
    fn write_atomic_removes_dead_processes_temp_files() {
        let d = TempDir::new("stale");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(!Path::new(&format!("/proc/{dead}")).exists());
        let stale = d.0.join(format!(".out.st.tmp{dead}"));
        let live = d.0.join(".out.st.tmp1"); // init never exits
        let other = d.0.join(format!(".other.st.tmp{dead}"));
        let odd = d.0.join(".out.st.tmpx");
        for p in [&stale, &live, &other, &odd] {
            std::fs::write(p, b"partial").unwrap();
        }
        write_atomic(&d.0.join("out.st"), b"data").unwrap();
        assert!(!stale.exists());
        assert!(live.exists() && other.exists() && odd.exists());
        assert_eq!(std::fs::read(d.0.join("out.st")).unwrap(), b"data");
    }

    #[test]
    fn check_output_names_the_problem_and_leaves_nothing() {
        let d = TempDir::new("check");
        let input = d.0.join("in.st");
        std::fs::write(&input, b"x").unwrap();
        let link = d.0.join("alias.st");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let cases: [(PathBuf, &str); 5] = [
            (d.0.join("missing/out.st"), "does not exist"),
            (input.join("out.st"), "is not a directory"),
            (PathBuf::from("/proc/self/out.st"), "not writable"),
            (d.0.clone(), "is a directory"),
            (link.clone(), "same file as input"),
        ];
        for (p, want) in &cases {
            let e = check_output(p, "--flag", &[&input])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("--flag"), "{p:?}: {e}");
            assert!(e.contains(&*p.to_string_lossy()), "{e}");
        }
        check_output(&d.0.join("new.st"), "--flag", &[&input]).unwrap();
        check_output(&input, "--flag", &[]).unwrap();
        assert_eq!(d.names(), ["alias.st", "in.st"]);
    }
}
