//! Variants 1, 3 and 4: each layer through the plain reference, its output
//! normalized before the next layer reads it.

use super::ops::{Normed, acc, batch_norm_running, layer_norm_rows, norm_backward};
use super::{Layers, NormTensors, RefNorm, Trace};
use crate::linalg::add_assign;
use crate::lstm::zero_grads;
use crate::{RefConfig, RefGrads, RefInputs, RefLinks, RefOutputs, RefUpstream, RefWeights};

/// A set of rows `(t, b)` of a layer output normalized together.
struct Group {
    rows: Vec<(usize, usize)>,
    nm: Normed,
}

/// One layer of a between-layer variant.
pub(super) struct BetweenLayer {
    /// Input of the layer `[T, B, I_k]`.
    input: Vec<f64>,
    /// Normalization of its output, `None` when not normalized.
    groups: Option<Vec<Group>>,
}

/// One-layer configuration, weights and inputs of layer `k` reading `x`.
fn sub_layer(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    k: usize,
    x: Vec<f64>,
    lengths: &[usize],
) -> (RefConfig, RefWeights, RefInputs) {
    let d = cfg.dirs();
    let sl = d * inp.batch * cfg.hidden_size;
    let c1 = RefConfig {
        input_size: cfg.layer_input_size(k),
        hidden_size: cfg.hidden_size,
        num_layers: 1,
        bidirectional: cfg.bidirectional,
        bias: cfg.bias,
        cell: cfg.cell,
    };
    let w1 = RefWeights {
        cells: w.cells[k * d..(k + 1) * d].to_vec(),
    };
    let slice = |s: &Option<Vec<f64>>| s.as_ref().map(|v| v[k * sl..(k + 1) * sl].to_vec());
    let i1 = RefInputs {
        seq_len: inp.seq_len,
        batch: inp.batch,
        x,
        h0: slice(&inp.h0),
        c0: slice(&inp.c0),
        lengths: Some(lengths.to_vec()),
    };
    (c1, w1, i1)
}

/// Gathers rows `(t, b)` of a `[T, B, f]` tensor into `[n, f]`.
fn gather(src: &[f64], rows: &[(usize, usize)], b_len: usize, f: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * f);
    for &(t, b) in rows {
        let o = (t * b_len + b) * f;
        out.extend_from_slice(&src[o..o + f]);
    }
    out
}

/// Scatters `[n, f]` rows back to `(t, b)` positions of a `[T, B, f]` tensor.
fn scatter(dst: &mut [f64], rows: &[(usize, usize)], vals: &[f64], b_len: usize, f: usize) {
    for (r, &(t, b)) in rows.iter().enumerate() {
        let o = (t * b_len + b) * f;
        dst[o..o + f].copy_from_slice(&vals[r * f..(r + 1) * f]);
    }
}

/// Normalization of layer `k`'s raw output `o: [T, B, D*H]` (variants 1, 3, 4).
#[allow(clippy::too_many_arguments)]
fn normalize_between(
    cfg: &RefConfig,
    norm: RefNorm,
    k: usize,
    o: &[f64],
    inp: &RefInputs,
    lengths: &[usize],
    nt: &NormTensors,
    running: &mut NormTensors,
    train: bool,
) -> Result<Vec<Group>, String> {
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let dh = cfg.dirs() * cfg.hidden_size;
    let p = format!(
        "{}.{k}",
        norm.between_prefix().expect("between-layer variant")
    );
    let gamma = &nt[format!("{p}.weight").as_str()];
    let beta = Some(nt[format!("{p}.bias").as_str()].as_slice());
    let valid_at = |t: usize| -> Vec<(usize, usize)> {
        (0..b_len)
            .filter(|&b| t < lengths[b])
            .map(|b| (t, b))
            .collect()
    };
    let mut groups = Vec::new();
    match norm {
        RefNorm::Layer { .. } => {
            let rows: Vec<_> = (0..t_len).flat_map(valid_at).collect();
            let x = gather(o, &rows, b_len, dh);
            let nm = layer_norm_rows(&x, rows.len(), dh, gamma, beta);
            groups.push(Group { rows, nm });
        }
        RefNorm::Batch { .. } => {
            let rows: Vec<_> = (0..t_len).flat_map(valid_at).collect();
            let x = gather(o, &rows, b_len, dh);
            let what = || format!("{p} over all valid positions");
            let nm = batch_norm_running(
                running,
                &p,
                0,
                &x,
                rows.len(),
                dh,
                gamma,
                beta,
                train,
                &what,
            )?;
            if train && let Some(c) = running.get_mut(&format!("{p}.num_batches_tracked")) {
                c[0] += 1.0;
            }
            groups.push(Group { rows, nm });
        }
        RefNorm::StepBatch { t_max, .. } => {
            for t in 0..t_len {
                let rows = valid_at(t);
                if rows.is_empty() {
                    continue;
                }
                let x = gather(o, &rows, b_len, dh);
                let row = if train { t } else { t.min(t_max - 1) };
                let what = || format!("{p} at time step {t}");
                let nm = batch_norm_running(
                    running,
                    &p,
                    row,
                    &x,
                    rows.len(),
                    dh,
                    gamma,
                    beta,
                    train,
                    &what,
                )?;
                groups.push(Group { rows, nm });
            }
        }
        RefNorm::LayerCell | RefNorm::RecurrentBatch { .. } => unreachable!("cell variant"),
    }
    Ok(groups)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward_between(
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
    let b_len = inp.batch;
    let dh = cfg.dirs() * cfg.hidden_size;
    let sl = cfg.dirs() * b_len * cfg.hidden_size;
    let mut h_n = vec![0.0; cfg.num_layers * sl];
    let mut c_n = vec![0.0; cfg.num_layers * sl];
    let mut layers = Vec::with_capacity(cfg.num_layers);
    let mut cur = inp.x.clone();
    for k in 0..cfg.num_layers {
        let (c1, w1, i1) = sub_layer(cfg, w, inp, k, cur.clone(), &lengths);
        let o = crate::forward(&c1, &w1, &i1);
        h_n[k * sl..(k + 1) * sl].copy_from_slice(&o.h_n);
        c_n[k * sl..(k + 1) * sl].copy_from_slice(&o.c_n);
        let (next, groups) = if norm.normalizes_layer_output(cfg, k) {
            let groups = normalize_between(
                cfg,
                norm,
                k,
                &o.output,
                inp,
                &lengths,
                nt,
                &mut running,
                train,
            )?;
            // Padded positions stay 0.
            let mut next = vec![0.0; o.output.len()];
            for g in &groups {
                scatter(&mut next, &g.rows, &g.nm.y, b_len, dh);
            }
            (next, Some(groups))
        } else {
            (o.output, None)
        };
        let next = links.forward(k, next, &cur);
        layers.push(BetweenLayer { input: cur, groups });
        cur = next;
    }
    Ok(Trace {
        lengths,
        out: RefOutputs {
            output: cur,
            h_n,
            c_n,
        },
        running,
        layers: Layers::Between(layers),
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward_between(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    up: &RefUpstream,
    tr: &Trace,
    layers: &[BetweenLayer],
    ng: &mut NormTensors,
    links: &RefLinks,
) -> RefGrads {
    let b_len = inp.batch;
    let d_n = cfg.dirs();
    let dh = d_n * cfg.hidden_size;
    let sl = d_n * b_len * cfg.hidden_size;
    let mut gh0 = vec![0.0; cfg.num_layers * sl];
    let mut gc0 = vec![0.0; cfg.num_layers * sl];
    let mut cells = zero_grads(w);
    let mut d = up.grad_output.clone();
    for k in (0..cfg.num_layers).rev() {
        // d_next: gradient of y_{k+1}; d: of layer k's (normalized) output.
        let d_next = d;
        d = links.backward(k, &d_next);
        if let Some(groups) = &layers[k].groups {
            let p = format!(
                "{}.{k}",
                norm.between_prefix().expect("between-layer variant")
            );
            let gamma = &nt[format!("{p}.weight").as_str()];
            // Padded positions of a normalized output are constant 0.
            let mut nd = vec![0.0; d.len()];
            for g in groups {
                let dy = gather(&d, &g.rows, b_len, dh);
                let (dx, dgamma, dbeta) = norm_backward(&g.nm, &dy, gamma);
                scatter(&mut nd, &g.rows, &dx, b_len, dh);
                acc(ng, &format!("{p}.weight"), &dgamma);
                acc(ng, &format!("{p}.bias"), &dbeta);
            }
            d = nd;
        }
        let (c1, w1, i1) = sub_layer(cfg, w, inp, k, layers[k].input.clone(), &tr.lengths);
        let up1 = RefUpstream {
            grad_output: d,
            grad_h_n: up.grad_h_n[k * sl..(k + 1) * sl].to_vec(),
            grad_c_n: up.grad_c_n[k * sl..(k + 1) * sl].to_vec(),
        };
        let (_, g1) = crate::backward(&c1, &w1, &i1, &up1);
        gh0[k * sl..(k + 1) * sl].copy_from_slice(&g1.h0);
        gc0[k * sl..(k + 1) * sl].copy_from_slice(&g1.c0);
        for (dir, gc) in g1.weights.cells.into_iter().enumerate() {
            cells[k * d_n + dir] = gc;
        }
        d = g1.input;
        if links.skips(k) {
            add_assign(&mut d, &d_next);
        }
    }
    RefGrads {
        input: d,
        h0: gh0,
        c0: gc0,
        weights: RefWeights { cells },
    }
}
