//! Variants 2 and 5: the LayerNorm cell and the recurrent BatchNorm cell,
//! step by step over the sequences active at each step.

use super::ops::{Normed, acc, batch_norm_running, layer_norm_rows, norm_backward};
use super::{Layers, NormTensors, RefNorm, Trace, dir_suffix};
use crate::linalg::{add_assign, matvec_acc, matvec_t_acc, outer_acc, sigmoid};
use crate::lstm::{state_slice, zero_grads};
use crate::{RefConfig, RefGrads, RefInputs, RefLinks, RefOutputs, RefUpstream, RefWeights};

/// One step `s` of one (layer, direction) of a cell variant, over the active
/// sequences `bs` (ascending) at times `ts`.
pub(super) struct CellStep {
    bs: Vec<usize>,
    ts: Vec<usize>,
    /// Inputs `[n, I_k]`, previous states `[n, H]`.
    x: Vec<f64>,
    h_prev: Vec<f64>,
    /// Activated gates `[n, 4H]`.
    act: Vec<f64>,
    c_prev: Vec<f64>,
    /// Norms of `W_ih x` and `W_hh h` (`[n, 4H]`) and of `c` (`[n, H]`).
    n_ih: Normed,
    n_hh: Normed,
    n_c: Normed,
    /// `tanh(norm_c(c))`, `[n, H]`.
    tanh_n: Vec<f64>,
}

/// Base names (`{base}.weight` ...) of the three norms of cell (k, dir) and
/// whether the `ih`/`hh` norms have a bias.
fn cell_bases(norm: RefNorm, k: usize, dir: usize) -> ([String; 3], bool) {
    let s = dir_suffix(dir);
    let p = if norm == RefNorm::LayerCell {
        "ln"
    } else {
        "bn"
    };
    (
        [
            format!("{p}_ih_l{k}{s}"),
            format!("{p}_hh_l{k}{s}"),
            format!("{p}_c_l{k}{s}"),
        ],
        norm == RefNorm::LayerCell,
    )
}

/// One in-cell normalization of `x: [n, f]` at step `s` (variants 2, 5).
#[allow(clippy::too_many_arguments)]
fn cell_norm(
    norm: RefNorm,
    base: &str,
    has_bias: bool,
    x: &[f64],
    n: usize,
    f: usize,
    s: usize,
    nt: &NormTensors,
    running: &mut NormTensors,
    train: bool,
) -> Result<Normed, String> {
    let gamma = &nt[format!("{base}.weight").as_str()];
    let beta = has_bias.then(|| nt[format!("{base}.bias").as_str()].as_slice());
    match norm {
        RefNorm::LayerCell => Ok(layer_norm_rows(x, n, f, gamma, beta)),
        RefNorm::RecurrentBatch { t_max } => {
            let row = if train { s } else { s.min(t_max - 1) };
            let what = || format!("{base} at step {s}");
            batch_norm_running(running, base, row, x, n, f, gamma, beta, train, &what)
        }
        _ => unreachable!("between-layer variant"),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward_cells(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    train: bool,
    lengths: Vec<usize>,
    mut running: NormTensors,
    links: &RefLinks,
) -> Result<Trace, String> {
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let h = cfg.hidden_size;
    let d_n = cfg.dirs();
    let dh = d_n * h;
    let state_len = cfg.cells() * b_len * h;
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    let mut h_n = vec![0.0; state_len];
    let mut c_n = vec![0.0; state_len];
    let mut layers = Vec::with_capacity(cfg.num_layers);
    let mut cur = inp.x.clone();
    for k in 0..cfg.num_layers {
        let in_size = cfg.layer_input_size(k);
        let mut out = vec![0.0; t_len * b_len * dh];
        let mut dirs = Vec::with_capacity(d_n);
        for dir in 0..d_n {
            let ci = k * d_n + dir;
            let cw = &w.cells[ci];
            let ([b_ih_n, b_hh_n, b_c_n], gate_bias) = cell_bases(norm, k, dir);
            let mut hs: Vec<Vec<f64>> = (0..b_len)
                .map(|b| state_slice(&inp.h0, (ci * b_len + b) * h, h))
                .collect();
            let mut cs: Vec<Vec<f64>> = (0..b_len)
                .map(|b| state_slice(&inp.c0, (ci * b_len + b) * h, h))
                .collect();
            let mut steps = Vec::with_capacity(max_len);
            for s in 0..max_len {
                let bs: Vec<usize> = (0..b_len).filter(|&b| s < lengths[b]).collect();
                let ts: Vec<usize> = bs
                    .iter()
                    .map(|&b| if dir == 0 { s } else { lengths[b] - 1 - s })
                    .collect();
                let n = bs.len();
                let mut x = Vec::with_capacity(n * in_size);
                let mut h_prev = Vec::with_capacity(n * h);
                let mut c_prev = Vec::with_capacity(n * h);
                for (&b, &t) in bs.iter().zip(&ts) {
                    let o = (t * b_len + b) * in_size;
                    x.extend_from_slice(&cur[o..o + in_size]);
                    h_prev.extend_from_slice(&hs[b]);
                    c_prev.extend_from_slice(&cs[b]);
                }
                let mut a = vec![0.0; n * 4 * h];
                let mut r = vec![0.0; n * 4 * h];
                for row in 0..n {
                    matvec_acc(
                        &mut a[row * 4 * h..(row + 1) * 4 * h],
                        &cw.w_ih,
                        &x[row * in_size..(row + 1) * in_size],
                    );
                    matvec_acc(
                        &mut r[row * 4 * h..(row + 1) * 4 * h],
                        &cw.w_hh,
                        &h_prev[row * h..(row + 1) * h],
                    );
                }
                let n_ih = cell_norm(
                    norm,
                    &b_ih_n,
                    gate_bias,
                    &a,
                    n,
                    4 * h,
                    s,
                    nt,
                    &mut running,
                    train,
                )?;
                let n_hh = cell_norm(
                    norm,
                    &b_hh_n,
                    gate_bias,
                    &r,
                    n,
                    4 * h,
                    s,
                    nt,
                    &mut running,
                    train,
                )?;
                let mut act = vec![0.0; n * 4 * h];
                for row in 0..n {
                    for q in 0..4 * h {
                        let idx = row * 4 * h + q;
                        let mut v = n_ih.y[idx] + n_hh.y[idx];
                        if let Some(b) = &cw.b_ih {
                            v += b[q];
                        }
                        if let Some(b) = &cw.b_hh {
                            v += b[q];
                        }
                        act[idx] = if q / h == 2 { v.tanh() } else { sigmoid(v) };
                    }
                }
                let mut c = vec![0.0; n * h];
                for row in 0..n {
                    let g = &act[row * 4 * h..(row + 1) * 4 * h];
                    for j in 0..h {
                        c[row * h + j] = g[h + j] * c_prev[row * h + j] + g[j] * g[2 * h + j];
                    }
                }
                let n_c = cell_norm(norm, &b_c_n, true, &c, n, h, s, nt, &mut running, train)?;
                let tanh_n: Vec<f64> = n_c.y.iter().map(|v| v.tanh()).collect();
                for (row, (&b, &t)) in bs.iter().zip(&ts).enumerate() {
                    let hv: Vec<f64> = (0..h)
                        .map(|j| act[row * 4 * h + 3 * h + j] * tanh_n[row * h + j])
                        .collect();
                    let o = (t * b_len + b) * dh + dir * h;
                    out[o..o + h].copy_from_slice(&hv);
                    hs[b] = hv;
                    cs[b] = c[row * h..(row + 1) * h].to_vec();
                }
                steps.push(CellStep {
                    bs,
                    ts,
                    x,
                    h_prev,
                    act,
                    c_prev,
                    n_ih,
                    n_hh,
                    n_c,
                    tanh_n,
                });
            }
            for b in 0..b_len {
                let o = (ci * b_len + b) * h;
                h_n[o..o + h].copy_from_slice(&hs[b]);
                c_n[o..o + h].copy_from_slice(&cs[b]);
            }
            dirs.push(steps);
        }
        layers.push(dirs);
        cur = links.forward(k, out, &cur);
    }
    Ok(Trace {
        lengths,
        out: RefOutputs {
            output: cur,
            h_n,
            c_n,
        },
        running,
        layers: Layers::Cell(layers),
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward_cells(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    up: &RefUpstream,
    layers: &[Vec<Vec<CellStep>>],
    ng: &mut NormTensors,
    links: &RefLinks,
) -> RefGrads {
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let h = cfg.hidden_size;
    let d_n = cfg.dirs();
    let dh_w = d_n * h;
    let state_len = cfg.cells() * b_len * h;
    let mut gh0 = vec![0.0; state_len];
    let mut gc0 = vec![0.0; state_len];
    let mut cells = zero_grads(w);
    // Gradient w.r.t. the current layer's output [T, B, D*H].
    let mut d_out = up.grad_output.clone();
    let mut d_in = Vec::new();
    for k in (0..cfg.num_layers).rev() {
        let d_next = std::mem::take(&mut d_out);
        d_out = links.backward(k, &d_next);
        let in_size = cfg.layer_input_size(k);
        d_in = vec![0.0; t_len * b_len * in_size];
        for (dir, steps) in layers[k].iter().enumerate() {
            let ci = k * d_n + dir;
            let cw = &w.cells[ci];
            let gw = &mut cells[ci];
            let ([b_ih_n, b_hh_n, b_c_n], gate_bias) = cell_bases(norm, k, dir);
            let gamma = |base: &str| &nt[format!("{base}.weight").as_str()];
            let mut dh: Vec<Vec<f64>> = (0..b_len)
                .map(|b| up.grad_h_n[(ci * b_len + b) * h..(ci * b_len + b + 1) * h].to_vec())
                .collect();
            let mut dc: Vec<Vec<f64>> = (0..b_len)
                .map(|b| up.grad_c_n[(ci * b_len + b) * h..(ci * b_len + b + 1) * h].to_vec())
                .collect();
            for st in steps.iter().rev() {
                let n = st.bs.len();
                // Total gradient w.r.t. h_t: recurrent + this step's output.
                let mut dh_rows = vec![0.0; n * h];
                let mut dc_rows = vec![0.0; n * h];
                for (row, (&b, &t)) in st.bs.iter().zip(&st.ts).enumerate() {
                    let o = (t * b_len + b) * dh_w + dir * h;
                    for j in 0..h {
                        dh_rows[row * h + j] = dh[b][j] + d_out[o + j];
                        dc_rows[row * h + j] = dc[b][j];
                    }
                }
                // h = o * tanh(n), n = norm_c(c).
                let mut d_n_c = vec![0.0; n * h];
                let mut d_o = vec![0.0; n * h];
                for row in 0..n {
                    for j in 0..h {
                        let q = row * h + j;
                        let tn = st.tanh_n[q];
                        let o = st.act[row * 4 * h + 3 * h + j];
                        d_o[q] = dh_rows[q] * tn;
                        d_n_c[q] = dh_rows[q] * o * (1.0 - tn * tn);
                    }
                }
                let (dcx, dgc, dbc) = norm_backward(&st.n_c, &d_n_c, gamma(&b_c_n));
                acc(ng, &format!("{b_c_n}.weight"), &dgc);
                acc(ng, &format!("{b_c_n}.bias"), &dbc);
                // c = f * c_prev + i * g.
                let mut dgates = vec![0.0; n * 4 * h];
                let mut dc_prev = vec![0.0; n * h];
                for row in 0..n {
                    let a = &st.act[row * 4 * h..(row + 1) * 4 * h];
                    let dg = &mut dgates[row * 4 * h..(row + 1) * 4 * h];
                    for j in 0..h {
                        let q = row * h + j;
                        let (i, f, g, o) = (a[j], a[h + j], a[2 * h + j], a[3 * h + j]);
                        let dct = dc_rows[q] + dcx[q];
                        dg[j] = dct * g * i * (1.0 - i);
                        dg[h + j] = dct * st.c_prev[q] * f * (1.0 - f);
                        dg[2 * h + j] = dct * i * (1.0 - g * g);
                        dg[3 * h + j] = d_o[q] * o * (1.0 - o);
                        dc_prev[q] = dct * f;
                    }
                }
                for row in 0..n {
                    let dg = &dgates[row * 4 * h..(row + 1) * 4 * h];
                    if let Some(gb) = gw.b_ih.as_mut() {
                        add_assign(gb, dg);
                    }
                    if let Some(gb) = gw.b_hh.as_mut() {
                        add_assign(gb, dg);
                    }
                }
                let (da, dgi, dbi) = norm_backward(&st.n_ih, &dgates, gamma(&b_ih_n));
                acc(ng, &format!("{b_ih_n}.weight"), &dgi);
                let (dr, dgh, dbh) = norm_backward(&st.n_hh, &dgates, gamma(&b_hh_n));
                acc(ng, &format!("{b_hh_n}.weight"), &dgh);
                if gate_bias {
                    acc(ng, &format!("{b_ih_n}.bias"), &dbi);
                    acc(ng, &format!("{b_hh_n}.bias"), &dbh);
                }
                for (row, (&b, &t)) in st.bs.iter().zip(&st.ts).enumerate() {
                    let da_r = &da[row * 4 * h..(row + 1) * 4 * h];
                    let dr_r = &dr[row * 4 * h..(row + 1) * 4 * h];
                    outer_acc(
                        &mut gw.w_ih,
                        da_r,
                        &st.x[row * in_size..(row + 1) * in_size],
                    );
                    outer_acc(&mut gw.w_hh, dr_r, &st.h_prev[row * h..(row + 1) * h]);
                    let o = (t * b_len + b) * in_size;
                    matvec_t_acc(&mut d_in[o..o + in_size], &cw.w_ih, da_r);
                    dh[b].fill(0.0);
                    matvec_t_acc(&mut dh[b], &cw.w_hh, dr_r);
                    dc[b].copy_from_slice(&dc_prev[row * h..(row + 1) * h]);
                }
            }
            for b in 0..b_len {
                let o = (ci * b_len + b) * h;
                gh0[o..o + h].copy_from_slice(&dh[b]);
                gc0[o..o + h].copy_from_slice(&dc[b]);
            }
        }
        if links.skips(k) {
            add_assign(&mut d_in, &d_next);
        }
        if k > 0 {
            d_out = std::mem::take(&mut d_in);
        }
    }
    RefGrads {
        input: d_in,
        h0: gh0,
        c0: gc0,
        weights: RefWeights { cells },
    }
}
