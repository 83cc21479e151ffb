//! The `lstm_wgpu` Python module: `train` (the CLI's `train` as a call),
//! `Model` (a trained checkpoint) and `LSTM` (forward and backward on
//! tensors the caller brings), numpy in and out.
//!
//! Every entry point runs inside [`guard`]: an engine error becomes a Python
//! exception carrying the engine's one-line message, and a panic is caught
//! here (never unwinding into Python) and raised as `RuntimeError`.

use engine::infer::{Sampling, Task};
use engine::kernels::cell::Cell;
use engine::train::Head;
use engine::{Batch, Error, GpuContext, Lstm, LstmConfig, LstmModel, NamedTensor, Upstream};
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

/// The Python exception of an engine error: GPU failures are
/// `RuntimeError`, everything else (bad files, tensors, shapes, settings, a
/// model of the wrong task) `ValueError`.
fn py_err(e: Error) -> PyErr {
    // One line, as the CLI says it (wgpu's messages span several).
    let msg = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match e {
        Error::NoAdapter(_) | Error::Device(_) | Error::Gpu(_) | Error::TooLarge { .. } => {
            PyRuntimeError::new_err(msg)
        }
        _ => PyValueError::new_err(msg),
    }
}

/// Runs `f`, turning a panic into `RuntimeError` so that none crosses into
/// Python.
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!(
                "internal error in lstm_wgpu: {what}"
            )))
        }
    }
}

fn invalid(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// `obj` as a C-contiguous numpy array of `dtype` (lists, other float
/// types and strided views are converted as `numpy.ascontiguousarray`
/// does).
fn contiguous<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    dtype: &str,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("numpy")?
        .call_method1("ascontiguousarray", (obj, dtype))
}

/// `obj` as values of `dtype` (`T`'s numpy name) with their shape.
fn array<T: numpy::Element + Copy>(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    dtype: &str,
    what: &str,
) -> PyResult<(Vec<T>, Vec<usize>)> {
    let a = contiguous(py, obj, dtype)
        .map_err(|e| invalid(format!("{what}: not a {dtype} array ({e})")))?;
    let a: PyReadonlyArrayDyn<T> = a.extract()?;
    Ok((a.as_slice()?.to_vec(), a.shape().to_vec()))
}

/// `obj` as f32 values with their shape.
fn f32_array(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<(Vec<f32>, Vec<usize>)> {
    array(py, obj, "float32", what)
}

/// `obj` as f64 values with their shape.
fn f64_array(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<(Vec<f64>, Vec<usize>)> {
    array(py, obj, "float64", what)
}

/// A 2-D array of rows × features.
fn rows(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<f64>>> {
    let (v, shape) = f64_array(py, obj, "rows")?;
    match shape[..] {
        [_, f] if f > 0 => Ok(v.chunks(f).map(|c| c.to_vec()).collect()),
        _ => Err(invalid(format!(
            "rows: expected a 2-D array [rows, features], got shape {shape:?}"
        ))),
    }
}

fn to_numpy<'py, T: numpy::Element>(
    py: Python<'py>,
    data: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    numpy::PyArray1::from_vec(py, data).reshape(shape.to_vec())
}

fn tensors_dict<'py>(py: Python<'py>, ts: Vec<NamedTensor>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for t in ts {
        d.set_item(&t.name, to_numpy(py, t.data, &t.shape)?)?;
    }
    Ok(d)
}

/// The process's one GPU context, made on first use and shared by every
/// `Model` and `LSTM` (a device costs a few hundred milliseconds on
/// lavapipe; a failure is not kept, so a later call tries again).
fn gpu() -> PyResult<Arc<GpuContext>> {
    static CTX: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);
    let mut ctx = CTX.lock().unwrap_or_else(|e| e.into_inner());
    if ctx.is_none() {
        *ctx = Some(Arc::new(GpuContext::new().map_err(py_err)?));
    }
    Ok(ctx.as_ref().expect("set above").clone())
}

/// A trained checkpoint of `lstm-wgpu train`, on the GPU, in eval mode.
#[pyclass(unsendable, module = "lstm_wgpu")]
struct Model {
    inner: engine::Model,
}

#[pymethods]
impl Model {
    /// Opens any checkpoint `lstm-wgpu train` writes (`FileNotFoundError`
    /// when there is no such file).
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Self> {
        guard(|| {
            if !path.exists() {
                return Err(PyFileNotFoundError::new_err(format!(
                    "{}: no such checkpoint",
                    path.display()
                )));
            }
            Ok(Self {
                inner: engine::Model::load_on(gpu()?, &path).map_err(py_err)?,
            })
        })
    }

    /// The model's feature columns of a CSV, in their units: a float64
    /// array [rows, features] for `predict`, `forecast` and `step`.
    fn csv_rows<'py>(
        &self,
        py: Python<'py>,
        path: std::path::PathBuf,
    ) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
        guard(|| {
            let r = self.inner.csv_rows(&path).map_err(py_err)?;
            let f = self.inner.num_features();
            to_numpy(py, r.concat(), &[r.len(), f])
        })
    }

    /// Every window's next `horizon` target values, in the target's units:
    /// rows [N, features] in, [N - seq_len + 1, horizon] out.
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
        guard(|| {
            let r = self::rows(py, rows)?;
            let p = self.inner.predict(&r).map_err(py_err)?;
            let k = self.inner.config().horizon;
            to_numpy(py, p.concat(), &[p.len(), k])
        })
    }

    /// `n` target values past the last row (`predict --future n`).
    fn forecast<'py>(
        &mut self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
        n: usize,
    ) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
        guard(|| {
            let r = self::rows(py, rows)?;
            let v = self.inner.forecast(&r, n).map_err(py_err)?;
            let len = v.len();
            to_numpy(py, v, &[len])
        })
    }

    /// One step of a series model from the carried state (see `reset`).
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        row: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
        guard(|| {
            let (v, shape) = f64_array(py, row, "row")?;
            if shape.len() != 1 {
                return Err(invalid(format!(
                    "row: expected a 1-D array of features, got shape {shape:?}"
                )));
            }
            let y = self.inner.step(&v).map_err(py_err)?;
            let len = y.len();
            to_numpy(py, y, &[len])
        })
    }

    /// Starts the next `step` from a zero state.
    fn reset(&mut self) {
        self.inner.reset()
    }

    /// Text from a text model: the prompt primes a zero state, then `n`
    /// characters are sampled (the continuation is returned).
    #[pyo3(signature = (prompt, n, temperature = 1.0, top_k = 0, seed = 0))]
    fn generate(
        &mut self,
        prompt: &str,
        n: usize,
        temperature: f64,
        top_k: usize,
        seed: u64,
    ) -> PyResult<String> {
        guard(|| {
            let s = Sampling {
                temperature,
                top_k,
                seed,
            };
            self.inner.generate(prompt, n, &s).map_err(py_err)
        })
    }

    /// The parameters under the PyTorch names of `export --to pytorch`
    /// (`embedding.weight`, `lstm.weight_ih_l0`, …, `head.weight`,
    /// `head.bias`), float32 arrays.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| tensors_dict(py, self.inner.checkpoint().state_dict()))
    }

    /// The model's settings: task, sizes, cell, window length, horizon, and
    /// the normaliser (series) or vocabulary (text).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let c = self.inner.config();
            let d = PyDict::new(py);
            let task = match c.task {
                Task::Text => "text",
                Task::Series => "series",
            };
            d.set_item("task", task)?;
            let net = &c.net;
            let lstm = net.lstm();
            d.set_item("input_size", lstm.input_size)?;
            d.set_item("hidden_size", net.hidden)?;
            d.set_item("num_layers", net.layers)?;
            d.set_item("cell", net.cell.name())?;
            d.set_item("norm", format!("{:?}", net.norm))?;
            d.set_item("residual", net.residual)?;
            match net.head {
                Head::Language { vocab, embed } => {
                    d.set_item("head", "language")?;
                    d.set_item("vocab_size", vocab)?;
                    d.set_item("embed", embed)?;
                }
                Head::Regression { features, outputs } | Head::Sequence { features, outputs } => {
                    let kind = match net.head {
                        Head::Regression { .. } => "regression",
                        _ => "sequence",
                    };
                    d.set_item("head", kind)?;
                    d.set_item("features", features)?;
                    d.set_item("outputs", outputs)?;
                }
            }
            d.set_item("seq_len", c.seq_len)?;
            d.set_item("horizon", c.horizon)?;
            if let Some(n) = self.inner.normalizer() {
                let col = |s: &engine::data::ColumnStats| -> PyResult<Bound<'py, PyDict>> {
                    let e = PyDict::new(py);
                    e.set_item("name", &s.name)?;
                    e.set_item("mean", s.mean)?;
                    e.set_item("std", s.std)?;
                    Ok(e)
                };
                let nd = PyDict::new(py);
                let feats = n.features.iter().map(col).collect::<PyResult<Vec<_>>>()?;
                nd.set_item("features", PyList::new(py, feats)?)?;
                nd.set_item("target", col(&n.target)?)?;
                d.set_item("normalizer", nd)?;
            }
            if let Some(v) = self.inner.vocab() {
                let chars: Vec<String> = v.chars.iter().map(|c| c.to_string()).collect();
                d.set_item("vocab", chars)?;
            }
            Ok(d)
        })
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "lstm_wgpu.Model({:?}, {:?} task, {} x {} {})",
            self.inner.checkpoint().path().display().to_string(),
            c.task,
            c.net.layers,
            c.net.hidden,
            c.net.cell.name()
        )
    }
}

/// The inputs of the last `forward`, which `backward` differentiates.
struct Saved {
    input: Vec<f32>,
    seq_len: usize,
    batch: usize,
    h0: Option<Vec<f32>>,
    c0: Option<Vec<f32>>,
    lengths: Option<Vec<usize>>,
}

/// `nn.LSTM` (or `nn.GRU`, IndRNN) on the GPU with host arrays in and out:
/// the `grad` command as an object.
#[pyclass(unsendable, module = "lstm_wgpu", name = "LSTM")]
struct PyLstm {
    lstm: Lstm,
    batch_first: bool,
    saved: Option<Saved>,
}

impl PyLstm {
    fn cfg(&self) -> &LstmConfig {
        &self.lstm.model.config
    }

    /// The state shape `[L·D, B, H]`.
    fn state_shape(&self, batch: usize) -> Vec<usize> {
        let c = self.cfg();
        vec![c.num_layers * c.dirs(), batch, c.hidden_size]
    }

    fn state_arg(
        &self,
        py: Python<'_>,
        obj: Option<&Bound<'_, PyAny>>,
        what: &str,
        batch: usize,
    ) -> PyResult<Option<Vec<f32>>> {
        let Some(obj) = obj.filter(|o| !o.is_none()) else {
            return Ok(None);
        };
        let (v, shape) = f32_array(py, obj, what)?;
        let want = self.state_shape(batch);
        if shape != want {
            return Err(invalid(format!(
                "{what}: shape {shape:?}, expected {want:?} (layers·directions, batch, hidden)"
            )));
        }
        Ok(Some(v))
    }

    fn wrap(lstm: Lstm, batch_first: bool) -> Self {
        Self {
            lstm,
            batch_first,
            saved: None,
        }
    }
}

fn parse_cell(cell: &str) -> PyResult<Cell> {
    Cell::parse(cell).map_err(invalid)
}

#[pymethods]
impl PyLstm {
    /// A model with PyTorch's default initialisation, U(-1/√H, 1/√H), from
    /// the engine's generator seeded `seed`.
    #[new]
    #[pyo3(signature = (input_size, hidden_size, num_layers = 1, bidirectional = false,
                        batch_first = false, bias = true, cell = "lstm", seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bidirectional: bool,
        batch_first: bool,
        bias: bool,
        cell: &str,
        seed: u64,
    ) -> PyResult<Self> {
        guard(|| {
            let cfg = LstmConfig {
                input_size,
                hidden_size,
                num_layers,
                bidirectional,
                bias,
                cell: parse_cell(cell)?,
                proj_size: 0,
            };
            let ctx = gpu()?;
            let model = LstmModel::init_uniform(&ctx, cfg, seed).map_err(py_err)?;
            Ok(Self::wrap(
                Lstm::new(ctx, model).map_err(py_err)?,
                batch_first,
            ))
        })
    }

    /// A model from a state_dict (`nn.LSTM(...).state_dict()` as numpy or
    /// torch tensors): sizes, layers, direction and bias are read from its
    /// names and shapes; `cell` names the module ("lstm", "gru", "indrnn",
    /// "indrnn-tanh").
    #[staticmethod]
    #[pyo3(signature = (state_dict, batch_first = false, cell = "lstm"))]
    fn from_state_dict(
        py: Python<'_>,
        state_dict: &Bound<'_, PyDict>,
        batch_first: bool,
        cell: &str,
    ) -> PyResult<Self> {
        guard(|| {
            let mut ts = Vec::new();
            for (k, v) in state_dict.iter() {
                let name: String = k.extract()?;
                // torch tensors: through numpy without importing torch here.
                let v = match v.hasattr("detach")? {
                    true => v
                        .call_method0("detach")?
                        .call_method0("cpu")?
                        .call_method0("numpy")?,
                    false => v,
                };
                let (data, shape) = f32_array(py, &v, &name)?;
                ts.push(NamedTensor::new(name, shape, data));
            }
            let host = LstmModel::host_model(&ts, &BTreeMap::new(), None, parse_cell(cell)?)
                .map_err(py_err)?;
            let ctx = gpu()?;
            let model = LstmModel::from_host(&ctx, host).map_err(py_err)?;
            Ok(Self::wrap(
                Lstm::new(ctx, model).map_err(py_err)?,
                batch_first,
            ))
        })
    }

    /// The parameters under `nn.LSTM`'s names, float32 arrays.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            tensors_dict(
                py,
                self.lstm
                    .model
                    .param_tensors(self.lstm.ctx())
                    .map_err(py_err)?,
            )
        })
    }

    #[getter]
    fn input_size(&self) -> usize {
        self.cfg().input_size
    }

    #[getter]
    fn hidden_size(&self) -> usize {
        self.cfg().hidden_size
    }

    #[getter]
    fn num_layers(&self) -> usize {
        self.cfg().num_layers
    }

    #[getter]
    fn bidirectional(&self) -> bool {
        self.cfg().bidirectional
    }

    #[getter]
    fn bias(&self) -> bool {
        self.cfg().bias
    }

    #[getter]
    fn batch_first(&self) -> bool {
        self.batch_first
    }

    #[getter]
    fn cell(&self) -> &'static str {
        self.cfg().cell.name()
    }

    /// `nn.LSTM.forward`: x [T, B, I] (or [B, T, I] with batch_first),
    /// optional h0/c0 [L·D, B, H] and lengths [B] (packed semantics; the
    /// output is zero past each length). Returns (output, (h_n, c_n)) for
    /// the LSTM and (output, h_n) for cells without c, as PyTorch does.
    #[pyo3(signature = (x, h0 = None, c0 = None, lengths = None))]
    fn forward<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        h0: Option<&Bound<'py, PyAny>>,
        c0: Option<&Bound<'py, PyAny>>,
        lengths: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            let (input, shape) = f32_array(py, x, "x")?;
            let (seq_len, batch) = match (shape.as_slice(), self.batch_first) {
                (&[t, b, _], false) | (&[b, t, _], true) => (t, b),
                _ => {
                    return Err(invalid(format!(
                        "x: expected a 3-D array, got shape {shape:?}"
                    )));
                }
            };
            if shape[2] != self.cfg().input_size {
                return Err(invalid(format!(
                    "x: {} features per step, the model's input_size is {}",
                    shape[2],
                    self.cfg().input_size
                )));
            }
            let h0 = self.state_arg(py, h0, "h0", batch)?;
            let c0 = self.state_arg(py, c0, "c0", batch)?;
            if c0.is_some() && !self.cfg().cell.has_c() {
                return Err(invalid(format!(
                    "c0: the {} cell has no c state",
                    self.cfg().cell.name()
                )));
            }
            let lengths = match lengths.filter(|o| !o.is_none()) {
                None => None,
                Some(l) => {
                    let (v, shape) = array::<i64>(py, l, "int64", "lengths")?;
                    if shape != [batch] || v.iter().any(|&n| n < 1 || n as usize > seq_len) {
                        return Err(invalid(format!(
                            "lengths: expected {batch} values in 1..={seq_len}, got {v:?}"
                        )));
                    }
                    Some(v.iter().map(|&n| n as usize).collect::<Vec<usize>>())
                }
            };
            let saved = Saved {
                input,
                seq_len,
                batch,
                h0,
                c0,
                lengths,
            };
            let out = self
                .lstm
                .forward(&batch_of(&saved, self.batch_first))
                .map_err(py_err)?;
            let w = self.cfg().dirs() * self.cfg().hidden_size;
            let oshape = match self.batch_first {
                false => [seq_len, batch, w],
                true => [batch, seq_len, w],
            };
            let sshape = self.state_shape(batch);
            let output = to_numpy(py, out.output, &oshape)?;
            let h_n = to_numpy(py, out.h_n, &sshape)?;
            self.saved = Some(saved);
            let result = match self.cfg().cell.has_c() {
                true => {
                    let c_n = to_numpy(py, out.c_n, &sshape)?;
                    (output, (h_n, c_n)).into_pyobject(py)?.into_any()
                }
                false => (output, h_n).into_pyobject(py)?.into_any(),
            };
            Ok(result)
        })
    }

    /// The gradients of `Σ output·grad_output + Σ h_n·grad_h_n +
    /// Σ c_n·grad_c_n` at the last `forward`'s inputs (absent upstream
    /// gradients are zero): a dict with `input`, `h0` and `c0` (those given
    /// to forward) and every parameter under its `nn.LSTM` name.
    #[pyo3(signature = (grad_output, grad_h_n = None, grad_c_n = None))]
    fn backward<'py>(
        &mut self,
        py: Python<'py>,
        grad_output: &Bound<'py, PyAny>,
        grad_h_n: Option<&Bound<'py, PyAny>>,
        grad_c_n: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let Some(saved) = self.saved.take() else {
                return Err(invalid("backward: call forward first"));
            };
            let r = self.backward_at(py, &saved, grad_output, grad_h_n, grad_c_n);
            self.saved = Some(saved);
            r
        })
    }

    fn __repr__(&self) -> String {
        let c = self.cfg();
        format!(
            "lstm_wgpu.LSTM({}, {}, num_layers={}, bidirectional={}, batch_first={}, bias={}, cell='{}')",
            c.input_size,
            c.hidden_size,
            c.num_layers,
            py_bool(c.bidirectional),
            py_bool(self.batch_first),
            py_bool(c.bias),
            c.cell.name()
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

fn batch_of(s: &Saved, batch_first: bool) -> Batch<'_> {
    Batch {
        input: &s.input,
        seq_len: s.seq_len,
        batch: s.batch,
        batch_first,
        h0: s.h0.as_deref(),
        c0: s.c0.as_deref(),
        lengths: s.lengths.as_deref(),
    }
}

impl PyLstm {
    fn backward_at<'py>(
        &mut self,
        py: Python<'py>,
        s: &Saved,
        grad_output: &Bound<'py, PyAny>,
        grad_h_n: Option<&Bound<'py, PyAny>>,
        grad_c_n: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let has_c = self.cfg().cell.has_c();
        let w = self.cfg().dirs() * self.cfg().hidden_size;
        let oshape = match self.batch_first {
            false => vec![s.seq_len, s.batch, w],
            true => vec![s.batch, s.seq_len, w],
        };
        let (gy, gshape) = f32_array(py, grad_output, "grad_output")?;
        if gshape != oshape {
            return Err(invalid(format!(
                "grad_output: shape {gshape:?}, expected the output's {oshape:?}"
            )));
        }
        let sshape = self.state_shape(s.batch);
        let zeros = vec![0f32; sshape.iter().product()];
        let gh = self
            .state_arg(py, grad_h_n, "grad_h_n", s.batch)?
            .unwrap_or_else(|| zeros.clone());
        let gc = match (has_c, self.state_arg(py, grad_c_n, "grad_c_n", s.batch)?) {
            (true, g) => g.unwrap_or(zeros),
            (false, None) => Vec::new(),
            (false, Some(_)) => {
                return Err(invalid(format!(
                    "grad_c_n: the {} cell has no c state",
                    self.cfg().cell.name()
                )));
            }
        };
        let up = Upstream {
            grad_output: &gy,
            grad_h_n: &gh,
            grad_c_n: &gc,
        };
        let (_, g) = self
            .lstm
            .forward_backward(&batch_of(s, self.batch_first), &up)
            .map_err(py_err)?;
        let d = PyDict::new(py);
        let i = self.cfg().input_size;
        let ishape = match self.batch_first {
            false => [s.seq_len, s.batch, i],
            true => [s.batch, s.seq_len, i],
        };
        d.set_item("input", to_numpy(py, g.input, &ishape)?)?;
        if s.h0.is_some() {
            d.set_item("h0", to_numpy(py, g.h0, &sshape)?)?;
        }
        if s.c0.is_some() {
            d.set_item("c0", to_numpy(py, g.c0, &sshape)?)?;
        }
        for t in g.params {
            let name = t.name.strip_prefix("grad.").unwrap_or(&t.name).to_string();
            d.set_item(name, to_numpy(py, t.data, &t.shape)?)?;
        }
        Ok(d)
    }
}

/// A keyword argument of `train` as JSON for the library's settings:
/// None, bools, ints, floats, strings and paths (`os.PathLike`); a list
/// of strings is joined with commas (`features=["a", "b"]`).
fn setting_json(key: &str, v: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    use serde_json::Value as J;
    if v.is_none() {
        return Ok(J::Null);
    }
    if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
        return Ok(J::Bool(b.is_true()));
    }
    if v.is_instance_of::<pyo3::types::PyInt>() {
        return match v.extract::<i64>() {
            Ok(i) => Ok(J::from(i)),
            Err(_) => {
                Ok(J::from(v.extract::<u64>().map_err(|_| {
                    invalid(format!("{key}: {v} does not fit 64 bits"))
                })?))
            }
        };
    }
    if v.is_instance_of::<pyo3::types::PyFloat>() {
        let x: f64 = v.extract()?;
        return serde_json::Number::from_f64(x)
            .map(J::Number)
            .ok_or_else(|| invalid(format!("{key}: {x} is not a finite number")));
    }
    if let Ok(s) = v.extract::<String>() {
        return Ok(J::String(s));
    }
    if v.hasattr("__fspath__")? {
        let p: std::path::PathBuf = v.extract()?;
        return Ok(J::String(p.to_string_lossy().into_owned()));
    }
    if let Ok(items) = v.extract::<Vec<String>>() {
        return Ok(J::String(items.join(",")));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "{key}: unsupported type {}",
        v.get_type().name()?
    )))
}

/// The library's settings from `train`'s keyword arguments (the CLI's
/// flags with underscores): unknown names raise `TypeError`, bad values
/// `ValueError` with the CLI's message.
fn run_config(settings: Option<&Bound<'_, PyDict>>) -> PyResult<RunSettings> {
    use engine::model::precision::{LossScaleChoice, PrecisionChoice};
    let mut obj = serde_json::Map::new();
    let (mut precision, mut loss_scale) = (None, LossScaleChoice::default());
    for (k, v) in settings.into_iter().flat_map(|d| d.iter()) {
        let key: String = k.extract()?;
        match key.as_str() {
            // Command-line only in TOML; taken here as in `--precision`.
            "precision" if !v.is_none() => {
                let s: String = v.extract()?;
                precision = Some(
                    PrecisionChoice::parse(&s)
                        .map_err(|e| invalid(format!("--precision {s}: {e}")))?,
                );
            }
            "loss_scale" if !v.is_none() => {
                let s: String = v
                    .extract::<String>()
                    .or_else(|_| v.str().map(|x| x.to_string()))?;
                loss_scale = LossScaleChoice::parse(&s)
                    .map_err(|e| invalid(format!("--loss-scale {s}: {e}")))?;
            }
            "precision" | "loss_scale" => {}
            _ => {
                obj.insert(key.replace('_', "-"), setting_json(&key, &v)?);
            }
        }
    }
    let one = |k: &str, v: &serde_json::Value| {
        let mut m = serde_json::Map::new();
        m.insert(k.to_string(), v.clone());
        serde_json::from_value::<engine::run::Config>(serde_json::Value::Object(m))
    };
    let mut config = match serde_json::from_value::<engine::run::Config>(obj.clone().into()) {
        Ok(c) => c,
        Err(e) => {
            // Name the argument: the first that fails alone.
            for (k, v) in &obj {
                if let Err(e) = one(k, v) {
                    let name = k.replace('-', "_");
                    let msg = e.to_string();
                    if msg.starts_with("unknown field") {
                        let cli_only = [
                            "config",
                            "metrics",
                            "tensorboard",
                            "plot",
                            "plot_log",
                            "no_progress",
                            "dump_data",
                        ];
                        let why = match cli_only.contains(&name.as_str()) {
                            true => {
                                " (a command-line output of `lstm-wgpu train`: the history \
                                     returned holds every step's metrics)"
                            }
                            false => "",
                        };
                        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                            "train() got an unexpected keyword argument '{name}'{why}"
                        )));
                    }
                    // The choices' own messages name the flag already.
                    return Err(invalid(match msg.starts_with("--") {
                        true => msg,
                        false => format!("{name}: {msg}"),
                    }));
                }
            }
            return Err(invalid(e.to_string()));
        }
    };
    config.precision = precision;
    config.loss_scale = loss_scale;
    Ok(RunSettings(config))
}

/// [`engine::run::Config`], built from keyword arguments.
struct RunSettings(engine::run::Config);

/// The data argument of `train`: a path (str or `os.PathLike`), int token
/// ids with `vocab`, or a float matrix rows × columns (1-D: one column)
/// named by `columns`.
fn run_data(
    py: Python<'_>,
    data: Option<&Bound<'_, PyAny>>,
    vocab: Option<&Bound<'_, PyAny>>,
    columns: Option<Vec<String>>,
    config: &mut engine::run::Config,
) -> PyResult<engine::run::Data> {
    use engine::run::Data;
    let Some(data) = data.filter(|d| !d.is_none()) else {
        return Ok(Data::Settings);
    };
    if data.is_instance_of::<pyo3::types::PyString>() || data.hasattr("__fspath__")? {
        config.data = Some(data.extract()?);
        return Ok(Data::Settings);
    }
    let a = py.import("numpy")?.call_method1("asarray", (data,))?;
    let kind: String = a.getattr("dtype")?.getattr("kind")?.extract()?;
    match kind.as_str() {
        "i" | "u" => {
            let (ids, shape) = array::<i64>(py, &a, "int64", "data")?;
            if shape.len() != 1 {
                return Err(invalid(format!(
                    "data: token ids must be a 1-D array, got shape {shape:?}"
                )));
            }
            let Some(vocab) = vocab.filter(|v| !v.is_none()) else {
                return Err(invalid(
                    "data: token ids need vocab=, the characters they stand for (id k is vocab[k])",
                ));
            };
            let chars: String = match vocab.extract::<String>() {
                Ok(s) => s,
                Err(_) => vocab.extract::<Vec<String>>()?.concat(),
            };
            let vocab =
                engine::data::Vocab::load(&chars).map_err(|e| invalid(format!("vocab: {e}")))?;
            let ids = ids
                .iter()
                .map(|&i| u32::try_from(i))
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|_| invalid("data: token ids must be in 0..2^32"))?;
            Ok(Data::Tokens { ids, vocab })
        }
        "f" => {
            let (values, shape) = f64_array(py, &a, "data")?;
            let width = match shape[..] {
                [_] => 1,
                [_, f] if f > 0 => f,
                _ => {
                    return Err(invalid(format!(
                        "data: a series must be a 1-D or 2-D array [rows, columns], got shape {shape:?}"
                    )));
                }
            };
            let columns = columns.unwrap_or_else(|| (1..=width).map(|j| format!("x{j}")).collect());
            if columns.len() != width {
                return Err(invalid(format!(
                    "columns: {} names for {width} columns",
                    columns.len()
                )));
            }
            Ok(Data::Rows { values, columns })
        }
        k => Err(invalid(format!(
            "data: expected a path, int token ids or a float array, got an array of dtype kind '{k}'"
        ))),
    }
}

/// One step's metrics as a dict, named as in the CLI's `--metrics` file.
fn step_dict<'py>(py: Python<'py>, m: &engine::run::StepMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("step", m.step)?;
    d.set_item("loss", m.loss as f64)?;
    d.set_item("lr", m.lr)?;
    d.set_item("grad_norm", m.grad_norm as f64)?;
    d.set_item("skipped", m.skipped)?;
    d.set_item("skipped_total", m.skipped_total)?;
    d.set_item("loss_scale", m.loss_scale as f64)?;
    d.set_item("explosion", m.health.explosion)?;
    d.set_item("tokens_per_s", m.tokens_per_s)?;
    if let Some(v) = &m.validation {
        d.set_item("val_loss", v.loss)?;
        if let Some(s) = &v.series {
            d.set_item("naive_val_loss", s.naive.mse)?;
            d.set_item("val_mae", s.model.mae)?;
            d.set_item("val_rmse", s.model.rmse)?;
            d.set_item("naive_mae", s.naive.mae)?;
            d.set_item("naive_rmse", s.naive.rmse)?;
            d.set_item("val_windows", s.windows)?;
        }
        if let Some(a) = v.recall {
            d.set_item("val_recall_acc", a)?;
        }
    }
    if m.early_stop {
        d.set_item("early_stop", true)?;
    }
    Ok(d)
}

/// Trains a model as `lstm-wgpu train` does, with its flags as keyword
/// arguments (underscores for dashes: `seq_len=12`, `val_every=50`, ...)
/// and the data as a path, token ids with `vocab`, or a float matrix with
/// `columns`. Returns `(model, history)`: the trained `Model` and one dict
/// per step (`step`, `loss`, `lr`, `grad_norm`, ..., and `val_loss` etc.
/// after a validation), which `callback`, if given, also gets as each step
/// ends.
#[pyfunction]
#[pyo3(signature = (data = None, *, vocab = None, columns = None, callback = None, **settings))]
fn train<'py>(
    py: Python<'py>,
    data: Option<&Bound<'py, PyAny>>,
    vocab: Option<&Bound<'py, PyAny>>,
    columns: Option<Vec<String>>,
    callback: Option<&Bound<'py, PyAny>>,
    settings: Option<&Bound<'py, PyDict>>,
) -> PyResult<(Model, Bound<'py, PyList>)> {
    guard(|| {
        let mut config = run_config(settings)?.0;
        let data = run_data(py, data, vocab, columns, &mut config)?;
        let p = engine::run::Prepared::new(config, data).map_err(py_err)?;
        let setup = engine::run::Setup::default();
        let run = p.start(gpu()?, setup).map_err(py_err)?;
        let warn = py.import("warnings")?;
        for w in run.warnings() {
            warn.call_method1("warn", (w.as_str(),))?;
        }
        let history = PyList::empty(py);
        // The callback's exception (or Ctrl-C), raised once the run ends.
        let mut raised: Option<PyErr> = None;
        let r = run.train(|m| {
            let step = || -> PyResult<()> {
                let d = step_dict(py, m)?;
                history.append(&d)?;
                if let Some(cb) = callback {
                    cb.call1((d,))?;
                }
                py.check_signals()
            };
            step().map_err(|e| {
                raised = Some(e);
                Error::Invalid("training stopped by the callback".into())
            })
        });
        if let Some(e) = raised {
            return Err(e);
        }
        let trained = r.map_err(py_err)?;
        Ok((
            Model {
                inner: trained.model,
            },
            history,
        ))
    })
}

/// The `lstm_wgpu` module.
#[pymodule(name = "lstm_wgpu")]
fn lstm_wgpu_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_class::<Model>()?;
    m.add_class::<PyLstm>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
