//! Orders and records the dispatches of a forward and a backward pass.
//! Everything (bind groups, uniform blocks) is built once per (T, B, mode);
//! running a pass is recording a prepared list into one compute pass.
//!
//! Forward, per layer: one GEMM per direction for the input projection of
//! all timesteps, then one fused cell dispatch per (direction, step).
//! Backward, per layer from the top: one fused cell dispatch per
//! (direction, step) in reverse, one for the initial-state gradients, then
//! weight gradients as GEMMs over all timesteps, bias (and norm-gain)
//! gradients as column sums, and the gradient for the layer below as a GEMM.
//! Between layers: the between-layer norm, then dropout and the residual add
//! fused into one elementwise dispatch (forward and backward each).
//! An LSTM with projections (`proj_size`) runs [`proj_loop`] for its time
//! loops instead: per step GEMMs around pointwise kernels, see
//! docs/architecture.md, "Projections".

pub mod workspace;

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext};
use crate::kernels::Kernels;
use crate::kernels::cell::Cell;
use crate::kernels::elementwise::DropoutShape;
use crate::kernels::gemm::GemmOp;
use crate::kernels::lstm_cell::{CellBackward, CellForward, CellShape, MAX_LANES, Zone};
use crate::kernels::lstm_cell_ln::{self, NormCellBuffers, NormCellParams};
use crate::kernels::lstm_persistent;
pub use crate::kernels::lstm_persistent::CellPath;
use crate::model::norm::Norm;
use crate::model::{LstmModel, dir_suffix};
use crate::schedule::workspace::Workspace;

/// What a plan computes besides the LSTM itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    /// Train mode (BatchNorm statistics, dropout) or eval.
    pub train: bool,
    /// Backward computes the gradient w.r.t. the input.
    pub input_grad: bool,
    /// Layer 0's pre-gates are written by the caller (a token model's
    /// per-token projection table, gathered): the plan runs no input GEMM
    /// for layer 0 and no dW_ih for it, which the caller computes from the
    /// gate gradients per token (see `train.rs`). Plain cells only.
    pub token_input: bool,
    /// Eval mode: the stream position of step 0, for the per-step
    /// running statistics of `--norm step-batch` and `recurrent-batch`
    /// (step s reads row min(t0 + s, T_max − 1)); 0 in train mode.
    pub t0: usize,
}

/// Prepared dispatches of one shape.
pub struct Plan {
    /// The buffers they use.
    pub ws: Workspace,
    /// Forward pass, in order.
    pub forward: Vec<Dispatch>,
    /// Backward pass, in order.
    pub backward: Vec<Dispatch>,
    /// When gradients become final during `backward`: after its first n
    /// dispatches nothing more writes the ranges (of the flat gradient
    /// buffer) listed with n, one entry per layer in the order the layers
    /// finish (the top first). What no entry lists is final only at the
    /// end. Data-parallel training sums each part over the ranks as soon
    /// as it is final, while the rest of backward runs.
    pub ready: Ready,
    /// Which kernel runs the cell's time loops.
    pub path: CellPath,
    /// The wavefront's skew C, when `path` is the wavefront.
    pub skew: Option<usize>,
    /// f16-mixed: the dispatch refreshing the f16 shadow of the weights,
    /// which must run before the forward (and before anything else that
    /// reads the shadow); [`Plan::encode_forward`] records it first.
    pub refresh: Option<Dispatch>,
}

/// [`Plan::ready`]: (dispatches of backward, ranges of the gradients
/// final after them).
pub type Ready = Vec<(usize, Vec<std::ops::Range<usize>>)>;

/// The gradients of layer `l` that its weight-gradient dispatches make
/// final: every parameter of the layer but weight-drop's raw W_hh
/// (written after the whole backward) and, with token input, layer 0's
/// W_ih (written by the caller).
fn layer_grads(model: &LstmModel, l: usize, modes: Modes) -> Vec<std::ops::Range<usize>> {
    let dropped = model.links.weight_drop > 0.0;
    let entries = model.table.entries.iter();
    entries
        .filter(|e| e.layer() == Some(l))
        .filter(|e| !(dropped && e.name.starts_with("weight_hh_l")))
        .filter(|e| !(l == 0 && modes.token_input && e.name.starts_with("weight_ih_l")))
        .map(|e| e.range())
        .collect()
}

fn shape(model: &LstmModel, ws: &Workspace, l: usize, d: usize) -> CellShape {
    let cfg = &model.config;
    let h = cfg.hidden_size;
    let (seq, batch) = (ws.seq, ws.batch);
    // pre and dg regions: per direction, or per layer in a wavefront.
    let region = if ws.per_layer { l } else { d };
    let [cache_off, c_off, _] = ws.cell_offsets(cfg, &model.norm, l, d);
    CellShape {
        hidden: h,
        batch,
        seq,
        reverse: d == 1,
        out_stride: cfg.out_width(),
        // The layer's region of the shared output (and dy) buffer.
        out_col: ws.out_off(l) + d * h,
        pre_off: ws.pre_off(cfg, region),
        whh_off: model.cell_offsets(l, d).1,
        cache_off,
        c_off,
        dg_off: ws.dg_off(cfg, &model.norm, region),
        dx_off: ws.dx_off(cfg, &model.norm, region),
        bhh_off: model.cell_offsets(l, d).3.filter(|_| cfg.cell().own_bhh()),
        dc_off: ws.dc_off(cfg, &model.norm, region),
        state_off: (l * cfg.dirs() + d) * batch * h,
        state_stride: Workspace::state_len(cfg, batch),
        zone: zone(model, ws, l * cfg.dirs() + d, region),
    }
}

/// Zoneout of (layer, direction) `cell`, whose gradients are in `region`.
fn zone(model: &LstmModel, ws: &Workspace, cell: usize, region: usize) -> Zone {
    let (links, cfg) = (&model.links, &model.config);
    if !links.zones() {
        return Zone::default();
    }
    let [cu_off, dh_off, dc_off] = ws.zone_offsets(cfg, cell, region);
    Zone {
        h: links.zoneout_h,
        c: links.zoneout_c,
        train: ws.train,
        h_only: !cfg.cell().has_c(),
        cell,
        streams: crate::model::Links::zoneout_streams(),
        cu_off,
        dh_off,
        dc_off,
    }
}

/// Where the recurrent cells read W_hh (and a GRU's b_hh): the
/// weight-dropped copy when the pass drops weights, else the weights.
fn recurrent_weights<'a>(model: &'a LstmModel, ws: &'a Workspace) -> &'a wgpu::Buffer {
    ws.dropped.as_ref().unwrap_or(model.weights().0)
}

/// Weight-drop of every W_hh (train mode): forward, each (layer,
/// direction)'s W_hh ⊙ m / (1 − p) into the dropped copy (and a GRU's b_hh
/// copied beside it); backward, the gradient of the raw W_hh: the
/// dropped one's (from the weight-gradient GEMM) ⊙ m / (1 − p), in place.
fn weight_drop(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    step: &wgpu::Buffer,
    backward: bool,
) -> Result<Vec<Dispatch>> {
    let Some(dropped) = &ws.dropped else {
        return Ok(Vec::new());
    };
    let cfg = &model.config;
    let e = &k.elementwise()?;
    let mut out = Vec::new();
    for l in 0..cfg.num_layers {
        for d in 0..cfg.dirs() {
            let (_, whh, _, bhh) = model.cell_offsets(l, d);
            let n: usize = cfg.cell().whh_shape(cfg.hidden_size).iter().product();
            let s = DropoutShape {
                n,
                p: model.links.weight_drop,
                stream: crate::model::Links::weight_drop_stream(l * cfg.dirs() + d),
                in_off: whh,
                out_off: whh,
                ..Default::default()
            };
            if backward {
                out.extend(e.dropout_backward(ctx, &s, step, &model.grads, &model.grads)?);
                continue;
            }
            out.extend(e.dropout_forward(ctx, &s, step, &model.params, dropped)?);
            if let Some(b) = bhh.filter(|_| cfg.cell().own_bhh()) {
                let gh = cfg.cell().gates() * cfg.hidden_size;
                out.extend(e.accumulate(ctx, gh, (&model.params, b), (dropped, b), false)?);
            }
        }
    }
    Ok(out)
}

/// The plain cell's forward buffers of layer `l`: shared by all layers
/// unless the workspace splits its cache (offsets in the shapes select a
/// layer's regions).
fn cell_forward<'a>(
    model: &'a LstmModel,
    ws: &'a Workspace,
    l: usize,
    rng: &'a wgpu::Buffer,
) -> CellForward<'a> {
    CellForward {
        pre: &ws.pre,
        params: recurrent_weights(model, ws),
        state_in: &ws.state_in,
        lengths: &ws.lengths,
        out: &ws.outs,
        cache: ws.cache(l),
        state_out: &ws.state_out,
        cst: ws.cst(l),
        rng,
        zst: &ws.zst,
    }
}

/// The plain cell's backward buffers of layer `l`, likewise.
fn cell_backward<'a>(
    model: &'a LstmModel,
    ws: &'a Workspace,
    l: usize,
    rng: &'a wgpu::Buffer,
) -> CellBackward<'a> {
    CellBackward {
        params: recurrent_weights(model, ws),
        state_in: &ws.state_in,
        lengths: &ws.lengths,
        cache: ws.cache(l),
        dy: &ws.dy,
        gstate_in: &ws.gstate_in,
        dg: &ws.dg,
        gstate_out: &ws.gstate_out,
        cst: ws.cst(l),
        dcs: ws.dcs(),
        rng,
        zst: &ws.zst,
    }
}

/// Offsets of the normalized cell's tensors of layer `l`, direction `d`.
fn norm_cell_params(
    model: &LstmModel,
    ws: &Workspace,
    l: usize,
    d: usize,
    train: bool,
) -> NormCellParams {
    let s = dir_suffix(d);
    let p = |n: String| model.table.get(&n).map(|e| e.offset).unwrap_or(0);
    let st = |n: String| model.stats_table.get(&n).map(|e| e.offset).unwrap_or(0);
    let (_, _, bih, bhh) = model.cell_offsets(l, d);
    let (m, t_max) = match model.norm {
        Norm::RecurrentBatch { t_max } => ("bn", t_max),
        _ => ("ln", 1),
    };
    let gain_shift = |part: &str| {
        (
            p(format!("{m}_{part}_l{l}{s}.weight")),
            p(format!("{m}_{part}_l{l}{s}.bias")),
        )
    };
    let running = |part: &str| {
        (
            st(format!("{m}_{part}_l{l}{s}.running_mean")),
            st(format!("{m}_{part}_l{l}{s}.running_var")),
        )
    };
    NormCellParams {
        bias: bih.zip(bhh),
        ih: gain_shift("ih"),
        hh: gain_shift("hh"),
        c: gain_shift("c"),
        train,
        t_max,
        t0: ws.t0,
        running: [running("ih"), running("hh"), running("c")],
    }
}

/// The between-layer norm of layer `l`'s output over steps [t0, t1):
/// forward (outs → normed) or backward (in place on layer l's region of
/// `ws.dy`). A LayerNorm is per position, so it may run chunk by chunk
/// (the wavefront); its weight gradients are then summed chunk after chunk
/// from the last (which overwrites). BatchNorm needs all steps at once.
#[allow(clippy::too_many_arguments)]
fn between_norm(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    l: usize,
    train: bool,
    backward: bool,
    (t0, t1): (usize, usize),
) -> Result<Vec<Dispatch>> {
    let cfg = &model.config;
    let Some(normed) = &ws.normed[l] else {
        return Ok(Vec::new());
    };
    let Some((prefix, _)) = model.norm.between() else {
        return Ok(Vec::new());
    };
    let site = BetweenSite {
        normed,
        prefix,
        l,
        features: cfg.out_width(),
        stats_off: l * Workspace::norm_stats_len(cfg, &model.norm, ws.seq, ws.batch),
        off: ws.out_off(l),
    };
    if let Norm::Layer { .. } = model.norm {
        return between_layer_norm(ctx, k, model, ws, &site, backward, (t0, t1));
    }
    if (t0, t1) != (0, ws.seq) {
        return Err(crate::Error::Invalid(
            "a BatchNorm between layers runs over all steps at once".into(),
        ));
    }
    between_batch_norm(ctx, k, model, ws, &site, train, backward)
}

/// Where the between-layer norm after layer `l` reads and writes: its
/// output buffer, its tensors' name prefix, the width of a row, and the
/// offsets of its statistics and of layer l's rows in `outs` and `dy`.
struct BetweenSite<'a> {
    normed: &'a wgpu::Buffer,
    prefix: &'a str,
    l: usize,
    features: usize,
    stats_off: usize,
    off: usize,
}

impl BetweenSite<'_> {
    /// The offset of the norm's parameter `name` in the parameter table.
    fn param(&self, model: &LstmModel, name: &str) -> usize {
        let full = format!("{}.{}.{name}", self.prefix, self.l);
        model.table.offset(&full)
    }
}

/// [`between_norm`]'s LayerNorm, over steps [t0, t1).
fn between_layer_norm(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    s: &BetweenSite,
    backward: bool,
    (t0, t1): (usize, usize),
) -> Result<Vec<Dispatch>> {
    use crate::kernels::layer_norm::{LnBackward, LnForward, LnShape};
    let (rows, features, off) = (t0 * ws.batch, s.features, s.off);
    let sh = LnShape {
        seq: t1 - t0,
        t0,
        batch: ws.batch,
        features,
        x_off: off + rows * features,
        y_off: rows * features,
        dy_off: off + rows * features,
        dx_off: off + rows * features,
        stats_off: s.stats_off + 2 * rows,
        w_off: s.param(model, "weight"),
        b_off: s.param(model, "bias"),
        dw_off: s.param(model, "weight"),
        db_off: s.param(model, "bias"),
        accumulate: t1 < ws.seq,
    };
    match backward {
        false => k.layer_norm()?.forward(
            ctx,
            &sh,
            &LnForward {
                params: &model.params,
                lengths: &ws.lengths,
                x: &ws.outs,
                y: s.normed,
                stats: &ws.norm_stats,
            },
        ),
        true => k.layer_norm()?.backward(
            ctx,
            &sh,
            &LnBackward {
                params: &model.params,
                lengths: &ws.lengths,
                x: &ws.outs,
                stats: &ws.norm_stats,
                dy: &ws.dy,
                dx: &ws.dy,
                grads: &model.grads,
            },
        ),
    }
}

/// [`between_norm`]'s BatchNorm (per position or per step), over all steps.
fn between_batch_norm(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    s: &BetweenSite,
    train: bool,
    backward: bool,
) -> Result<Vec<Dispatch>> {
    use crate::kernels::batch_norm::{BnBackward, BnForward, BnShape};
    let st = |n: &str| {
        let full = format!("{}.{}.{n}", s.prefix, s.l);
        model.stats_table.offset(&full)
    };
    let (per_step, run_rows) = match model.norm {
        Norm::StepBatch { t_max, .. } => (true, t_max),
        _ => (false, 1),
    };
    let sh = BnShape {
        seq: ws.seq,
        batch: ws.batch,
        features: s.features,
        per_step,
        train,
        run_rows,
        t0: ws.t0,
        x_off: s.off,
        dy_off: s.off,
        dx_off: s.off,
        stats_off: s.stats_off,
        w_off: s.param(model, "weight"),
        b_off: s.param(model, "bias"),
        dw_off: s.param(model, "weight"),
        db_off: s.param(model, "bias"),
        rm_off: st("running_mean"),
        rv_off: st("running_var"),
        ..Default::default()
    };
    match backward {
        false => k.batch_norm()?.forward(
            ctx,
            &sh,
            &BnForward {
                params: &model.params,
                lengths: &ws.lengths,
                x: &ws.outs,
                y: s.normed,
                stats: &ws.norm_stats,
                running: &model.stats,
            },
        ),
        true => k.batch_norm()?.backward(
            ctx,
            &sh,
            &BnBackward {
                params: &model.params,
                lengths: &ws.lengths,
                x: &ws.outs,
                stats: &ws.norm_stats,
                dy: &ws.dy,
                dx: &ws.dy,
                grads: &model.grads,
            },
        ),
    }
}

/// Dropout and the residual add after layer `l`, over steps [t0, t1):
/// forward (a_l, y_l → y_{l+1} in `ws.linked[l]`) or backward (in place on
/// layer l's region of `ws.dy`, the gradient of y_{l+1}, with the skip
/// path's copy of it written to the gradient of layer l's input, onto which
/// the input-gradient GEMM then accumulates). One dispatch, or none. A
/// residual add alone may run chunk by chunk (the wavefront); dropout's
/// masks are drawn over all steps at once.
#[allow(clippy::too_many_arguments)]
fn links<'w>(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &'w Workspace,
    l: usize,
    train: bool,
    step: &wgpu::Buffer,
    backward: bool,
    (t0, t1): (usize, usize),
) -> Result<Vec<Dispatch>> {
    let Some(y) = &ws.linked[l] else {
        return Ok(Vec::new());
    };
    let cfg = &model.config;
    let lk = &model.links;
    let (drops, adds) = (lk.drops(cfg, l, train), lk.adds(l));
    if drops && (t0, t1) != (0, ws.seq) {
        return Err(crate::Error::Invalid(
            "dropout between layers runs over all steps at once".into(),
        ));
    }
    let width = cfg.out_width();
    let n = (t1 - t0) * ws.batch * width;
    // Element offset of step t0 in a [T, B, D·H] tensor.
    let at = t0 * ws.batch * width;
    let shift = |v: (&'w wgpu::Buffer, usize)| (v.0, v.1 + at);
    let mut s = DropoutShape {
        n,
        p: lk.dropout,
        stream: l as u32,
        ..Default::default()
    };
    let e = &k.elementwise()?;
    if !backward {
        let a = match &ws.normed[l] {
            Some(b) => (b, 0),
            None => (&ws.outs, ws.out_off(l)),
        };
        s.in_off = a.1;
        return if !drops {
            e.add(
                ctx,
                n,
                shift(a),
                shift(ws.layer_output(l - 1)),
                shift((y, 0)),
            )
        } else if adds {
            e.dropout_add(ctx, &s, step, a.0, ws.layer_output(l - 1), y)
        } else {
            e.dropout_forward(ctx, &s, step, a.0, y)
        };
    }
    let (dy, off) = (&ws.dy, ws.out_off(l));
    let skip = Plan::grad_of_input(ws, l);
    s.in_off = off;
    s.out_off = off;
    if !drops {
        e.accumulate(ctx, n, shift((dy, off)), shift(skip), false)
    } else if adds {
        e.dropout_split(ctx, &s, step, dy, skip, dy)
    } else {
        e.dropout_backward(ctx, &s, step, dy, dy)
    }
}

/// What runs after layer `l` (in `train` mode) over steps [t0, t1): the
/// between-layer norm, then dropout and the residual add; backward, the
/// same in reverse order.
#[allow(clippy::too_many_arguments)]
fn between_layers(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    (l, train): (usize, bool),
    step: &wgpu::Buffer,
    backward: bool,
    range: (usize, usize),
) -> Result<Vec<Dispatch>> {
    let n = between_norm(ctx, k, model, ws, l, train, backward, range)?;
    let lk = links(ctx, k, model, ws, l, train, step, backward, range)?;
    Ok(match backward {
        false => [n, lk].concat(),
        true => [lk, n].concat(),
    })
}

/// Refuses, by name, what the projected LSTM (`proj_size`) cannot take:
/// it runs per step in f32 ([`proj_loop`]), with no norm, zoneout or
/// weight-drop, and its recurrent products are GEMMs (the GEMM's tuning
/// applies to them, the tiled cell's does not).
fn check_proj(model: &LstmModel, k: &Kernels) -> Result<()> {
    let Some(p) = model.config.proj() else {
        return Ok(());
    };
    let t = k.tuning();
    let why = if model.precision.is_half() {
        "f16-mixed precision (it runs in f32)"
    } else if !matches!(model.norm, Norm::None) {
        "a norm variant"
    } else if model.links.zones() {
        "zoneout"
    } else if model.links.weight_drop > 0.0 {
        "weight-drop"
    } else if t.cell_path == Some(CellPath::Persistent) {
        "the persistent path (it runs per step)"
    } else if t.cell_path == Some(CellPath::Wavefront) {
        "the wavefront path (it runs per step)"
    } else if t.cell == Some(crate::kernels::lstm_cell::CellVariant::Tiled) || t.cell_tile.is_some()
    {
        "the tiled cell (its recurrent products are GEMMs, which the GEMM's tuning chooses)"
    } else {
        return Ok(());
    };
    Err(crate::Error::Invalid(format!(
        "an LSTM with projections (proj_size {p}) does not take {why}"
    )))
}

/// Layer `l`, direction `d`'s time loop of the projected LSTM.
fn proj_shape(
    model: &LstmModel,
    ws: &Workspace,
    l: usize,
    d: usize,
) -> crate::kernels::lstm_proj::ProjShape {
    let cfg = &model.config;
    let (h, p, batch) = (cfg.hidden_size, cfg.state_size(), ws.batch);
    let [cache_off, c_off, hp_off] = ws.cell_offsets(cfg, &model.norm, l, d);
    let [m_off, r_off, dm_off, hst_off, dhs_off] = ws.proj_offsets(cfg, l, d);
    let cell = l * cfg.dirs() + d;
    crate::kernels::lstm_proj::ProjShape {
        hidden: h,
        proj: p,
        batch,
        seq: ws.seq,
        reverse: d == 1,
        pre_off: ws.pre_off(cfg, d),
        cache_off,
        c_off,
        hp_off,
        dg_off: ws.dg_off(cfg, &model.norm, d),
        dc_off: ws.dc_off(cfg, &model.norm, d),
        state_off: cell * batch * h,
        state_stride: Workspace::state_len(cfg, batch),
        out_stride: cfg.out_width(),
        out_col: ws.out_off(l) + d * p,
        r_off,
        m_off,
        dm_off,
        hst_off,
        dhs_off,
    }
}

/// The projected LSTM's time loop of layer `l` (both directions), forward
/// or backward. Per step and direction, forward: R = h_{s−1} W_hhᵀ (GEMM),
/// the pointwise step (gates, c, m = o ⊙ tanh c), h_s = m W_hrᵀ (GEMM);
/// then the layer output, h_n and the h_prev section from the step-major
/// h. Backward: dh from the output's gradient and grad h_n; per step
/// dh_s += dgates_{s+1} W_hh (GEMM), dm = dh_s W_hr (GEMM), the pointwise
/// step (gate gradients, dc; grad c0 at step 0); then grad h0 =
/// dgates_0 W_hh (GEMM). The weight gradients are [`Plan::weight_grads`]'.
fn proj_loop(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    (l, backward): (usize, bool),
    rng: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    use crate::kernels::lstm_proj::ProjBuffers;
    let cfg = &model.config;
    let Some(sc) = &ws.proj else {
        return Err(crate::Error::Invalid(
            "a projected LSTM's plan without its scratch".into(),
        ));
    };
    let (h, p, b, seq) = (cfg.hidden_size, cfg.state_size(), ws.batch, ws.seq);
    let gh = cfg.cell().gates() * h;
    let (weights, _) = model.weights();
    let (fwd, bwd) = (
        cell_forward(model, ws, l, rng),
        cell_backward(model, ws, l, rng),
    );
    let bufs = ProjBuffers {
        fwd: &fwd,
        bwd: &bwd,
        work: &sc.work,
        seqs: &sc.seqs,
    };
    let kp = k.proj()?;
    let gemm = |a: (&wgpu::Buffer, usize, usize),
                w: (usize, usize, bool),
                c: (&wgpu::Buffer, usize, usize),
                (m, n, kk): (usize, usize, usize),
                accumulate: bool| {
        k.gemm().dispatch(
            ctx,
            &GemmOp {
                m,
                n,
                k: kk,
                trans_a: false,
                trans_b: w.2,
                a,
                b: (weights, w.0, w.1),
                c,
                bias: None,
                alpha: 1.0,
                accumulate,
            },
        )
    };
    let dirs: Vec<_> = (0..cfg.dirs())
        .map(|d| {
            let whr = model.whr_offset(l, d).unwrap_or(0);
            (proj_shape(model, ws, l, d), model.cell_offsets(l, d).1, whr)
        })
        .collect();
    let mut out = Vec::new();
    if !backward {
        for s in 0..seq {
            for (sh, whh, whr) in &dirs {
                let hprev = match s {
                    // h0: the first P columns of its rows.
                    0 => (&ws.state_in, sh.state_off, h),
                    _ => (&sc.seqs, sh.hst_off + (s - 1) * b * p, p),
                };
                let r = (&sc.work, sh.r_off, gh);
                out.extend(gemm(hprev, (*whh, p, true), r, (b, gh, p), false)?);
                out.push(kp.step(ctx, (sh, s), &bufs, false)?);
                let m = (&sc.work, sh.m_off + s * b * h, h);
                let hs = (&sc.seqs, sh.hst_off + s * b * p, p);
                out.extend(gemm(m, (*whr, h, true), hs, (b, p, h), false)?);
            }
        }
        for (sh, ..) in &dirs {
            out.push(kp.scatter(ctx, sh, &bufs)?);
        }
        return Ok(out);
    }
    for (sh, ..) in &dirs {
        out.push(kp.gather(ctx, sh, &bufs)?);
    }
    for s in (0..seq).rev() {
        for (sh, whh, whr) in &dirs {
            let dgs = (&sc.work, sh.r_off, gh);
            let dh = (&sc.seqs, sh.dhs_off + s * b * p, p);
            if s + 1 < seq {
                out.extend(gemm(dgs, (*whh, p, false), dh, (b, p, gh), true)?);
            }
            let dm = (&sc.work, sh.dm_off, h);
            out.extend(gemm(dh, (*whr, h, false), dm, (b, h, p), false)?);
            out.push(kp.step(ctx, (sh, s), &bufs, true)?);
        }
    }
    for (sh, whh, _) in &dirs {
        let dgs = (&sc.work, sh.r_off, gh);
        let dh0 = (&ws.gstate_out, sh.state_off, h);
        out.extend(gemm(dgs, (*whh, p, false), dh0, (b, p, gh), false)?);
    }
    Ok(out)
}

/// Why the wavefront cannot run `model` in this mode, if it cannot: it
/// needs a unidirectional plain cell of 2 to [`MAX_LANES`] layers with at
/// most a LayerNorm and residual adds between them (a bidirectional layer
/// l + 1 needs all of layer l before its first reverse step; BatchNorm's
/// statistics and dropout's masks span whole sequences, while a LayerNorm
/// and an add are per position and run chunk by chunk).
pub fn wavefront_obstacle(model: &LstmModel, train: bool) -> Option<&'static str> {
    let cfg = &model.config;
    let layers = cfg.num_layers;
    if layers < 2 {
        return Some("it needs at least 2 layers");
    }
    if layers > MAX_LANES {
        return Some("it runs at most 8 layers");
    }
    if cfg.bidirectional {
        return Some("bidirectional layers need the whole layer below first");
    }
    if model.norm.in_cell() {
        return Some("the normalized cells have their own kernels");
    }
    if model.norm.between().is_some() && !matches!(model.norm, Norm::Layer { .. }) {
        return Some("BatchNorm between layers runs over whole sequences");
    }
    let lk = &model.links;
    if (0..layers).any(|l| lk.drops(cfg, l, train)) {
        return Some("dropout between layers runs over whole sequences");
    }
    None
}

/// The wavefront's skew for `seq` steps of `batch` rows: `forced`, else
/// ⌈√T⌉ on CPU adapters (it minimises the C + ⌈T/C⌉ dispatches the
/// wavefront adds per layer, which is what costs there), and on GPUs enough
/// steps that a chunk's GEMMs have [`GPU_CHUNK_ROWS`] rows (C·B), between
/// ⌈√T⌉ and ⌈T/2⌉: a small GEMM leaves a GPU mostly idle for a dispatch's
/// fixed cost (measured on an H200, `char`: 3.70 ms per training step at
/// C = 8, 3.30 at C = 32); at most T.
fn wave_skew(ctx: &GpuContext, forced: Option<usize>, seq: usize, batch: usize) -> usize {
    let cpu = crate::gpu::cpu_adapter(&ctx.info);
    forced
        .unwrap_or_else(|| default_skew(cpu, seq, batch))
        .clamp(1, seq.max(1))
}

fn default_skew(cpu: bool, seq: usize, batch: usize) -> usize {
    let root = (1..=seq).find(|c| c * c >= seq).unwrap_or(1);
    match cpu {
        true => root,
        false => GPU_CHUNK_ROWS
            .div_ceil(batch.max(1))
            .clamp(root, root.max(seq.div_ceil(2))),
    }
}

/// Rows (steps x batch) a wavefront chunk aims for on GPUs.
pub const GPU_CHUNK_ROWS: usize = 1024;

impl Plan {
    /// The buffer holding the final output [T, B, D·H] (at offset 0).
    pub fn output(&self) -> &wgpu::Buffer {
        self.ws.layer_output(self.ws.layers - 1).0
    }

    /// The buffer receiving the gradient of the final output (at offset 0)
    /// before backward.
    pub fn grad_output(&self) -> &wgpu::Buffer {
        &self.ws.dy
    }

    /// Elements of the final output (and of its gradient).
    pub fn output_len(&self) -> usize {
        self.ws.seq * self.ws.batch * self.ws.features
    }

    /// Offsets of layer `l`, direction `d`'s pre-gates [T, B, G·H] in
    /// `ws.pre` (the input part) and of the gate gradients W_ih's gradient
    /// is made of [T, B, G·H] in `ws.dg` (the gate gradients, or the dx
    /// section of cells that [`split_dg`]; valid after backward until the
    /// next pass).
    ///
    /// [`split_dg`]: crate::kernels::cell::Cell::split_dg
    pub fn gate_offsets(&self, model: &LstmModel, l: usize, d: usize) -> (usize, usize) {
        let s = shape(model, &self.ws, l, d);
        (s.pre_off, s.dx_off)
    }

    /// The buffer holding the gradient of the input [T, B, I] after backward.
    pub fn grad_input(&self) -> &wgpu::Buffer {
        &self.ws.dx
    }

    /// Builds the workspace and every dispatch for (seq, batch) in `modes`
    /// (train or eval mode matters for BatchNorm variants and dropout).
    /// Dropout dispatches read their [`DropoutStep`] words from
    /// `dropout_step` at offset 0.
    ///
    /// [`DropoutStep`]: crate::kernels::elementwise::DropoutStep
    pub fn new(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        seq: usize,
        batch: usize,
        modes: Modes,
        dropout_step: &wgpu::Buffer,
    ) -> Result<Self> {
        ctx.scoped(|| Self::build(ctx, k, model, seq, batch, modes, dropout_step))
    }

    /// The path for this shape: persistent where [`CellPath`]'s rule picks
    /// it (cells without normalization inside), else the wavefront where it can run, else
    /// per-step; a forced path that cannot run is an error naming why.
    fn choose(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        seq: usize,
        batch: usize,
        train: bool,
    ) -> Result<(
        CellPath,
        Option<crate::kernels::lstm_persistent::PersistentLayout>,
    )> {
        let cfg = &model.config;
        let (h, dirs) = (cfg.hidden_size, cfg.dirs());
        let half = model.precision.is_half();
        let obstacle = wavefront_obstacle(model, train)
            .map(String::from)
            .or_else(|| Workspace::wavefront_obstacle(ctx, cfg, &model.norm, (seq, batch), half));
        if half && k.tuning().cell_path == Some(CellPath::Persistent) {
            return Err(crate::Error::Invalid(
                "the persistent path runs in f32 only (f16-mixed uses the wavefront or per-step \
                 cells)"
                    .into(),
            ));
        }
        let cell = cfg.cell();
        if model.norm.in_cell() && k.tuning().cell_path == Some(CellPath::Persistent) {
            return Err(crate::Error::Invalid(
                "the persistent path runs cells without normalization inside (a LayerNorm or \
                 BatchNorm cell runs per step)"
                    .into(),
            ));
        }
        if model.links.zones() && k.tuning().cell_path == Some(CellPath::Persistent) {
            return Err(crate::Error::Invalid(
                "the persistent path runs without zoneout (zoneout runs per step or as a \
                 wavefront)"
                    .into(),
            ));
        }
        if k.tuning().cell_path == Some(CellPath::Wavefront) {
            return match obstacle {
                Some(why) => Err(crate::Error::Invalid(format!(
                    "the wavefront path cannot run this model: {why}"
                ))),
                None => Ok((CellPath::Wavefront, None)),
            };
        }
        // The persistent time loop serves every plain cell (LSTM, GRU,
        // IndRNN, cell files; between-layer norms included); normalized
        // cells keep one dispatch per step. Zoneout lives in the per-step
        // kernels only.
        if cfg.proj().is_some() {
            // Checked by `check_proj`: nothing forces another path.
            return Ok((CellPath::PerStep, None));
        }
        if !model.norm.in_cell()
            && !half
            && !model.links.zones()
            && let Some(lay) = persistent_layout(ctx, k, cell, h, batch, dirs, seq)?
        {
            return Ok((CellPath::Persistent, Some(lay)));
        }
        Ok(match (k.tuning().cell_path, obstacle) {
            (None, None) => (CellPath::Wavefront, None),
            _ => (CellPath::PerStep, None),
        })
    }

    fn build(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        seq: usize,
        batch: usize,
        modes: Modes,
        dropout_step: &wgpu::Buffer,
    ) -> Result<Self> {
        let (train, input_grad) = (modes.train, modes.input_grad);
        if modes.token_input && model.norm.in_cell() {
            return Err(crate::Error::Invalid(
                "token input projections serve plain cells only".into(),
            ));
        }
        check_proj(model, k)?;
        let (path, persistent) = Self::choose(ctx, k, model, seq, batch, train)?;
        let wave = path == CellPath::Wavefront;
        let cfg = &model.config;
        let half = model.precision.is_half();
        if half && model.norm.in_cell() {
            return Err(crate::Error::Invalid(
                "f16-mixed precision serves plain cells; the normalized cells run in f32".into(),
            ));
        }
        if model.links.weight_drop > 0.0 && (half || model.norm.in_cell()) {
            return Err(crate::Error::Invalid(
                "weight-drop serves plain cells in f32 (not f16-mixed, not the normalized cells)"
                    .into(),
            ));
        }
        if model.links.zones() {
            // The masks' element index ((l·D + d)·T + t)·B·H + b·H + j.
            let cells = cfg.num_layers * cfg.dirs();
            crate::kernels::u32_of(
                "zoneout mask elements",
                cells * seq * batch * cfg.hidden_size,
            )?;
        }
        let mut ws = Workspace::new(
            ctx,
            cfg,
            &model.norm,
            &model.links,
            train,
            seq,
            batch,
            wave,
            half,
        )?;
        ws.t0 = if train { 0 } else { modes.t0 };
        let refresh = match &model.half {
            Some(h) => Some(
                k.cast()?
                    .to_half(ctx, model.table.total, &model.params, h)?,
            ),
            None => None,
        };
        // Weight-drop's dropped W_hh before the forward; the raw W_hh's
        // gradient after the backward.
        let drop_fwd = weight_drop(ctx, k, model, &ws, dropout_step, false)?;
        let drop_bwd = weight_drop(ctx, k, model, &ws, dropout_step, true)?;
        let mut ready = Vec::new();
        if wave {
            let skew = wave_skew(ctx, k.tuning().wave_skew, seq, batch);
            let (forward, mut backward) =
                Self::wavefront(ctx, k, model, &ws, skew, modes, dropout_step, &mut ready)?;
            if input_grad {
                backward.extend(Self::input_grad_gemm(ctx, k, model, &ws, 0, (0, seq))?);
            }
            let forward = [drop_fwd, forward].concat();
            backward.extend(drop_bwd);
            return Ok(Self {
                ws,
                forward,
                backward,
                ready,
                path,
                skew: Some(skew),
                refresh,
            });
        }
        let lay = persistent.as_ref();
        let (forward, mut backward) =
            Self::layer_by_layer(ctx, k, model, &ws, modes, dropout_step, lay, &mut ready)?;
        let forward = [drop_fwd, forward].concat();
        backward.extend(drop_bwd);
        Ok(Self {
            ws,
            forward,
            backward,
            ready,
            path,
            skew: None,
            refresh,
        })
    }

    /// The input of layer `l` and its row width.
    fn layer_input<'a>(
        model: &LstmModel,
        ws: &'a Workspace,
        l: usize,
    ) -> ((&'a wgpu::Buffer, usize), usize) {
        let cfg = &model.config;
        if l == 0 {
            ((&ws.x, 0), cfg.input_size)
        } else {
            (ws.layer_output(l - 1), cfg.out_width())
        }
    }

    /// The gradient of layer `l`'s input: layer l − 1's region of `dy`, or
    /// `dx`.
    fn grad_of_input(ws: &Workspace, l: usize) -> (&wgpu::Buffer, usize) {
        if l == 0 {
            (&ws.dx, 0)
        } else {
            (&ws.dy, ws.out_off(l - 1))
        }
    }

    /// Input projection of layer `l`, direction `d` for steps [t0, t1)
    /// into the pre-gates: one GEMM with both biases (normalized cells add
    /// them after their norms).
    fn input_gemm(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        ws: &Workspace,
        (l, d): (usize, usize),
        (t0, t1): (usize, usize),
    ) -> Result<Vec<Dispatch>> {
        let h = model.config.hidden_size;
        let gh = model.config.cell().gates() * h;
        let b = ws.batch;
        let ((input, in_off), ld) = Self::layer_input(model, ws, l);
        let (wih, _, bih, bhh) = model.cell_offsets(l, d);
        let (weights, half) = model.weights();
        let sh = shape(model, ws, l, d);
        let op = GemmOp {
            m: (t1 - t0) * b,
            n: gh,
            k: ld,
            trans_a: false,
            trans_b: true,
            a: (input, in_off + t0 * b * ld, ld),
            b: (weights, wih, ld),
            c: (&ws.pre, sh.pre_off + t0 * b * gh, gh),
            // A cell that adds b_hh itself gets b_ih alone here.
            bias: (!model.norm.in_cell()).then_some((
                &model.params,
                bih,
                bhh.filter(|_| !model.config.cell().own_bhh()),
            )),
            alpha: 1.0,
            accumulate: false,
        };
        k.gemm().dispatch_as(ctx, &op, false, half)
    }

    /// Gradient w.r.t. layer `l`'s input for steps [t0, t1): Σ_d dP_d ·
    /// W_ih_d, accumulated onto the skip path's gradient when a residual
    /// add follows.
    fn input_grad_gemm(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        ws: &Workspace,
        l: usize,
        (t0, t1): (usize, usize),
    ) -> Result<Vec<Dispatch>> {
        let cfg = &model.config;
        let h = cfg.hidden_size;
        let gh = cfg.cell().gates() * h;
        let b = ws.batch;
        let (_, ld) = Self::layer_input(model, ws, l);
        let (dx, dx_off) = Self::grad_of_input(ws, l);
        let [_, sec_dp, ..] = lstm_cell_ln::dg_sections(h, ws.seq, b);
        let (weights, half) = model.weights();
        let mut out = Vec::new();
        for d in 0..cfg.dirs() {
            let (wih, ..) = model.cell_offsets(l, d);
            let dp = match model.norm.in_cell() {
                true => shape(model, ws, l, d).dg_off + sec_dp,
                false => shape(model, ws, l, d).dx_off,
            };
            let op = GemmOp {
                m: (t1 - t0) * b,
                n: ld,
                k: gh,
                trans_a: false,
                trans_b: false,
                a: (&ws.dg, dp + t0 * b * gh, gh),
                b: (weights, wih, ld),
                c: (dx, dx_off + t0 * b * ld, ld),
                bias: None,
                alpha: 1.0,
                accumulate: d > 0 || model.links.adds(l),
            };
            // f16-mixed: f16 gate gradients times the f16 shadow of W_ih.
            out.extend(k.gemm().dispatch_as(ctx, &op, ws.half, half)?);
        }
        Ok(out)
    }

    /// Weight and bias gradients of layer `l` as GEMMs and column sums over
    /// all steps (and the norm-gain gradients of the normalized cells);
    /// without dW_ih for layer 0 with token input.
    fn weight_grads(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        ws: &Workspace,
        l: usize,
        modes: Modes,
    ) -> Result<Vec<Dispatch>> {
        let train = modes.train;
        let cfg = &model.config;
        let norm = model.norm;
        let in_cell = norm.in_cell();
        let (h, seq, batch) = (cfg.hidden_size, ws.seq, ws.batch);
        let gh = cfg.cell().gates() * h;
        let tb = seq * batch;
        let ((input, in_off), ld) = Self::layer_input(model, ws, l);
        let [_, sec_dp, sec_dr, ..] = lstm_cell_ln::dg_sections(h, seq, batch);
        let [.., sec_hp, _, _, _] = lstm_cell_ln::cache_sections(h, seq, batch);
        let mut out = Vec::new();
        for d in 0..cfg.dirs() {
            let sh = shape(model, ws, l, d);
            let (wih, whh, bih, bhh) = model.cell_offsets(l, d);
            // Gradients of W_ih x and W_hh h: dgates for the plain cell,
            // dp and dr (through the norms) for normalized cells.
            let (dp, dr) = if in_cell {
                (sh.dg_off + sec_dp, sh.dg_off + sec_dr)
            } else {
                (sh.dx_off, sh.dg_off)
            };
            let dw_ih = GemmOp {
                m: gh,
                n: ld,
                k: tb,
                trans_a: true,
                trans_b: false,
                a: (&ws.dg, dp, gh),
                b: (input, in_off, ld),
                c: (&model.grads, wih, ld),
                bias: None,
                alpha: 1.0,
                accumulate: false,
            };
            if !(l == 0 && modes.token_input) {
                out.extend(k.gemm().dispatch_as(ctx, &dw_ih, ws.half, false)?);
            }
            let hprev = match in_cell {
                true => sh.cache_off + sec_hp,
                false => ws.cell_offsets(cfg, &norm, l, d)[2],
            };
            // With a projection, h_{t-1} is P wide: the first P columns
            // of the h_prev section.
            let s = cfg.state_size();
            let dw_hh = GemmOp {
                a: (&ws.dg, dr, gh),
                b: (ws.cache(l), hprev, h),
                n: s,
                c: (&model.grads, whh, s),
                ..dw_ih
            };
            if cfg.cell().diag() {
                // A diagonal W_hh (IndRNN, one gate): dW_hh[j] = Σ_rows
                // dgates[j] · h_prev[j].
                let r = k.reduce()?;
                let hp = (ws.cache(l), hprev);
                out.extend(r.colsum_prod(ctx, (&ws.dg, dr), hp, h, tb, h, (&model.grads, whh))?);
            } else {
                // The f16 cache holds h_prev as f16 (and dg the gate
                // gradients).
                out.extend(k.gemm().dispatch_as(ctx, &dw_hh, ws.half, ws.half)?);
            }
            let da = (&ws.dg, sh.dg_off, gh);
            if let (Some(bih), Some(bhh)) = (bih, bhh)
                && cfg.cell().split_dg()
            {
                // b_ih's gradient is dx's column sums, b_hh's dgates', in
                // one dispatch.
                let pair = (&ws.dg, sh.dx_off, sh.dg_off, gh);
                let g = &model.grads;
                out.extend(
                    k.reduce()?
                        .colsum_pair(ctx, pair, tb, gh, g, (bih, bhh), ws.half)?,
                );
            } else if let Some(bih) = bih {
                out.extend(k.reduce()?.colsum(
                    ctx,
                    da,
                    tb,
                    gh,
                    &model.grads,
                    (bih, bhh),
                    false,
                    ws.half,
                )?);
            }
            if in_cell {
                out.extend(Self::norm_cell_grads(ctx, k, model, ws, (l, d), train)?);
            }
            if let (Some(p), Some(whr), Some(sc)) = (cfg.proj(), model.whr_offset(l, d), &ws.proj) {
                // dW_hr = Σ_rows dhᵀ m, both step-major.
                let sh = proj_shape(model, ws, l, d);
                out.extend(k.gemm().dispatch(
                    ctx,
                    &GemmOp {
                        m: p,
                        n: h,
                        k: tb,
                        trans_a: true,
                        trans_b: false,
                        a: (&sc.seqs, sh.dhs_off, p),
                        b: (&sc.work, sh.m_off, h),
                        c: (&model.grads, whr, h),
                        bias: None,
                        alpha: 1.0,
                        accumulate: false,
                    },
                )?);
            }
        }
        Ok(out)
    }

    /// The gradients of a normalized cell's own parameters (the norms'
    /// gains and biases) in layer `l`, direction `d`: column sums of the
    /// cached normalized values times the gate gradients.
    fn norm_cell_grads(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        ws: &Workspace,
        (l, d): (usize, usize),
        train: bool,
    ) -> Result<Vec<Dispatch>> {
        let norm = model.norm;
        let (h, seq, batch) = (model.config.hidden_size, ws.seq, ws.batch);
        let gh = model.config.cell().gates() * h;
        let tb = seq * batch;
        let [.., sec_dhc] = lstm_cell_ln::dg_sections(h, seq, batch);
        let [.., sec_xi, sec_xh, sec_xc] = lstm_cell_ln::cache_sections(h, seq, batch);
        let sh = shape(model, ws, l, d);
        let da = (&ws.dg, sh.dg_off, gh);
        let mut out = Vec::new();
        let np = norm_cell_params(model, ws, l, d, train);
        let g = &model.grads;
        let prod = |a: (usize, usize), x: usize, width: usize, o: usize| {
            k.reduce()?.colsum_prod(
                ctx,
                (&ws.dg, a.0),
                (ws.cache(l), sh.cache_off + x),
                width,
                tb,
                a.1,
                (g, o),
            )
        };
        let da4 = (sh.dg_off, gh);
        out.extend(prod(da4, sec_xi, gh, np.ih.0)?);
        out.extend(prod(da4, sec_xh, gh, np.hh.0)?);
        out.extend(prod((sh.dg_off + sec_dhc, h), sec_xc, h, np.c.0)?);
        let dhc = (&ws.dg, sh.dg_off + sec_dhc, h);
        if matches!(norm, Norm::LayerCell) {
            out.extend(k.reduce()?.colsum(
                ctx,
                da,
                tb,
                gh,
                g,
                (np.ih.1, Some(np.hh.1)),
                false,
                false,
            )?);
        }
        out.extend(
            k.reduce()?
                .colsum(ctx, dhc, tb, h, g, (np.c.1, None), false, false)?,
        );
        Ok(out)
    }

    /// The wavefront (unidirectional plain cells; between layers at most a
    /// LayerNorm and residual adds, which are per position; the caller adds
    /// layer 0's input gradient): layer l + 1 runs step s − C in the same
    /// cell dispatch as layer l at step s, so the time loops of all layers
    /// take T + (L−1)·C dispatches per pass instead of L·T. Layer l's norm
    /// and residual add and layer l + 1's input projection run in chunks of
    /// C steps, each as soon as layer l has finished them; backward mirrors
    /// it (layer l's output gradient for a chunk is one GEMM once layer
    /// l + 1 has its gate gradients there, then the residual split and the
    /// norm's backward for the chunk). Every value is computed by the same
    /// kernels in the same summation order as the layer-by-layer schedule,
    /// so both give identical bits, except the LayerNorm weight gradients,
    /// summed chunk by chunk.
    #[allow(clippy::too_many_arguments)]
    fn wavefront(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        ws: &Workspace,
        skew: usize,
        modes: Modes,
        dropout_step: &wgpu::Buffer,
        ready: &mut Ready,
    ) -> Result<(Vec<Dispatch>, Vec<Dispatch>)> {
        let layers = model.config.num_layers;
        let seq = ws.seq;
        let between = |l, backward, range| {
            between_layers(
                ctx,
                k,
                model,
                ws,
                (l, modes.train),
                dropout_step,
                backward,
                range,
            )
        };
        let c = skew;
        let waves = seq + (layers - 1) * c;
        let sh: Vec<CellShape> = (0..layers).map(|l| shape(model, ws, l, 0)).collect();
        // The wavefront's workspace never splits its cache.
        let fbufs = cell_forward(model, ws, 0, dropout_step);
        let mut forward = match modes.token_input {
            true => Vec::new(),
            false => Self::input_gemm(ctx, k, model, ws, (0, 0), (0, seq))?,
        };
        for w in 0..waves {
            let mut lanes = Vec::with_capacity(layers);
            for (l, shape) in sh.iter().enumerate() {
                let Some(s) = w.checked_sub(l * c).filter(|&s| s < seq) else {
                    continue;
                };
                // Layer l − 1 has just finished steps [s, s + C).
                if l > 0 && s % c == 0 {
                    let t1 = (s + c).min(seq);
                    forward.extend(between(l - 1, false, (s, t1))?);
                    forward.extend(Self::input_gemm(ctx, k, model, ws, (l, 0), (s, t1))?);
                }
                lanes.push((*shape, s));
            }
            forward.extend(
                k.cell(model.config.cell())?
                    .forward_lanes(ctx, &lanes, &fbufs)?,
            );
        }
        // The top layer's norm (with `last`) and links, for the head.
        forward.extend(between(layers - 1, false, (0, seq))?);
        let bbufs = cell_backward(model, ws, 0, dropout_step);
        let mut backward = between(layers - 1, true, (0, seq))?;
        for w in 0..waves {
            let mut lanes = Vec::with_capacity(layers);
            for (l, shape) in sh.iter().enumerate() {
                // Processing index i: step T − 1 − i; the top layer leads.
                let Some(i) = w.checked_sub((layers - 1 - l) * c).filter(|&i| i < seq) else {
                    continue;
                };
                let s = seq - 1 - i;
                // Layer l + 1 has just finished steps (s − C, s]: the
                // gradient of layer l's output there.
                if l + 1 < layers && i % c == 0 {
                    let t0 = (s + 1).saturating_sub(c);
                    backward.extend(Self::input_grad_gemm(
                        ctx,
                        k,
                        model,
                        ws,
                        l + 1,
                        (t0, s + 1),
                    )?);
                    backward.extend(between(l, true, (t0, s + 1))?);
                }
                lanes.push((*shape, s));
            }
            backward.extend(
                k.cell(model.config.cell())?
                    .backward_lanes(ctx, &lanes, &bbufs)?,
            );
            // A layer whose step 0 ran in this wave has all its gate
            // gradients: its weight gradients now, final while the layers
            // below still run (the top layer finishes first).
            for l in (0..layers).filter(|l| w == (layers - 1 - l) * c + seq - 1) {
                backward.extend(Self::weight_grads(ctx, k, model, ws, l, modes)?);
                ready.push((backward.len(), layer_grads(model, l, modes)));
            }
        }
        backward.extend(
            k.cell(model.config.cell())?
                .backward_state(ctx, &sh, &bbufs)?,
        );
        Ok((forward, backward))
    }

    /// One layer after the other: per layer the input projection over all
    /// steps, then its time loop (per step, or persistent); backward from
    /// the top layer down.
    #[allow(clippy::too_many_arguments)]
    fn layer_by_layer(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        ws: &Workspace,
        modes: Modes,
        dropout_step: &wgpu::Buffer,
        persistent: Option<&crate::kernels::lstm_persistent::PersistentLayout>,
        ready: &mut Ready,
    ) -> Result<(Vec<Dispatch>, Vec<Dispatch>)> {
        let (train, input_grad) = (modes.train, modes.input_grad);
        let between = |l, backward, range| {
            between_layers(ctx, k, model, ws, (l, train), dropout_step, backward, range)
        };
        let cfg = &model.config;
        let (dirs, seq) = (cfg.dirs(), ws.seq);
        let dir_shapes =
            |l: usize| -> Vec<CellShape> { (0..dirs).map(|d| shape(model, ws, l, d)).collect() };
        let mut forward = Vec::new();
        for l in 0..cfg.num_layers {
            for d in 0..dirs {
                if !(l == 0 && modes.token_input) {
                    forward.extend(Self::input_gemm(ctx, k, model, ws, (l, d), (0, seq))?);
                }
            }
            if cfg.proj().is_some() {
                forward.extend(proj_loop(ctx, k, model, ws, (l, false), dropout_step)?);
            } else if let Some(lay) = persistent {
                let bufs = cell_forward(model, ws, l, dropout_step);
                forward.extend(k.persistent.pass(
                    ctx,
                    lay,
                    &dir_shapes(l),
                    false,
                    &bufs.buffers(),
                )?);
            } else {
                forward.extend(Self::stepwise(
                    ctx,
                    k,
                    model,
                    ws,
                    (l, train),
                    false,
                    dropout_step,
                )?);
            }
            forward.extend(between(l, false, (0, seq))?);
        }

        let mut backward = Vec::new();
        for l in (0..cfg.num_layers).rev() {
            backward.extend(between(l, true, (0, seq))?);
            // The persistent backward also writes the initial-state gradients.
            if cfg.proj().is_some() {
                backward.extend(proj_loop(ctx, k, model, ws, (l, true), dropout_step)?);
            } else if let Some(lay) = persistent {
                let bufs = cell_backward(model, ws, l, dropout_step);
                backward.extend(k.persistent.pass(
                    ctx,
                    lay,
                    &dir_shapes(l),
                    true,
                    &bufs.buffers(),
                )?);
            } else {
                backward.extend(Self::stepwise(
                    ctx,
                    k,
                    model,
                    ws,
                    (l, train),
                    true,
                    dropout_step,
                )?);
            }
            backward.extend(Self::weight_grads(ctx, k, model, ws, l, modes)?);
            ready.push((backward.len(), layer_grads(model, l, modes)));
            if l > 0 || input_grad {
                backward.extend(Self::input_grad_gemm(ctx, k, model, ws, l, (0, seq))?);
            }
        }
        Ok((forward, backward))
    }

    /// Layer `l`'s time loop in one dispatch per step: forward in step
    /// order, or backward in reverse then the initial-state step. A plain
    /// cell runs both directions of a step in one dispatch, a normalized
    /// cell one per direction.
    fn stepwise(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        ws: &Workspace,
        (l, train): (usize, bool),
        backward: bool,
        rng: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let (norm, in_cell) = (model.norm, model.norm.in_cell());
        let (h, seq, batch) = (model.config.hidden_size, ws.seq, ws.batch);
        let gh = model.config.cell().gates() * h;
        let shapes: Vec<CellShape> = (0..model.config.dirs())
            .map(|d| shape(model, ws, l, d))
            .collect();
        // The normalized cells bind the plain cell's buffers: they run in
        // f32 without weight-drop (checked in build), so its parameters are
        // theirs.
        let bufs = NormCellBuffers {
            fwd: cell_forward(model, ws, l, rng),
            bwd: cell_backward(model, ws, l, rng),
            stats: &model.stats,
        };
        let mut out = Vec::new();
        for i in 0..seq {
            let s = if backward { seq - 1 - i } else { i };
            if !in_cell {
                // Both directions of a step in one dispatch.
                out.extend(match backward {
                    false => k
                        .cell(model.config.cell())?
                        .forward(ctx, &shapes, s, &bufs.fwd)?,
                    true => k
                        .cell(model.config.cell())?
                        .backward(ctx, &shapes, s, &bufs.bwd)?,
                });
                continue;
            }
            for (d, sh) in shapes.iter().enumerate() {
                let np = norm_cell_params(model, ws, l, d, train);
                let bn = matches!(norm, Norm::RecurrentBatch { .. });
                out.push(match bn {
                    true => k.cell_bn()?.step(ctx, sh, &np, s, &bufs, backward)?,
                    false => k.cell_ln()?.step(ctx, sh, &np, s, &bufs, backward)?,
                });
            }
        }
        if !backward {
            return Ok(out);
        }
        // The plain kernel's initial-state step serves the normalized cells
        // too: their dr and dc sections sit where it expects dgates and dc.
        let [_, _, sec_dr, ..] = lstm_cell_ln::dg_sections(h, seq, batch);
        let state_shapes: Vec<CellShape> = shapes
            .iter()
            .map(|sh| match in_cell {
                true => CellShape {
                    dg_off: sh.dg_off + sec_dr,
                    dc_off: sh.dg_off + sec_dr + seq * batch * gh,
                    ..*sh
                },
                false => *sh,
            })
            .collect();
        out.extend(
            k.cell(model.config.cell())?
                .backward_state(ctx, &state_shapes, &bufs.bwd)?,
        );
        Ok(out)
    }

    /// Records the forward pass. Layer outputs are cleared first so that
    /// padded positions read as zero.
    pub fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        enc.clear_buffer(&self.ws.outs, 0, None);
        for o in self.ws.normed.iter().flatten() {
            enc.clear_buffer(o, 0, None);
        }
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in self.refresh.iter().chain(&self.forward) {
            d.record(&mut pass);
        }
    }

    /// Records the backward pass. Gate gradients are cleared first: padded
    /// steps never write theirs, and must contribute zero.
    pub fn encode_backward(&self, enc: &mut wgpu::CommandEncoder) {
        enc.clear_buffer(&self.ws.dg, 0, None);
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in &self.backward {
            d.record(&mut pass);
        }
    }
}

/// The automatic choice by shape (see docs/architecture.md, "Persistent
/// time loop"). On adapters that cap loop iterations (lavapipe, a CPU)
/// dispatches are cheap next to the arithmetic, and the persistent loop only
/// wins where W_hh lives in workgroup memory. On GPUs one workgroup per chain
/// does a step's work alone, which pays only while a step is small: measured
/// on an H200 (forward + backward of 2 layers, T = 20), it wins at H <= 32
/// (H = 32, B = 32: 0.72 ms against 0.78 ms in the wavefront; B = 256: 2.36
/// against 2.62 ms) and loses from H = 64 on (1.63 against 1.24 ms; `char`,
/// H = 256, 28.4 against 3.7 ms per training step). The LSTM's rule; every
/// cell's is [`prefers_persistent_cell`].
pub fn prefers_persistent(ctx: &GpuContext, hidden: usize) -> bool {
    prefers_persistent_cell(ctx, Cell::Lstm, hidden)
}

/// The same rule for `cell`: with a loop cap, persistent when its W_hh
/// (G·H x H, or IndRNN's vector) fits in workgroup memory; else H ≤ 32.
pub fn prefers_persistent_cell(ctx: &GpuContext, cell: Cell, hidden: usize) -> bool {
    if lstm_persistent::loop_iteration_cap(&ctx.info).is_some() {
        lstm_persistent::w_on_chip(ctx, cell, hidden)
    } else {
        hidden <= 32
    }
}

/// The persistent layout of a plain-cell layer stack, or `None` for one
/// dispatch per step. A forced path (the tuning's `cell_path`) overrides the
/// choice by shape; a forced persistent path that cannot run on this adapter
/// is an error, the automatic choice falls back to per-step instead.
fn persistent_layout(
    ctx: &GpuContext,
    k: &Kernels,
    cell: Cell,
    hidden: usize,
    batch: usize,
    dirs: usize,
    seq: usize,
) -> Result<Option<lstm_persistent::PersistentLayout>> {
    let p = &k.persistent;
    let layout = || p.layout(ctx, cell, hidden, batch, dirs, seq);
    match k.tuning().cell_path {
        Some(CellPath::PerStep | CellPath::Wavefront) => Ok(None),
        Some(CellPath::Persistent) => layout().map(Some),
        None if prefers_persistent_cell(ctx, cell, hidden) => Ok(layout().ok()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::default_skew;

    #[test]
    fn default_skews() {
        // CPU adapters: ⌈√T⌉.
        assert_eq!(default_skew(true, 64, 32), 8);
        assert_eq!(default_skew(true, 20, 32), 5);
        // GPUs: 1024 rows a chunk, within [⌈√T⌉, ⌈T/2⌉].
        assert_eq!(default_skew(false, 64, 32), 32); // char
        assert_eq!(default_skew(false, 128, 64), 16); // big
        assert_eq!(default_skew(false, 20, 32), 10); // ts
        assert_eq!(default_skew(false, 5, 1024), 3);
        assert_eq!(default_skew(false, 1, 1), 1);
        assert_eq!(default_skew(false, 0, 0), 1);
    }
}
