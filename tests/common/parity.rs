//! Shared pieces of the PyTorch-parity tests (`pytorch_parity`,
//! `norm_parity`): fixture files, running `lstm-wgpu grad`, the safetensors
//! comparator and the bad-input contract.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors, View};

pub use super::tempdir::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

/// `tests/fixtures/<sub>` (`sub` may be empty).
pub fn fixtures_dir(sub: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures");
    if sub.is_empty() { d } else { d.join(sub) }
}

/// `<dir>/<name>.<kind>.safetensors`.
pub fn fixture_in(dir: &Path, name: &str, kind: &str) -> PathBuf {
    dir.join(format!("{name}.{kind}.safetensors"))
}

/// `grad` on the PyTorch fixture `name` (weights and inputs) into `out`,
/// with `extra` flags.
pub fn grad_on(name: &str, extra: &[&str], out: &Path) -> std::process::Output {
    let fx = fixtures_dir("");
    std::process::Command::new(env!("CARGO_BIN_EXE_lstm-wgpu"))
        .arg("grad")
        .arg("--weights")
        .arg(fixture_in(&fx, name, "weights"))
        .arg("--inputs")
        .arg(fixture_in(&fx, name, "inputs"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn parse<'a>(bytes: &'a [u8], path: &Path) -> SafeTensors<'a> {
    SafeTensors::deserialize(bytes)
        .unwrap_or_else(|e| panic!("{} is not a valid safetensors file: {e:?}", path.display()))
}

/// How to run a fixture, from the `__metadata__` of its inputs file:
/// `batch_first` ("true"/"false", default false) and `args` (extra
/// command-line arguments split on whitespace, default none).
pub struct RunSpec {
    pub batch_first: bool,
    pub args: Vec<String>,
}

pub fn run_spec(inputs: &Path) -> RunSpec {
    let bytes = read(inputs);
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .unwrap_or_else(|e| panic!("bad header in {}: {e:?}", inputs.display()));
    let meta = meta.metadata().clone().unwrap_or_default();
    let batch_first = match meta.get("batch_first").map(String::as_str) {
        Some("true") => true,
        Some("false") | None => false,
        Some(other) => panic!("{}: bad batch_first metadata {other:?}", inputs.display()),
    };
    let args = meta
        .get("args")
        .map(|a| a.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    RunSpec { batch_first, args }
}

pub fn run_grad(weights: &Path, inputs: &Path, out: &Path, spec: &RunSpec) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("grad")
        .arg("--weights")
        .arg(weights)
        .arg("--inputs")
        .arg(inputs)
        .arg("--out")
        .arg(out);
    if spec.batch_first {
        cmd.arg("--batch-first");
    }
    cmd.args(&spec.args);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

pub fn f32_values(name: &str, t: &TensorView<'_>) -> Vec<f32> {
    assert_eq!(t.dtype(), Dtype::F32, "tensor `{name}`: dtype must be F32");
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn i64_values(name: &str, t: &TensorView<'_>) -> Vec<i64> {
    assert_eq!(t.dtype(), Dtype::I64, "tensor `{name}`: dtype must be I64");
    t.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Compares `actual` (engine) with `expected` (PyTorch): same dtype and shape;
/// f32: max|a-b| / max(max|ref|, 1e-30) <= `tol`; i64: equal. Returns the
/// relative error (0 for i64). Panics with the tensor name, the error, its
/// flat index and the first differing values on failure.
pub fn assert_close(
    ctx: &str,
    name: &str,
    expected: &TensorView<'_>,
    actual: &TensorView<'_>,
    tol: f32,
) -> f32 {
    assert_eq!(
        actual.dtype(),
        expected.dtype(),
        "{ctx}: tensor `{name}`: dtype mismatch (actual vs expected)"
    );
    assert_eq!(
        actual.shape(),
        expected.shape(),
        "{ctx}: tensor `{name}`: shape mismatch (actual vs expected)"
    );
    match expected.dtype() {
        Dtype::F32 => {}
        Dtype::I64 => {
            let (e, a) = (i64_values(name, expected), i64_values(name, actual));
            assert_eq!(a, e, "{ctx}: tensor `{name}` (i64): actual vs expected");
            return 0.0;
        }
        other => panic!("{ctx}: tensor `{name}`: unexpected dtype {other:?} in the fixture"),
    }
    let e = f32_values(name, expected);
    let a = f32_values(name, actual);
    let ref_max = e.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut max_err = 0.0f32;
    let mut max_idx = 0usize;
    let mut bad: Vec<(usize, f32, f32)> = Vec::new();
    let limit = tol * ref_max.max(1e-30);
    for (i, (&av, &ev)) in a.iter().zip(&e).enumerate() {
        let err = (av - ev).abs();
        // NaN compares false everywhere: treat it as an infinite error.
        let err = if err.is_nan() { f32::INFINITY } else { err };
        if err > max_err {
            max_err = err;
            max_idx = i;
        }
        if err > limit && bad.len() < 8 {
            bad.push((i, av, ev));
        }
    }
    let rel = max_err / ref_max.max(1e-30);
    assert!(
        rel <= tol,
        "{ctx}: tensor `{name}` (shape {:?}): max|a-b| = {max_err:e} at flat index {max_idx} \
         (a = {}, ref = {}), max|ref| = {ref_max:e}, relative error {rel:e} > {tol:e}; \
         first differing (index, a, ref): {bad:?}",
        expected.shape(),
        a[max_idx],
        e[max_idx],
    );
    rel
}

/// Runs `grad` on fixture `name` of `dir` with its metadata's arguments and
/// checks every tensor of the expected file within `tol`. Returns the worst
/// relative error and the tensor it occurred in.
pub fn check_parity(dir: &Path, name: &str, tol: f32) -> (f32, String) {
    check_parity_with(dir, name, tol, &[])
}

/// As [`check_parity`], with `extra` arguments after the fixture's own.
pub fn check_parity_with(dir: &Path, name: &str, tol: f32, extra: &[&str]) -> (f32, String) {
    let weights = fixture_in(dir, name, "weights");
    let inputs = fixture_in(dir, name, "inputs");
    let expected_path = fixture_in(dir, name, "expected");
    let mut spec = run_spec(&inputs);
    spec.args.extend(extra.iter().map(|a| a.to_string()));

    let tmp = TempDir::new(name);
    let out = tmp.join("grads.safetensors");
    let res = run_grad(&weights, &inputs, &out, &spec);
    assert!(
        res.status.success(),
        "{name}: `lstm-wgpu grad {}` failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{}",
        spec.args.join(" "),
        res.status,
        String::from_utf8_lossy(&res.stderr),
        String::from_utf8_lossy(&res.stdout),
    );

    let out_bytes = read(&out);
    let got = parse(&out_bytes, &out);
    let exp_bytes = read(&expected_path);
    let exp = parse(&exp_bytes, &expected_path);
    let mut names: Vec<String> = exp.names().into_iter().map(str::to_owned).collect();
    names.sort();
    assert!(!names.is_empty(), "{name}: empty expected file");
    let mut worst = (0.0f32, String::new());
    for t in &names {
        let e = exp.tensor(t).expect("listed tensor");
        let a = got.tensor(t).unwrap_or_else(|err| {
            panic!(
                "{name}: output {} lacks tensor `{t}` ({err:?}); it has {:?}",
                out.display(),
                got.names()
            )
        });
        let rel = assert_close(name, t, &e, &a, tol);
        if rel >= worst.0 {
            worst = (rel, t.clone());
        }
    }
    // Seen with `cargo test --test <name> -- --nocapture`.
    eprintln!(
        "parity {name} [{}]: worst relative error {:.2e} ({})",
        spec.args.join(" "),
        worst.0,
        worst.1
    );
    worst
}

/// Every `*.expected.safetensors` in `dir` is listed in `configs`, and each
/// listed fixture has its weights and inputs.
pub fn check_all_listed(dir: &Path, configs: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|f| f.strip_suffix(".expected.safetensors"))
                .map(str::to_owned)
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = configs.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "fixture files vs CONFIGS");
    for name in configs {
        for kind in ["weights", "inputs"] {
            assert!(
                fixture_in(dir, name, kind).is_file(),
                "missing {kind} for {name}"
            );
        }
    }
}

/// Owned tensor used to re-serialize modified fixtures.
#[derive(Clone)]
pub struct Owned {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl View for Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A safetensors file held in memory, metadata included.
pub struct Loaded {
    pub tensors: HashMap<String, Owned>,
    pub metadata: Option<HashMap<String, String>>,
}

impl Loaded {
    pub fn tensor_mut(&mut self, name: &str) -> &mut Owned {
        self.tensors
            .get_mut(name)
            .unwrap_or_else(|| panic!("base fixture lacks `{name}`"))
    }
}

pub fn load(path: &Path) -> Loaded {
    let bytes = read(path);
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .unwrap_or_else(|e| panic!("bad header in {}: {e:?}", path.display()));
    let st = parse(&bytes, path);
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let o = Owned {
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                data: t.data().to_vec(),
            };
            (n, o)
        })
        .collect();
    Loaded {
        tensors,
        metadata: meta.metadata().clone(),
    }
}

pub fn save(l: &Loaded, path: &Path) {
    let bytes = safetensors::serialize(l.tensors.clone(), l.metadata.clone())
        .unwrap_or_else(|e| panic!("serialize {}: {e:?}", path.display()));
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// True if `word` occurs in `text` not surrounded by identifier characters
/// (so `input` does not match inside `inputs` or `grad_input`).
pub fn contains_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Runs `grad` in `dir` and checks the failure contract: exit code 2, a
/// one-line message naming `must_name` (as a whole word, or as a substring
/// when `whole_word` is false), and no output file. Removes `dir`.
pub fn run_rejected(
    case: &str,
    dir: &Path,
    weights: &Path,
    inputs: &Path,
    spec: &RunSpec,
    must_name: &str,
    whole_word: bool,
) {
    let out = dir.join("out.safetensors");
    let res = run_grad(weights, inputs, &out, spec);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let ctx = format!(
        "case `{case}` (args {:?}): status {}\n--- stderr ---\n{stderr}\n--- stdout ---\n{}",
        spec.args,
        res.status,
        String::from_utf8_lossy(&res.stdout)
    );
    assert_eq!(res.status.code(), Some(2), "{ctx}\n(expected exit code 2)");
    let msg = stderr.trim();
    assert!(
        !msg.is_empty(),
        "{ctx}\n(expected an error message on stderr)"
    );
    assert_eq!(
        msg.lines().count(),
        1,
        "{ctx}\n(expected a one-line error on stderr)"
    );
    let named = if whole_word {
        contains_word(msg, must_name)
    } else {
        msg.contains(must_name)
    };
    assert!(named, "{ctx}\n(stderr must name `{must_name}`)");
    assert!(
        !out.exists(),
        "{ctx}\n(output file {} must not be created)",
        out.display()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The comparator accepts identical tensors, reports a perturbed f32 tensor
/// `name` of the expected file `path` with its name and flat index, and
/// rejects NaN.
pub fn comparator_self_check(path: &Path, name: &str, tol: f32) {
    let bytes = read(path);
    let st = parse(&bytes, path);
    for n in st.names() {
        let t = st.tensor(n).expect("tensor");
        assert_close("self", n, &t, &t, tol);
    }
    let e = st.tensor(name).expect("tensor");
    let mut v = f32_values(name, &e);
    v[3] += 1e-2;
    let data = f32_bytes(&v);
    let a = TensorView::new(Dtype::F32, e.shape().to_vec(), &data).expect("view");
    let msg = std::panic::catch_unwind(|| assert_close("self", name, &e, &a, tol))
        .expect_err("perturbed tensor must be rejected");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains(&format!("`{name}`")), "{msg}");
    assert!(msg.contains("flat index 3"), "{msg}");
    v[3] = f32::NAN;
    let data = f32_bytes(&v);
    let a = TensorView::new(Dtype::F32, e.shape().to_vec(), &data).expect("view");
    assert!(
        std::panic::catch_unwind(|| assert_close("self", "nan", &e, &a, tol)).is_err(),
        "NaN must be rejected"
    );
}
