//! Orders and records the dispatches of a forward and a backward pass.
//! Everything (bind groups, uniform blocks) is built once per (T, B) shape;
//! running a pass is recording a prepared list into one compute pass.
//!
//! Forward, per layer: one GEMM per direction for the input projection of
//! all timesteps (with both biases), then one fused cell dispatch per
//! (direction, step). Backward, per layer from the top: one fused cell
//! dispatch per (direction, step) in reverse, one for the initial-state
//! gradients, then weight gradients as GEMMs over all timesteps, bias
//! gradients as a column sum, and the gradient for the layer below as a GEMM.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext};
use crate::kernels::Kernels;
use crate::kernels::gemm::GemmOp;
use crate::kernels::lstm_cell::{CellBackward, CellForward, CellShape};
use crate::model::LstmModel;
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
        cache_off: (l * cfg.dirs() + d) * Workspace::cache_block(cfg, seq, batch),
        dg_off: d * Workspace::dg_block(cfg, seq, batch),
        state_off: (l * cfg.dirs() + d) * batch * h,
        state_stride: Workspace::state_len(cfg, batch),
    }
}

impl Plan {
    /// Builds the workspace and every dispatch for (seq, batch).
    pub fn new(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        seq: usize,
        batch: usize,
    ) -> Result<Self> {
        ctx.scoped(|| Self::build(ctx, k, model, seq, batch))
    }

    fn build(
        ctx: &GpuContext,
        k: &Kernels,
        model: &LstmModel,
        seq: usize,
        batch: usize,
    ) -> Result<Self> {
        let cfg = &model.config;
        let ws = Workspace::new(ctx, cfg, seq, batch)?;
        let (h, dirs, tb) = (cfg.hidden_size, cfg.dirs(), seq * batch);
        let mut forward = Vec::new();
        let push = |v: &mut Vec<Dispatch>, d: Option<Dispatch>| v.extend(d);
        for l in 0..cfg.num_layers {
            let (input, ld) = if l == 0 {
                (&ws.x, cfg.input_size)
            } else {
                (&ws.outs[l - 1], dirs * h)
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
                    bias: Some((&model.params, bih, bhh)),
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
            for s in 0..seq {
                for d in 0..dirs {
                    let sh = shape(model, &ws, l, d);
                    forward.push(k.cell.forward(ctx, &sh, s, &bufs)?);
                }
            }
        }

        let mut backward = Vec::new();
        let top = cfg.num_layers - 1;
        // dy[cur] holds the gradient w.r.t. layer l's output; dy[1-cur]
        // receives the gradient w.r.t. its input.
        let grad_output = top % 2;
        for l in (0..cfg.num_layers).rev() {
            let cur = l % 2;
            let (input, ld) = if l == 0 {
                (&ws.x, cfg.input_size)
            } else {
                (&ws.outs[l - 1], dirs * h)
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
            for s in (0..seq).rev() {
                for d in 0..dirs {
                    let sh = shape(model, &ws, l, d);
                    backward.push(k.cell.backward(ctx, &sh, s, &bufs)?);
                }
            }
            for d in 0..dirs {
                let sh = shape(model, &ws, l, d);
                backward.push(k.cell.backward_state(ctx, &sh, &bufs)?);
                let (wih, whh, bih, bhh) = model.cell_offsets(l, d);
                let dg = (&ws.dg, sh.dg_off, 4 * h);
                // dW_ih = dG^T · X, dW_hh = dG^T · H_prev over all (t, b).
                let dw_ih = GemmOp {
                    m: 4 * h,
                    n: ld,
                    k: tb,
                    trans_a: true,
                    trans_b: false,
                    a: dg,
                    b: (input, 0, ld),
                    c: (&model.grads, wih, ld),
                    bias: None,
                    alpha: 1.0,
                    accumulate: false,
                };
                push(&mut backward, k.gemm.dispatch(ctx, &dw_ih)?);
                let hprev = sh.cache_off + tb * 5 * h;
                let dw_hh = GemmOp {
                    b: (&ws.cache, hprev, h),
                    n: h,
                    c: (&model.grads, whh, h),
                    ..dw_ih
                };
                push(&mut backward, k.gemm.dispatch(ctx, &dw_hh)?);
                if let Some(bih) = bih {
                    let c = k
                        .reduce
                        .colsum(ctx, dg, tb, 4 * h, &model.grads, bih, bhh, false)?;
                    push(&mut backward, c);
                }
            }
            // Gradient w.r.t. this layer's input: Σ_d dG_d · W_ih_d.
            for d in 0..dirs {
                let (wih, ..) = model.cell_offsets(l, d);
                let op = GemmOp {
                    m: tb,
                    n: ld,
                    k: 4 * h,
                    trans_a: false,
                    trans_b: false,
                    a: (&ws.dg, d * Workspace::dg_block(cfg, seq, batch), 4 * h),
                    b: (&model.params, wih, ld),
                    c: (&ws.dy[1 - cur], 0, ld),
                    bias: None,
                    alpha: 1.0,
                    accumulate: d > 0,
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
        })
    }

    /// Records the forward pass. Layer outputs are cleared first so that
    /// padded positions read as zero.
    pub fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        for o in &self.ws.outs {
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
