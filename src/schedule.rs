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

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext};
use crate::kernels::Kernels;
use crate::kernels::elementwise::DropoutShape;
use crate::kernels::gemm::GemmOp;
use crate::kernels::lstm_cell::{CellBackward, CellForward, CellShape};
use crate::kernels::lstm_cell_ln::{self, NormCellBuffers, NormCellParams};
pub use crate::kernels::lstm_persistent::CellPath;
use crate::model::{LstmModel, dir_suffix};
use crate::norm::Norm;
use crate::workspace::Workspace;

/// Prepared dispatches of one shape.
pub struct Plan {
    /// The buffers they use.
    pub ws: Workspace,
    /// Forward pass, in order.
    pub forward: Vec<Dispatch>,
    /// Backward pass, in order.
    pub backward: Vec<Dispatch>,
    /// Which of `ws.dy` holds the gradient of the input after backward.
    pub grad_input: usize,
    /// Which of `ws.dy` receives the gradient of the last layer's output.
    pub grad_output: usize,
    /// Which kernel runs the cell's time loops.
    pub path: CellPath,
}

fn shape(model: &LstmModel, ws: &Workspace, l: usize, d: usize) -> CellShape {
    let cfg = &model.config;
    let h = cfg.hidden_size;
    let (seq, batch) = (ws.seq, ws.batch);
    CellShape {
        hidden: h,
        batch,
        seq,
        reverse: d == 1,
        out_stride: cfg.dirs() * h,
        out_col: d * h,
        pre_off: d * seq * batch * 4 * h,
        whh_off: model.cell_offsets(l, d).1,
        cache_off: (l * cfg.dirs() + d) * Workspace::cache_block(cfg, &model.norm, seq, batch),
        dg_off: d * Workspace::dg_block(cfg, &model.norm, seq, batch),
        state_off: (l * cfg.dirs() + d) * batch * h,
        state_stride: Workspace::state_len(cfg, batch),
    }
}

/// Offsets of the normalized cell's tensors of layer `l`, direction `d`.
fn norm_cell_params(model: &LstmModel, l: usize, d: usize, train: bool) -> NormCellParams {
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
        running: [running("ih"), running("hh"), running("c")],
    }
}

/// The between-layer norm of layer `l`'s output: forward (outs → normed)
/// or backward (in place on `dy`).
fn between_norm(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    l: usize,
    train: bool,
    dy: Option<&wgpu::Buffer>,
) -> Result<Vec<Dispatch>> {
    use crate::kernels::batch_norm::{BnBackward, BnForward, BnShape};
    use crate::kernels::layer_norm::{LnBackward, LnForward, LnShape};
    let cfg = &model.config;
    let Some(normed) = &ws.normed[l] else {
        return Ok(Vec::new());
    };
    let Some((prefix, _)) = model.norm.between() else {
        return Ok(Vec::new());
    };
    let p = |n: &str| model.table.offset(&format!("{prefix}.{l}.{n}"));
    let features = cfg.dirs() * cfg.hidden_size;
    let stats_off = l * Workspace::norm_stats_len(cfg, &model.norm, ws.seq, ws.batch);
    if let Norm::Layer { .. } = model.norm {
        let sh = LnShape {
            seq: ws.seq,
            batch: ws.batch,
            features,
            stats_off,
            w_off: p("weight"),
            b_off: p("bias"),
            dw_off: p("weight"),
            db_off: p("bias"),
            ..Default::default()
        };
        return match dy {
            None => k.layer_norm.forward(
                ctx,
                &sh,
                &LnForward {
                    params: &model.params,
                    lengths: &ws.lengths,
                    x: &ws.outs[l],
                    y: normed,
                    stats: &ws.norm_stats,
                },
            ),
            Some(dy) => k.layer_norm.backward(
                ctx,
                &sh,
                &LnBackward {
                    params: &model.params,
                    lengths: &ws.lengths,
                    x: &ws.outs[l],
                    stats: &ws.norm_stats,
                    dy,
                    dx: dy,
                    grads: &model.grads,
                },
            ),
        };
    }
    let st = |n: &str| model.stats_table.offset(&format!("{prefix}.{l}.{n}"));
    let (per_step, run_rows) = match model.norm {
        Norm::StepBatch { t_max, .. } => (true, t_max),
        _ => (false, 1),
    };
    let sh = BnShape {
        seq: ws.seq,
        batch: ws.batch,
        features,
        per_step,
        train,
        run_rows,
        stats_off,
        w_off: p("weight"),
        b_off: p("bias"),
        dw_off: p("weight"),
        db_off: p("bias"),
        rm_off: st("running_mean"),
        rv_off: st("running_var"),
        ..Default::default()
    };
    match dy {
        None => k.batch_norm.forward(
            ctx,
            &sh,
            &BnForward {
                params: &model.params,
                lengths: &ws.lengths,
                x: &ws.outs[l],
                y: normed,
                stats: &ws.norm_stats,
                running: &model.stats,
            },
        ),
        Some(dy) => k.batch_norm.backward(
            ctx,
            &sh,
            &BnBackward {
                params: &model.params,
                lengths: &ws.lengths,
                x: &ws.outs[l],
                stats: &ws.norm_stats,
                dy,
                dx: dy,
                grads: &model.grads,
            },
        ),
    }
}

/// Dropout and the residual add after layer `l`: forward (a_l, y_l →
/// y_{l+1} in `ws.linked[l]`) or backward (in place on `dy`, the gradient of
/// y_{l+1}, with the skip path's copy of it written to `skip`, which the
/// input-gradient GEMM then accumulates onto). One dispatch, or none.
#[allow(clippy::too_many_arguments)]
fn links(
    ctx: &GpuContext,
    k: &Kernels,
    model: &LstmModel,
    ws: &Workspace,
    l: usize,
    train: bool,
    step: &wgpu::Buffer,
    backward: Option<(&wgpu::Buffer, &wgpu::Buffer)>,
) -> Result<Vec<Dispatch>> {
    let Some(y) = &ws.linked[l] else {
        return Ok(Vec::new());
    };
    let cfg = &model.config;
    let lk = &model.links;
    let (drops, adds) = (lk.drops(cfg, l, train), lk.adds(l));
    let n = ws.seq * ws.batch * cfg.dirs() * cfg.hidden_size;
    let s = DropoutShape {
        n,
        p: lk.dropout,
        stream: l as u32,
        ..Default::default()
    };
    let e = &k.elementwise;
    match backward {
        None => {
            let a = ws.normed[l].as_ref().unwrap_or(&ws.outs[l]);
            if !drops {
                e.add(ctx, n, (a, 0), (ws.layer_output(l - 1), 0), (y, 0))
            } else if adds {
                e.dropout_add(ctx, &s, step, a, (ws.layer_output(l - 1), 0), y)
            } else {
                e.dropout_forward(ctx, &s, step, a, y)
            }
        }
        Some((dy, skip)) => {
            if !drops {
                e.accumulate(ctx, n, (dy, 0), (skip, 0), false)
            } else if adds {
                e.dropout_split(ctx, &s, step, dy, (skip, 0), dy)
            } else {
                e.dropout_backward(ctx, &s, step, dy, dy)
            }
        }
    }
}

impl Plan {
    /// The buffer holding the final output [T, B, D·H].
    pub fn output(&self) -> &wgpu::Buffer {
        self.ws.layer_output(self.ws.outs.len() - 1)
    }

    /// Builds the workspace and every dispatch for (seq, batch) in train or
    /// eval mode (which matters for BatchNorm variants and dropout).
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
        train: bool,
        dropout_step: &wgpu::Buffer,
    ) -> Result<Self> {
        ctx.scoped(|| Self::build(ctx, k, model, seq, batch, train, dropout_step))
    }

    fn build(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        seq: usize,
        batch: usize,
        train: bool,
        dropout_step: &wgpu::Buffer,
    ) -> Result<Self> {
        let cfg = &model.config;
        let norm = model.norm;
        let in_cell = norm.in_cell();
        let ws = Workspace::new(ctx, cfg, &norm, &model.links, train, seq, batch)?;
        let (h, dirs, tb) = (cfg.hidden_size, cfg.dirs(), seq * batch);
        // The persistent time loop serves the plain cell (between-layer norms
        // included); normalized cells keep one dispatch per step.
        let persistent = if in_cell {
            None
        } else {
            k.persistent.select(ctx, k.cell_path, h, batch, dirs, seq)?
        };
        let dir_shapes = |l: usize| {
            (0..dirs)
                .map(|d| shape(model, &ws, l, d))
                .collect::<Vec<_>>()
        };
        let push = |v: &mut Vec<Dispatch>, d: Vec<Dispatch>| v.extend(d);
        let mut forward = Vec::new();
        for l in 0..cfg.num_layers {
            let (input, ld) = if l == 0 {
                (&ws.x, cfg.input_size)
            } else {
                (ws.layer_output(l - 1), dirs * h)
            };
            for d in 0..dirs {
                let (wih, _, bih, bhh) = model.cell_offsets(l, d);
                let op = GemmOp {
                    m: tb,
                    n: 4 * h,
                    k: ld,
                    trans_a: false,
                    trans_b: true,
                    a: (input, 0, ld),
                    b: (&model.params, wih, ld),
                    c: (&ws.pre, d * tb * 4 * h, 4 * h),
                    // Normalized cells add the biases after their norms.
                    bias: (!in_cell).then_some((&model.params, bih, bhh)),
                    alpha: 1.0,
                    accumulate: false,
                };
                push(&mut forward, k.gemm.dispatch(ctx, &op)?);
            }
            let bufs = CellForward {
                pre: &ws.pre,
                params: &model.params,
                state_in: &ws.state_in,
                lengths: &ws.lengths,
                out: &ws.outs[l],
                cache: &ws.cache,
                state_out: &ws.state_out,
            };
            let nbufs = NormCellBuffers {
                pre: &ws.pre,
                params: &model.params,
                state_in: &ws.state_in,
                lengths: &ws.lengths,
                out: &ws.outs[l],
                cache: &ws.cache,
                state_out: &ws.state_out,
                dy: &ws.dy[0],
                gstate_in: &ws.gstate_in,
                dg: &ws.dg,
                stats: &model.stats,
            };
            if let Some(lay) = &persistent {
                forward.extend(k.persistent.forward(ctx, lay, &dir_shapes(l), &bufs)?);
            } else {
                let shapes: Vec<CellShape> = (0..dirs).map(|d| shape(model, &ws, l, d)).collect();
                for s in 0..seq {
                    if !in_cell {
                        // Both directions of a step in one dispatch where
                        // the variant allows.
                        forward.extend(k.cell.forward(ctx, &shapes, s, &bufs)?);
                        continue;
                    }
                    for (d, sh) in shapes.iter().enumerate() {
                        let np = norm_cell_params(model, l, d, train);
                        forward.push(match norm {
                            Norm::RecurrentBatch { .. } => {
                                k.cell_bn.forward(ctx, sh, &np, s, &nbufs)?
                            }
                            _ => k.cell_ln.forward(ctx, sh, &np, s, &nbufs)?,
                        });
                    }
                }
            }
            forward.extend(between_norm(ctx, k, model, &ws, l, train, None)?);
            forward.extend(links(ctx, k, model, &ws, l, train, dropout_step, None)?);
        }

        let mut backward = Vec::new();
        let top = cfg.num_layers - 1;
        // dy[cur] holds the gradient w.r.t. layer l's output; dy[1-cur]
        // receives the gradient w.r.t. its input.
        let grad_output = top % 2;
        let dgb = Workspace::dg_block(cfg, &norm, seq, batch);
        let [_, sec_dp, sec_dr, _, sec_dhc] = lstm_cell_ln::dg_sections(h, seq, batch);
        let [.., sec_hp, sec_xi, sec_xh, sec_xc] = lstm_cell_ln::cache_sections(h, seq, batch);
        for l in (0..cfg.num_layers).rev() {
            let cur = l % 2;
            let (input, ld) = if l == 0 {
                (&ws.x, cfg.input_size)
            } else {
                (ws.layer_output(l - 1), dirs * h)
            };
            let bufs = CellBackward {
                params: &model.params,
                state_in: &ws.state_in,
                lengths: &ws.lengths,
                cache: &ws.cache,
                dy: &ws.dy[cur],
                gstate_in: &ws.gstate_in,
                dg: &ws.dg,
                gstate_out: &ws.gstate_out,
            };
            let nbufs = NormCellBuffers {
                pre: &ws.pre,
                params: &model.params,
                state_in: &ws.state_in,
                lengths: &ws.lengths,
                out: &ws.outs[l],
                cache: &ws.cache,
                state_out: &ws.state_out,
                dy: &ws.dy[cur],
                gstate_in: &ws.gstate_in,
                dg: &ws.dg,
                stats: &model.stats,
            };
            let skip = (&ws.dy[cur], &ws.dy[1 - cur]);
            backward.extend(links(
                ctx,
                k,
                model,
                &ws,
                l,
                train,
                dropout_step,
                Some(skip),
            )?);
            backward.extend(between_norm(
                ctx,
                k,
                model,
                &ws,
                l,
                train,
                Some(&ws.dy[cur]),
            )?);
            // The persistent backward also writes the initial-state gradients.
            if let Some(lay) = &persistent {
                backward.extend(k.persistent.backward(ctx, lay, &dir_shapes(l), &bufs)?);
            } else {
                let shapes: Vec<CellShape> = (0..dirs).map(|d| shape(model, &ws, l, d)).collect();
                for s in (0..seq).rev() {
                    if !in_cell {
                        backward.extend(k.cell.backward(ctx, &shapes, s, &bufs)?);
                        continue;
                    }
                    for (d, sh) in shapes.iter().enumerate() {
                        let np = norm_cell_params(model, l, d, train);
                        backward.push(match norm {
                            Norm::RecurrentBatch { .. } => {
                                k.cell_bn.backward(ctx, sh, &np, s, &nbufs)?
                            }
                            _ => k.cell_ln.backward(ctx, sh, &np, s, &nbufs)?,
                        });
                    }
                }
                // The plain kernel's initial-state step serves the
                // normalized cells too: their dr and dc sections sit where
                // it expects dgates and dc.
                let state_shapes: Vec<CellShape> = shapes
                    .iter()
                    .map(|sh| match in_cell {
                        true => CellShape {
                            dg_off: sh.dg_off + sec_dr,
                            ..*sh
                        },
                        false => *sh,
                    })
                    .collect();
                backward.extend(k.cell.backward_state(ctx, &state_shapes, &bufs)?);
            }
            for d in 0..dirs {
                let sh = shape(model, &ws, l, d);
                let (wih, whh, bih, bhh) = model.cell_offsets(l, d);
                // Gradients of W_ih x and W_hh h: dgates for the plain cell,
                // dp and dr (through the norms) for normalized cells.
                let (dp, dr) = if in_cell {
                    (sh.dg_off + sec_dp, sh.dg_off + sec_dr)
                } else {
                    (sh.dg_off, sh.dg_off)
                };
                let dw_ih = GemmOp {
                    m: 4 * h,
                    n: ld,
                    k: tb,
                    trans_a: true,
                    trans_b: false,
                    a: (&ws.dg, dp, 4 * h),
                    b: (input, 0, ld),
                    c: (&model.grads, wih, ld),
                    bias: None,
                    alpha: 1.0,
                    accumulate: false,
                };
                push(&mut backward, k.gemm.dispatch(ctx, &dw_ih)?);
                let hprev = sh.cache_off + if in_cell { sec_hp } else { tb * 5 * h };
                let dw_hh = GemmOp {
                    a: (&ws.dg, dr, 4 * h),
                    b: (&ws.cache, hprev, h),
                    n: h,
                    c: (&model.grads, whh, h),
                    ..dw_ih
                };
                push(&mut backward, k.gemm.dispatch(ctx, &dw_hh)?);
                let da = (&ws.dg, sh.dg_off, 4 * h);
                if let Some(bih) = bih {
                    let c = k
                        .reduce
                        .colsum(ctx, da, tb, 4 * h, &model.grads, bih, bhh, false)?;
                    push(&mut backward, c);
                }
                if in_cell {
                    let np = norm_cell_params(model, l, d, train);
                    let g = &model.grads;
                    let prod = |a: (usize, usize), x: usize, width: usize, out: usize| {
                        k.reduce.colsum_prod(
                            ctx,
                            (&ws.dg, a.0),
                            (&ws.cache, sh.cache_off + x),
                            width,
                            tb,
                            a.1,
                            (g, out),
                        )
                    };
                    let da4 = (sh.dg_off, 4 * h);
                    push(&mut backward, prod(da4, sec_xi, 4 * h, np.ih.0)?);
                    push(&mut backward, prod(da4, sec_xh, 4 * h, np.hh.0)?);
                    push(
                        &mut backward,
                        prod((sh.dg_off + sec_dhc, h), sec_xc, h, np.c.0)?,
                    );
                    let dhc = (&ws.dg, sh.dg_off + sec_dhc, h);
                    if matches!(norm, Norm::LayerCell) {
                        let c = k.reduce.colsum(
                            ctx,
                            da,
                            tb,
                            4 * h,
                            g,
                            np.ih.1,
                            Some(np.hh.1),
                            false,
                        )?;
                        push(&mut backward, c);
                    }
                    push(
                        &mut backward,
                        k.reduce.colsum(ctx, dhc, tb, h, g, np.c.1, None, false)?,
                    );
                }
                let _ = dgb;
            }
            // Gradient w.r.t. this layer's input: Σ_d dP_d · W_ih_d.
            for d in 0..dirs {
                let (wih, ..) = model.cell_offsets(l, d);
                let dp = d * dgb + if in_cell { sec_dp } else { 0 };
                let op = GemmOp {
                    m: tb,
                    n: ld,
                    k: 4 * h,
                    trans_a: false,
                    trans_b: false,
                    a: (&ws.dg, dp, 4 * h),
                    b: (&model.params, wih, ld),
                    c: (&ws.dy[1 - cur], 0, ld),
                    bias: None,
                    alpha: 1.0,
                    // Onto the skip path's gradient with a residual add.
                    accumulate: d > 0 || model.links.adds(l),
                };
                push(&mut backward, k.gemm.dispatch(ctx, &op)?);
            }
        }
        Ok(Self {
            ws,
            forward,
            backward,
            grad_input: 1,
            grad_output,
            path: match persistent {
                Some(_) => CellPath::Persistent,
                None => CellPath::PerStep,
            },
        })
    }

    /// Records the forward pass. Layer outputs are cleared first so that
    /// padded positions read as zero.
    pub fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        for o in self.ws.outs.iter().chain(self.ws.normed.iter().flatten()) {
            enc.clear_buffer(o, 0, None);
        }
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in &self.forward {
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
