//! Model configuration and parameters. All parameters live in one flat GPU
//! buffer and all gradients in another, described by a table of
//! (PyTorch name, shape, offset), so that clipping and optimizers are one pass
//! over one buffer and safetensors I/O is a walk of the table.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use std::collections::BTreeMap;

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

/// Shape of a stacked LSTM, with `nn.LSTM`'s meaning of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LstmConfig {
    /// Features per input step (I).
    pub input_size: usize,
    /// Hidden units per direction (H).
    pub hidden_size: usize,
    /// Stacked layers (L).
    pub num_layers: usize,
    /// Two directions per layer.
    pub bidirectional: bool,
    /// `bias_ih`/`bias_hh` present.
    pub bias: bool,
}

impl LstmConfig {
    /// Directions per layer (D).
    pub fn dirs(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Input features of layer `l`.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.dirs() * self.hidden_size
        }
    }

    /// Checks that every size is positive.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
        ] {
            if v == 0 {
                return Err(Error::Invalid(format!("{what} must be at least 1")));
            }
        }
        Ok(())
    }

    /// Parameter names and shapes in `nn.LSTM.state_dict()` order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden_size;
        let mut v = Vec::new();
        for l in 0..self.num_layers {
            for d in 0..self.dirs() {
                let sfx = if d == 1 { "_reverse" } else { "" };
                v.push((
                    format!("weight_ih_l{l}{sfx}"),
                    vec![4 * h, self.layer_input(l)],
                ));
                v.push((format!("weight_hh_l{l}{sfx}"), vec![4 * h, h]));
                if self.bias {
                    v.push((format!("bias_ih_l{l}{sfx}"), vec![4 * h]));
                    v.push((format!("bias_hh_l{l}{sfx}"), vec![4 * h]));
                }
            }
        }
        v
    }

    /// Reads the configuration from `nn.LSTM` state_dict names and shapes.
    pub fn infer(shapes: &BTreeMap<String, Vec<usize>>) -> Result<Self> {
        let get = |name: &str| {
            shapes
                .get(name)
                .ok_or_else(|| Error::tensor(name, "missing: an nn.LSTM state_dict needs it"))
        };
        let hh = get("weight_hh_l0")?;
        if hh.len() != 2 || hh[0] != 4 * hh[1] || hh[1] == 0 {
            return Err(Error::tensor(
                "weight_hh_l0",
                format!("shape {hh:?}, expected [4*H, H] with H >= 1"),
            ));
        }
        let ih = get("weight_ih_l0")?;
        if ih.len() != 2 || ih[0] != hh[0] || ih[1] == 0 {
            return Err(Error::tensor(
                "weight_ih_l0",
                format!("shape {ih:?}, expected [{}, I] with I >= 1", hh[0]),
            ));
        }
        let mut num_layers = 1;
        while shapes.contains_key(&format!("weight_ih_l{num_layers}"))
            || shapes.contains_key(&format!("weight_hh_l{num_layers}"))
        {
            num_layers += 1;
        }
        Ok(Self {
            input_size: ih[1],
            hidden_size: hh[1],
            num_layers,
            bidirectional: shapes.contains_key("weight_ih_l0_reverse")
                || shapes.contains_key("weight_hh_l0_reverse"),
            bias: shapes.contains_key("bias_ih_l0") || shapes.contains_key("bias_hh_l0"),
        })
    }
}

/// Where one parameter lives in the flat buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// PyTorch name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Offset in elements.
    pub offset: usize,
}

impl ParamEntry {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The table of parameters in the flat buffers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamTable {
    /// Entries in state_dict order.
    pub entries: Vec<ParamEntry>,
    /// Total elements.
    pub total: usize,
}

impl ParamTable {
    /// Lays out `shapes` one after another.
    pub fn new(shapes: Vec<(String, Vec<usize>)>) -> Self {
        let mut t = Self::default();
        for (name, shape) in shapes {
            t.push(name, shape);
        }
        t
    }

    /// Appends one tensor.
    pub fn push(&mut self, name: String, shape: Vec<usize>) {
        let n: usize = shape.iter().product();
        self.entries.push(ParamEntry {
            name,
            shape,
            offset: self.total,
        });
        self.total += n;
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Offset of `name`; the name must be in the table.
    pub fn offset(&self, name: &str) -> usize {
        match self.get(name) {
            Some(e) => e.offset,
            None => panic!("parameter table has no `{name}`"),
        }
    }
}

/// A stacked LSTM whose parameters and gradients live on the GPU.
pub struct LstmModel {
    /// Shape.
    pub config: LstmConfig,
    /// Layout of the flat buffers.
    pub table: ParamTable,
    /// All parameters.
    pub params: wgpu::Buffer,
    /// All gradients (same layout).
    pub grads: wgpu::Buffer,
}

/// Name suffix of direction `d`.
pub fn dir_suffix(d: usize) -> &'static str {
    if d == 1 { "_reverse" } else { "" }
}

impl LstmModel {
    /// A model with parameters from `values` (flat, in table order).
    pub fn with_values(ctx: &GpuContext, config: LstmConfig, values: &[f32]) -> Result<Self> {
        config.validate()?;
        let table = ParamTable::new(config.param_shapes());
        if values.len() != table.total {
            return Err(Error::Invalid(format!(
                "{} parameter values given, the model has {}",
                values.len(),
                table.total
            )));
        }
        let params = ctx.storage_init("parameters", values)?;
        let grads = ctx.storage("gradients", table.total)?;
        Ok(Self {
            config,
            table,
            params,
            grads,
        })
    }

    /// PyTorch's default initialisation: every parameter U(-1/√H, 1/√H),
    /// from a seeded generator.
    pub fn init_uniform(ctx: &GpuContext, config: LstmConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let n = ParamTable::new(config.param_shapes()).total;
        ctx.check_size("parameters", n as u64 * 4)?;
        let k = 1.0 / (config.hidden_size as f64).sqrt();
        let mut rng = crate::reference::Rng::new(seed);
        let values: Vec<f32> = (0..n).map(|_| rng.uniform(-k, k) as f32).collect();
        Self::with_values(ctx, config, &values)
    }

    /// A model from `nn.LSTM` state_dict tensors: the configuration is read
    /// from the names and shapes, and every tensor must be used.
    pub fn from_tensors(ctx: &GpuContext, tensors: &[NamedTensor]) -> Result<Self> {
        let (config, values) = Self::host_values(tensors)?;
        Self::with_values(ctx, config, &values)
    }

    /// Checks `nn.LSTM` state_dict tensors on the host and returns the
    /// configuration they describe and the flat parameter values, so that
    /// bad files are rejected before any GPU work.
    pub fn host_values(tensors: &[NamedTensor]) -> Result<(LstmConfig, Vec<f32>)> {
        let shapes: BTreeMap<String, Vec<usize>> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        let config = LstmConfig::infer(&shapes)?;
        let table = ParamTable::new(config.param_shapes());
        let mut values = vec![0f32; table.total];
        for e in &table.entries {
            let t = tensors.iter().find(|t| t.name == e.name).ok_or_else(|| {
                Error::tensor(
                    &e.name,
                    format!(
                        "missing: expected shape {:?} for {} layer(s), hidden {}, {}",
                        e.shape,
                        config.num_layers,
                        config.hidden_size,
                        if config.bidirectional {
                            "bidirectional"
                        } else {
                            "unidirectional"
                        }
                    ),
                )
            })?;
            if t.shape != e.shape {
                return Err(Error::tensor(
                    &e.name,
                    format!("shape {:?}, expected {:?}", t.shape, e.shape),
                ));
            }
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::tensor(
                    &e.name,
                    format!("non-finite value {} at flat index {i}", t.data[i]),
                ));
            }
            values[e.offset..e.offset + e.len()].copy_from_slice(&t.data);
        }
        if let Some(t) = tensors.iter().find(|t| table.get(&t.name).is_none()) {
            return Err(Error::tensor(
                &t.name,
                format!(
                    "unexpected in an nn.LSTM state_dict with {} layer(s){}{}",
                    config.num_layers,
                    if config.bidirectional {
                        ", bidirectional"
                    } else {
                        ""
                    },
                    if config.bias { "" } else { ", no bias" }
                ),
            ));
        }
        Ok((config, values))
    }

    fn split(&self, flat: Vec<f32>, prefix: &str) -> Vec<NamedTensor> {
        self.table
            .entries
            .iter()
            .map(|e| {
                NamedTensor::new(
                    format!("{prefix}{}", e.name),
                    e.shape.clone(),
                    flat[e.offset..e.offset + e.len()].to_vec(),
                )
            })
            .collect()
    }

    /// All parameters, read back, with their PyTorch names.
    pub fn param_tensors(&self, ctx: &GpuContext) -> Result<Vec<NamedTensor>> {
        let flat = ctx.read_f32(&self.params, 0, self.table.total)?;
        Ok(self.split(flat, ""))
    }

    /// All gradients, read back, named `grad.<name>`.
    pub fn grad_tensors(&self, ctx: &GpuContext) -> Result<Vec<NamedTensor>> {
        let flat = ctx.read_f32(&self.grads, 0, self.table.total)?;
        Ok(self.split(flat, "grad."))
    }

    /// Offsets of (W_ih, W_hh, b_ih, b_hh) of layer `l`, direction `d`.
    pub fn cell_offsets(&self, l: usize, d: usize) -> (usize, usize, Option<usize>, Option<usize>) {
        let s = dir_suffix(d);
        let t = &self.table;
        let b = |n: String| t.get(&n).map(|e| e.offset);
        (
            t.offset(&format!("weight_ih_l{l}{s}")),
            t.offset(&format!("weight_hh_l{l}{s}")),
            b(format!("bias_ih_l{l}{s}")),
            b(format!("bias_hh_l{l}{s}")),
        )
    }
}
