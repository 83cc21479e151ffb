//! Histograms of a training step, computed on the GPU
//! ([`crate::kernels::histogram`]) and read back with the step's loss:
//! every parameter (after the step's update), every gradient (before
//! clipping and the update, unscaled: what the per-tensor norms measure)
//! and per layer the hidden state h, the cell state c and the activated
//! gates i, f, g, o (a GRU: no c, gates r, z, n) over the step's valid
//! positions (padding left out).
//!
//! Tags: `params/<name>`, `grads/<name>`, `activations/layer_<k>/h` (the
//! layer's output, both directions), and per direction
//! `activations/layer_<k>[_reverse]/{c,gate_i,gate_f,gate_g,gate_o}`
//! (a GRU: `{gate_r,gate_z,gate_n}`).
//!
//! Every model takes them. In f32 c and the gates are sections of the
//! cache (one source per cache buffer); in f16-mixed the gates are the f16
//! values the step cached, read as f16 and widened exactly, and c is in
//! its own f32 buffer (two sources). The LayerNorm and recurrent BatchNorm
//! cells lay out the activated gates and c (the cell state, before the
//! norm inside tanh(LN(c)) or tanh(BN(c))) as the plain cell's first sections, so the
//! same tags measure the same quantities. With projections h is the
//! projected layer output (P wide), c and the gates H wide.

use crate::Result;
use crate::kernels::histogram::{HistPlan, Segment, SegmentHistogram, Source};
use crate::model::norm::Norm;
use crate::schedule::workspace::Workspace;
use crate::train::metrics::Value;
use crate::train::tensorboard::Histogram;

/// The gates' tag names of `cell`, in cache order.
fn gate_tags(cell: crate::kernels::cell::Cell) -> &'static [&'static str] {
    match cell {
        crate::kernels::cell::Cell::Lstm => &["gate_i", "gate_f", "gate_g", "gate_o"],
        crate::kernels::cell::Cell::Gru => &["gate_r", "gate_z", "gate_n"],
        // Its one gate is h itself.
        crate::kernels::cell::Cell::IndRnn { .. } => &[],
        // A cell file names no gates.
        crate::kernels::cell::Cell::Custom(_) => &[],
    }
}

/// Histograms per (layer, direction) of `cell`'s cache: c (cells with
/// c) and its gates.
pub(crate) fn cell_segments(cell: crate::kernels::cell::Cell) -> usize {
    usize::from(cell.has_c()) + gate_tags(cell).len()
}

/// The histogram plan of one step length, with its tags, and which of its
/// source groups read what.
pub(crate) struct StepHistograms {
    pub plan: HistPlan,
    /// One per segment, in output order.
    pub tags: Vec<String>,
    /// Groups to record after the forward (activations).
    pub activations: std::ops::Range<usize>,
    /// Group to record after the backward, before clipping.
    pub grads: usize,
    /// Group to record after the optimizer.
    pub params: usize,
    /// Segments of gradients, to unscale by the step's loss scale.
    pub grad_segments: std::ops::Range<usize>,
}

/// Where one model's tensors live: what [`plan`] histograms.
pub(crate) struct Tensors<'a> {
    pub names: &'a [String],
    /// (offset, len) per tensor, in `names` order.
    pub segs: &'a [(usize, usize)],
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub cfg: &'a crate::model::LstmConfig,
    pub norm: &'a Norm,
}

/// Plans the histograms of a training step over workspace `ws`.
pub(crate) fn plan(
    ctx: &crate::GpuContext,
    k: &crate::kernels::histogram::Histogram,
    ws: &Workspace,
    m: &Tensors<'_>,
    bins: usize,
) -> Result<StepHistograms> {
    let (cfg, h) = (m.cfg, m.cfg.hidden_size);
    let rows = ws.seq * ws.batch;
    let g = cfg.cell().gates();
    let masked = |off: usize, cols: usize, stride: usize| {
        Segment::rows(off, rows, cols, stride).masked(ws.batch)
    };
    let mut tags = Vec::new();
    let mut sources = Vec::new();
    // h: each layer's raw output [T, B, D·P] (P = H without projections).
    let outs = (0..cfg.num_layers)
        .map(|l| {
            tags.push(format!("activations/layer_{l}/h"));
            masked(ws.out_off(l), ws.features, ws.features)
        })
        .collect();
    sources.push(Source {
        buffer: &ws.outs,
        half: false,
        lengths: Some(&ws.lengths),
        segments: outs,
    });
    // c and the gates: per (layer, direction) cache block, per cache
    // buffer (one in all, or one per layer when split). In f32 c and the
    // gates share the cache (one source); in f16-mixed the gates are f16
    // in the cache and c is f32 in its own buffer (two sources).
    for l in 0..cfg.num_layers {
        if l > 0 && !ws.split {
            continue;
        }
        let layers = match ws.split {
            true => l..l + 1,
            false => 0..cfg.num_layers,
        };
        let (mut cs, mut gates) = (Vec::new(), Vec::new());
        let (mut c_tags, mut g_tags) = (Vec::new(), Vec::new());
        for l in layers {
            for d in 0..cfg.dirs() {
                let [base, c_off, _] = ws.cell_offsets(cfg, m.norm, l, d);
                let name = match d {
                    0 => format!("activations/layer_{l}"),
                    _ => format!("activations/layer_{l}_reverse"),
                };
                // A GRU's c section caches W_hn h + b_hn, not a state.
                if cfg.cell().has_c() {
                    c_tags.push(format!("{name}/c"));
                    cs.push(masked(c_off, h, h));
                }
                for (q, gate) in gate_tags(cfg.cell()).iter().enumerate() {
                    g_tags.push(format!("{name}/{gate}"));
                    gates.push(masked(base + q * h, h, g * h));
                }
            }
        }
        tags.extend(c_tags);
        tags.extend(g_tags);
        let source = |buffer, half, segments| Source {
            buffer,
            half,
            lengths: Some(&ws.lengths),
            segments,
        };
        let parts = match ws.half {
            true => vec![
                source(ws.cst(l), false, cs),
                source(ws.cache(l), true, gates),
            ],
            false => vec![source(ws.cache(l), false, [cs, gates].concat())],
        };
        // A cell without c or gates (IndRNN) has nothing cached to measure.
        sources.extend(parts.into_iter().filter(|s| !s.segments.is_empty()));
    }
    let activations = 0..sources.len();
    let flat: Vec<Segment> = m.segs.iter().map(|&(o, n)| Segment::flat(o, n)).collect();
    let first_grad = tags.len();
    tags.extend(m.names.iter().map(|n| format!("grads/{n}")));
    let grad_segments = first_grad..tags.len();
    tags.extend(m.names.iter().map(|n| format!("params/{n}")));
    sources.push(Source {
        buffer: m.grads,
        half: false,
        lengths: None,
        segments: flat.clone(),
    });
    sources.push(Source {
        buffer: m.params,
        half: false,
        lengths: None,
        segments: flat,
    });
    let plan = k.plan(ctx, &sources, bins)?;
    Ok(StepHistograms {
        plan,
        tags,
        grads: activations.end,
        params: activations.end + 1,
        activations,
        grad_segments,
    })
}

impl StepHistograms {
    /// The tagged histograms of the readback `words`; gradients unscaled
    /// by the step's `loss_scale`.
    pub fn decode(
        &self,
        words: &[u32],
        loss_scale: f32,
    ) -> Result<Vec<(String, SegmentHistogram)>> {
        let hs = self.plan.decode(words)?;
        Ok(self
            .tags
            .iter()
            .cloned()
            .zip(hs)
            .enumerate()
            .map(
                |(i, (t, h))| match self.grad_segments.contains(&i) && loss_scale != 1.0 {
                    true => (t, h.scaled(1.0 / loss_scale)),
                    false => (t, h),
                },
            )
            .collect())
    }
}

/// The TensorBoard histogram of `h`: its bins with their right edges; all
/// in one bin at max when min = max.
pub fn to_tensorboard(h: &SegmentHistogram) -> Histogram {
    let (limits, counts) = match h.max > h.min {
        true => (
            h.right_edges(),
            h.counts.iter().map(|&c| c as f64).collect(),
        ),
        false => (vec![h.max as f64], vec![h.finite() as f64]),
    };
    Histogram {
        limits,
        counts,
        min: h.min as f64,
        max: h.max as f64,
        sum: h.sum as f64,
        sum_squares: h.sum_squares as f64,
    }
}

/// The JSONL object of `h`: `{"min", "max", "nan", "inf", "counts"}`
/// (bins of equal width over [min, max]).
pub fn to_json(h: &SegmentHistogram) -> Value {
    Value::Object(vec![
        ("min".into(), Value::Float(h.min as f64)),
        ("max".into(), Value::Float(h.max as f64)),
        ("nan".into(), Value::Int(h.nan as i64)),
        ("inf".into(), Value::Int(h.inf as i64)),
        (
            "counts".into(),
            Value::List(h.counts.iter().map(|&c| Value::Int(c as i64)).collect()),
        ),
    ])
}
