//! Model configuration and parameters. All parameters live in one flat GPU
//! buffer and all gradients in another, described by a table of
//! (PyTorch name, shape, offset), so that clipping and optimizers are one pass
//! over one buffer and safetensors I/O is a walk of the table.

pub mod config;
pub mod norm;
pub mod precision;

pub use config::{LstmConfig, dir_suffix};

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::cell::Cell;
use crate::model::norm::{Norm, NormKind, TensorKind};
use std::collections::BTreeMap;

pub use crate::io::NamedTensor;

/// One batch of sequences. Float slices are row-major.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// `[T, B, I]`, or `[B, T, I]` when `batch_first`.
    pub input: &'a [f32],
    /// T.
    pub seq_len: usize,
    /// B.
    pub batch: usize,
    /// Layout of `input` (and of `output`, `grad_output`, `grad.input`).
    pub batch_first: bool,
    /// Initial hidden state `[L·D, B, H]` (zero when `None`).
    pub h0: Option<&'a [f32]>,
    /// Initial cell state `[L·D, B, H]` (zero when `None`).
    pub c0: Option<&'a [f32]>,
    /// Valid steps per sequence, each in 1..=T (all T when `None`), with
    /// `pack_padded_sequence(..., enforce_sorted=False)` semantics.
    pub lengths: Option<&'a [usize]>,
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

    /// Its elements' range in the flat buffers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }

    /// The LSTM layer this parameter belongs to, read from its name:
    /// `…_l{k}` or `…_l{k}_reverse` before any `.` (the cell's tensors and
    /// its in-cell norms), or `…norms.{k}.…` (the norm after layer k).
    /// `None` for the parts around the LSTM (embedding, attention, head).
    pub fn layer(&self) -> Option<usize> {
        let stem = self.name.split('.').next()?;
        if let Some(i) = stem.rfind("_l") {
            let k = &stem[i + 2..];
            let k = k.strip_suffix("_reverse").unwrap_or(k);
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) {
                return k.parse().ok();
            }
        }
        let mut parts = self.name.split('.');
        match (parts.next(), parts.next()) {
            (Some(p), Some(k)) if p.ends_with("norms") => k.parse().ok(),
            _ => None,
        }
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

/// What connects stacked layers besides the between-layer norm: dropout on
/// each layer's output except the last (train mode only, as `nn.LSTM`'s
/// `dropout`), and residual connections around layers 1.. (whose input and
/// output widths agree); and the regularizers inside the recurrence:
/// weight-drop of every layer's W_hh and zoneout of its states.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Links {
    /// Drop probability in [0, 1); 0 is no dropout.
    pub dropout: f32,
    /// y_{l+1} = b_l + y_l for layers l >= 1.
    pub residual: bool,
    /// Weight-drop (DropConnect, AWD-LSTM) on W_hh in [0, 1): in train
    /// mode each forward pass uses W_hh ⊙ m / (1 − p), one Bernoulli mask
    /// m per (layer, direction) shared by all steps and sequences, drawn
    /// from the pass's [`DropoutStep`]; eval uses W_hh as it is. 0: off.
    ///
    /// [`DropoutStep`]: crate::kernels::elementwise::DropoutStep
    pub weight_drop: f32,
    /// Zoneout (Krueger et al. 2016) of h in [0, 1): after each step
    /// every unit keeps its previous value with this probability (train
    /// mode: a mask per (layer, direction, step, sequence, unit) drawn
    /// from the pass's [`DropoutStep`]); eval uses the expectation
    /// p·prev + (1 − p)·new. 0: off.
    ///
    /// [`DropoutStep`]: crate::kernels::elementwise::DropoutStep
    pub zoneout_h: f32,
    /// Zoneout of c, likewise (cells with a c state: the LSTM).
    pub zoneout_c: f32,
}

impl Links {
    /// Checks the drop probabilities.
    pub fn validate(&self) -> Result<()> {
        for (what, p) in [
            ("dropout between layers", self.dropout),
            ("weight-drop", self.weight_drop),
            ("zoneout of h", self.zoneout_h),
            ("zoneout of c", self.zoneout_c),
        ] {
            if !(p.is_finite() && (0.0..1.0).contains(&p)) {
                return Err(Error::Invalid(format!("{what} must be in [0, 1), got {p}")));
            }
        }
        Ok(())
    }

    /// Whether W_hh is weight-dropped (train mode only).
    pub fn drops_weights(&self, train: bool) -> bool {
        train && self.weight_drop > 0.0
    }

    /// The dropout stream of (layer, direction) cell `k`'s weight-drop mask:
    /// apart from the between-layer streams (the layer index).
    pub fn weight_drop_stream(k: usize) -> u32 {
        0x5744_0000 | k as u32
    }

    /// Whether zoneout is on (h or c; both modes).
    pub fn zones(&self) -> bool {
        self.zoneout_h > 0.0 || self.zoneout_c > 0.0
    }

    /// The dropout streams of the zoneout masks of h and c (one each: the
    /// mask index covers the (layer, direction)).
    pub fn zoneout_streams() -> (u32, u32) {
        (0x5A48_0000, 0x5A43_0000)
    }

    /// Whether dropout follows layer `l` (never after the last layer, only
    /// in train mode).
    pub fn drops(&self, cfg: &LstmConfig, l: usize, train: bool) -> bool {
        train && self.dropout > 0.0 && l + 1 < cfg.num_layers
    }

    /// Whether layer `l`'s input is added to its output (layers 1.., whose
    /// input width D·H equals the output width).
    pub fn adds(&self, l: usize) -> bool {
        self.residual && l >= 1
    }
}

/// A stacked LSTM whose parameters and gradients live on the GPU.
pub struct LstmModel {
    /// Shape.
    pub config: LstmConfig,
    /// Normalization variant.
    pub norm: Norm,
    /// Layout of the flat parameter and gradient buffers: the LSTM's
    /// tensors in state_dict order, then the norm parameters.
    pub table: ParamTable,
    /// All parameters.
    pub params: wgpu::Buffer,
    /// All gradients (same layout).
    pub grads: wgpu::Buffer,
    /// Layout of the running statistics of BatchNorm variants.
    pub stats_table: ParamTable,
    /// Running statistics (one element when there are none).
    pub stats: wgpu::Buffer,
    /// `num_batches_tracked` of BatchNorm modules that had one in the file.
    pub tracked: BTreeMap<String, i64>,
    /// Dropout and residual connections between layers. Once the model is
    /// bound to an [`crate::Lstm`], change them with `Lstm::set_links`
    /// (prepared plans bake them in).
    pub links: Links,
    /// Precision of the passes; set through `Lstm::set_precision`.
    pub precision: crate::model::precision::Precision,
    /// f16 shadow of `params` (two values per word), in f16-mixed.
    pub half: Option<wgpu::Buffer>,
}

/// A model's contents on the host, checked, before it goes to the GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct HostModel {
    /// Shape.
    pub config: LstmConfig,
    /// Normalization variant.
    pub norm: Norm,
    /// Parameters in table order.
    pub values: Vec<f32>,
    /// Running statistics in stats-table order.
    pub stats: Vec<f32>,
    /// `num_batches_tracked` counters by tensor name.
    pub tracked: BTreeMap<String, i64>,
    /// Parameters of the pieces around the LSTM (embedding, head), appended
    /// to the table after the LSTM's and the norms', so that clipping and
    /// the optimizer cover them in the same pass.
    pub extra: Vec<(String, Vec<usize>)>,
}

/// The parameter and running-statistics tables of a model.
pub fn tables(config: &LstmConfig, norm: &Norm) -> (ParamTable, ParamTable) {
    let mut params = ParamTable::new(config.param_shapes());
    let mut stats = ParamTable::default();
    for (name, shape, kind) in norm.tensor_shapes(config) {
        match kind {
            TensorKind::Param => params.push(name, shape),
            TensorKind::RunningStat => stats.push(name, shape),
        }
    }
    (params, stats)
}

fn split_table(table: &ParamTable, flat: &[f32], prefix: &str) -> Vec<NamedTensor> {
    table
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

/// Checks what a BatchNorm variant needs of a batch in train mode: at least
/// two values per statistic (as PyTorch), and no more steps than rows of
/// running statistics.
pub fn check_batch(cfg: &LstmConfig, norm: &Norm, b: &Batch<'_>, train: bool) -> Result<()> {
    if !train || !norm.has_batch_stats() {
        return Ok(());
    }
    let lens: Vec<usize> = match b.lengths {
        Some(l) => l.to_vec(),
        None => vec![b.seq_len; b.batch],
    };
    let max_len = lens.iter().copied().max().unwrap_or(0);
    let who = if b.lengths.is_some() {
        "lengths"
    } else {
        "input"
    };
    let (_, stats_table) = tables(cfg, norm);
    let (rows_name, t_max) = match *norm {
        Norm::StepBatch { t_max, .. } => {
            (stats_table.entries.first().map(|e| e.name.clone()), t_max)
        }
        Norm::RecurrentBatch { t_max } => {
            (stats_table.entries.first().map(|e| e.name.clone()), t_max)
        }
        _ => (None, usize::MAX),
    };
    if let Some(name) = rows_name
        && max_len > t_max
    {
        return Err(Error::tensor(
            name,
            format!("{t_max} rows of running statistics, but train mode runs {max_len} steps"),
        ));
    }
    if let Norm::Batch { .. } = *norm {
        let n: usize = lens.iter().sum();
        if n < 2 {
            return Err(Error::tensor(
                who,
                "BatchNorm in train mode needs more than 1 value per channel (1 valid position)",
            ));
        }
    } else {
        for s in 0..max_len {
            let n = lens.iter().filter(|&&l| l > s).count();
            if n < 2 {
                return Err(Error::tensor(
                    who,
                    format!(
                        "BatchNorm in train mode needs more than 1 value per channel, \
                         but only {n} sequence is active at step {s}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl LstmModel {
    /// A plain LSTM with parameters from `values` (flat, in table order).
    pub fn with_values(ctx: &GpuContext, config: LstmConfig, values: &[f32]) -> Result<Self> {
        Self::from_host(
            ctx,
            HostModel {
                config,
                norm: Norm::None,
                values: values.to_vec(),
                stats: Vec::new(),
                tracked: BTreeMap::new(),
                extra: Vec::new(),
            },
        )
    }

    /// Uploads a host model.
    pub fn from_host(ctx: &GpuContext, m: HostModel) -> Result<Self> {
        m.config.validate()?;
        if m.norm.in_cell() && m.config.cell() != Cell::Lstm {
            return Err(Error::Invalid(format!(
                "the normalized cells are LSTM cells: a {} takes a norm between layers only",
                m.config.cell().module()
            )));
        }
        if let (Some(p), false) = (m.config.proj(), matches!(m.norm, Norm::None)) {
            return Err(Error::Invalid(format!(
                "an LSTM with projections (proj_size {p}) takes no norm variant"
            )));
        }
        let (mut table, stats_table) = tables(&m.config, &m.norm);
        for (name, shape) in &m.extra {
            table.push(name.clone(), shape.clone());
        }
        if m.values.len() != table.total || m.stats.len() != stats_table.total {
            return Err(Error::Invalid(format!(
                "{} parameter and {} statistics values given, the model has {} and {}",
                m.values.len(),
                m.stats.len(),
                table.total,
                stats_table.total
            )));
        }
        let params = ctx.storage_init("parameters", &m.values)?;
        let grads = ctx.storage("gradients", table.total)?;
        let stats = ctx.storage_init("running statistics", &m.stats)?;
        Ok(Self {
            config: m.config,
            norm: m.norm,
            table,
            params,
            grads,
            stats_table,
            stats,
            tracked: m.tracked,
            links: Links::default(),
            precision: crate::model::precision::Precision::F32,
            half: None,
        })
    }

    /// Sets the precision, allocating (or dropping) the f16 shadow of the
    /// parameters; it is filled by the refresh dispatch before each forward.
    pub(crate) fn set_precision(
        &mut self,
        ctx: &GpuContext,
        p: crate::model::precision::Precision,
    ) -> Result<()> {
        self.half = match p.is_half() {
            true => Some(ctx.storage(
                "f16 parameters",
                crate::kernels::cast::half_words(self.table.total),
            )?),
            false => None,
        };
        self.precision = p;
        Ok(())
    }

    /// The buffer GEMMs and cells read weights from, and whether it holds
    /// f16: the f16 shadow in f16-mixed, else the parameters.
    pub fn weights(&self) -> (&wgpu::Buffer, bool) {
        match &self.half {
            Some(h) => (h, true),
            None => (&self.params, false),
        }
    }

    /// Sets dropout and residual connections between layers (checked).
    pub fn set_links(&mut self, links: Links) -> Result<()> {
        links.validate()?;
        let cell = self.config.cell();
        if links.zoneout_c > 0.0 && !cell.has_c() {
            return Err(Error::Invalid(format!(
                "zoneout of c: the {} has no c state (zone out h instead)",
                cell.module()
            )));
        }
        if links.zones() && self.norm.in_cell() {
            return Err(Error::Invalid(
                "zoneout serves the plain cells, not the normalized ones (--norm layer-cell, \
                 recurrent-batch)"
                    .into(),
            ));
        }
        if let Some(p) = self.config.proj() {
            let what = match (links.zones(), links.weight_drop > 0.0) {
                (true, _) => Some("zoneout"),
                (_, true) => Some("weight-drop"),
                _ => None,
            };
            if let Some(what) = what {
                return Err(Error::Invalid(format!(
                    "an LSTM with projections (proj_size {p}) does not take {what}"
                )));
            }
        }
        self.links = links;
        Ok(())
    }

    /// PyTorch's default initialisation: every parameter U(-1/√H, 1/√H),
    /// from a seeded generator.
    pub fn init_uniform(ctx: &GpuContext, config: LstmConfig, seed: u64) -> Result<Self> {
        Self::init_with_norm(ctx, config, Norm::None, seed)
    }

    /// PyTorch's default initialisation of the LSTM part (see
    /// [`LstmModel::init_uniform`]) and [`Norm::init_value`] for the norm
    /// tensors.
    pub fn init_with_norm(
        ctx: &GpuContext,
        config: LstmConfig,
        norm: Norm,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        let (table, stats_table) = tables(&config, &norm);
        ctx.check_size("parameters", table.total as u64 * 4)?;
        let n = ParamTable::new(config.param_shapes()).total;
        let k = 1.0 / (config.hidden_size as f64).sqrt();
        let mut rng = crate::rng::Rng::new(seed);
        let mut values: Vec<f32> = (0..n).map(|_| rng.uniform(-k, k) as f32).collect();
        for e in table.entries.iter().filter(|e| e.offset >= n) {
            values.extend(std::iter::repeat_n(norm.init_value(&e.name), e.len()));
        }
        let mut stats = Vec::with_capacity(stats_table.total);
        for e in &stats_table.entries {
            stats.extend(std::iter::repeat_n(norm.init_value(&e.name), e.len()));
        }
        Self::from_host(
            ctx,
            HostModel {
                config,
                norm,
                values,
                stats,
                tracked: BTreeMap::new(),
                extra: Vec::new(),
            },
        )
    }

    /// A plain model from `nn.LSTM` state_dict tensors: the configuration is
    /// read from the names and shapes, and every tensor must be used.
    pub fn from_tensors(ctx: &GpuContext, tensors: &[NamedTensor]) -> Result<Self> {
        Self::from_host(
            ctx,
            Self::host_model(tensors, &BTreeMap::new(), None, Cell::Lstm)?,
        )
    }

    /// Checks plain `nn.LSTM` state_dict tensors on the host and returns the
    /// configuration and the flat parameter values.
    pub fn host_values(tensors: &[NamedTensor]) -> Result<(LstmConfig, Vec<f32>)> {
        let m = Self::host_model(tensors, &BTreeMap::new(), None, Cell::Lstm)?;
        Ok((m.config, m.values))
    }

    /// Checks state_dict tensors on the host: a `cell` (`nn.LSTM`,
    /// `nn.GRU`) state_dict plus,
    /// with `norm`, exactly the tensors of that variant (and optional integer
    /// `num_batches_tracked` counters in `ints`). Bad files are rejected
    /// before any GPU work, with the first missing, misshapen, non-finite or
    /// unexpected tensor named.
    pub fn host_model(
        tensors: &[NamedTensor],
        ints: &BTreeMap<String, i64>,
        norm: Option<NormKind>,
        cell: Cell,
    ) -> Result<HostModel> {
        let shapes: BTreeMap<String, Vec<usize>> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        let config = LstmConfig::infer(&shapes, cell)?;
        let norm = match norm {
            Some(k) => Norm::infer(k, &config, &shapes)?,
            None => Norm::None,
        };
        let (table, stats_table) = tables(&config, &norm);
        let describe = format!(
            "{} layer(s), hidden {}, {}{}",
            config.num_layers,
            config.hidden_size,
            if config.bidirectional {
                "bidirectional"
            } else {
                "unidirectional"
            },
            match norm {
                Norm::None => String::new(),
                n => format!(", norm {n:?}"),
            }
        );
        let fill = |t: &ParamTable| -> Result<Vec<f32>> {
            let mut values = vec![0f32; t.total];
            for e in &t.entries {
                let x = tensors.iter().find(|x| x.name == e.name).ok_or_else(|| {
                    Error::tensor(
                        &e.name,
                        format!("missing: expected shape {:?} for {describe}", e.shape),
                    )
                })?;
                if x.shape != e.shape {
                    return Err(Error::tensor(
                        &e.name,
                        format!("shape {:?}, expected {:?}", x.shape, e.shape),
                    ));
                }
                if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
                    return Err(Error::tensor(
                        &e.name,
                        format!("non-finite value {} at flat index {i}", x.data[i]),
                    ));
                }
                values[e.offset..e.offset + e.len()].copy_from_slice(&x.data);
            }
            Ok(values)
        };
        let values = fill(&table)?;
        let stats = fill(&stats_table)?;
        if let Some(t) = tensors
            .iter()
            .find(|t| table.get(&t.name).is_none() && stats_table.get(&t.name).is_none())
        {
            return Err(Error::tensor(
                &t.name,
                format!(
                    "unexpected in a state_dict of {describe}{}",
                    if config.bias { "" } else { ", no bias" }
                ),
            ));
        }
        let mut tracked = BTreeMap::new();
        for (name, &v) in ints {
            let module = name.strip_suffix(".num_batches_tracked");
            let known = module
                .map(|m| stats_table.get(&format!("{m}.running_mean")).is_some())
                .unwrap_or(false);
            if !known {
                return Err(Error::tensor(
                    name,
                    format!("unexpected integer tensor in a state_dict of {describe}"),
                ));
            }
            tracked.insert(name.clone(), v);
        }
        Ok(HostModel {
            config,
            norm,
            values,
            stats,
            tracked,
            extra: Vec::new(),
        })
    }

    /// Checks what a BatchNorm variant needs of a batch in train mode: at
    /// least two values per statistic (as PyTorch), and no more steps than
    /// rows of running statistics.
    pub fn check_batch(&self, b: &Batch<'_>, train: bool) -> Result<()> {
        check_batch(&self.config, &self.norm, b, train)
    }

    fn split(&self, flat: Vec<f32>, prefix: &str) -> Vec<NamedTensor> {
        split_table(&self.table, &flat, prefix)
    }

    /// Running statistics of BatchNorm variants, read back, with their names.
    pub fn stat_tensors(&self, ctx: &GpuContext) -> Result<Vec<NamedTensor>> {
        let flat = ctx.read_f32(&self.stats, 0, self.stats_table.total)?;
        Ok(split_table(&self.stats_table, &flat, ""))
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

    /// Offset of W_hr (`weight_hr_l{l}`) of layer `l`, direction `d`, with
    /// a projection.
    pub fn whr_offset(&self, l: usize, d: usize) -> Option<usize> {
        let name = format!("weight_hr_l{l}{}", dir_suffix(d));
        self.table.get(&name).map(|e| e.offset)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lstm_parameter_names_its_layer() {
        let norms = [
            Norm::None,
            Norm::Layer { last: true },
            Norm::LayerCell,
            Norm::Batch { last: false },
            Norm::StepBatch {
                last: true,
                t_max: 4,
            },
            Norm::RecurrentBatch { t_max: 4 },
        ];
        for norm in norms {
            for (bidirectional, proj_size) in [(false, 0), (true, 0), (true, 3)] {
                let cfg = LstmConfig {
                    input_size: 5,
                    hidden_size: 8,
                    num_layers: 12,
                    bidirectional,
                    bias: true,
                    cell: Default::default(),
                    proj_size: if norm.in_cell() { 0 } else { proj_size },
                };
                let (mut t, _) = tables(&cfg, &norm);
                let lstm = t.entries.len();
                for n in ["embedding.weight", "attention.query", "head.weight"] {
                    t.push(n.into(), vec![2]);
                }
                for e in &t.entries[..lstm] {
                    let l = e.layer().unwrap_or_else(|| panic!("{}: no layer", e.name));
                    assert!(l < 12, "{}: layer {l}", e.name);
                    let k = l.to_string();
                    assert!(
                        e.name.contains(&format!("_l{k}")) || e.name.contains(&format!(".{k}."))
                    );
                }
                assert!(t.entries[lstm..].iter().all(|e| e.layer().is_none()));
                // Layers 1 and 10 (neither is the last) are told apart.
                let of = |l| t.entries.iter().filter(|e| e.layer() == Some(l)).count();
                assert_eq!(of(1), of(10), "{norm:?}");
                assert!(of(1) >= 4);
            }
        }
    }
}
