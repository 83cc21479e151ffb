//! Normalization primitives: LayerNorm over rows, BatchNorm over a batch
//! (train and eval mode) and their backward, on `[n, f]` blocks.

use super::{BN_MOMENTUM, NORM_EPS, NormTensors};
use crate::linalg::add_assign;

/// How a `[n, f]` block was normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    /// LayerNorm: statistics per row (over the `f` features).
    Row,
    /// BatchNorm train mode: statistics per feature (over the `n` rows).
    BatchTrain,
    /// BatchNorm eval mode: fixed affine map per feature.
    BatchEval,
}

/// Cache of one normalization of a `[n, f]` block.
pub(super) struct Normed {
    n: usize,
    f: usize,
    axis: Axis,
    /// Output `[n, f]`.
    pub(super) y: Vec<f64>,
    /// Normalized values before the affine map, `[n, f]`.
    xhat: Vec<f64>,
    /// `1/sqrt(var + eps)`: per row (`Row`) or per feature (batch).
    inv_std: Vec<f64>,
}

/// LayerNorm of every row of `x: [n, f]` with weight `w` and bias `b`.
pub(super) fn layer_norm_rows(
    x: &[f64],
    n: usize,
    f: usize,
    w: &[f64],
    b: Option<&[f64]>,
) -> Normed {
    let mut xhat = vec![0.0; n * f];
    let mut inv_std = vec![0.0; n];
    for r in 0..n {
        let row = &x[r * f..(r + 1) * f];
        let mu = row.iter().sum::<f64>() / f as f64;
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / f as f64;
        let is = 1.0 / (var + NORM_EPS).sqrt();
        inv_std[r] = is;
        for j in 0..f {
            xhat[r * f + j] = (row[j] - mu) * is;
        }
    }
    let y = affine(&xhat, n, f, w, b);
    Normed {
        n,
        f,
        axis: Axis::Row,
        y,
        xhat,
        inv_std,
    }
}

/// BatchNorm of `x: [n, f]` over its rows. Train mode computes the batch
/// statistics and updates the running rows `rm`, `rv` (`[f]` each); eval mode
/// uses them. `what` names the norm in the error for `n < 2` in train mode.
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_norm(
    x: &[f64],
    n: usize,
    f: usize,
    gamma: &[f64],
    beta: Option<&[f64]>,
    train: bool,
    rm: &mut [f64],
    rv: &mut [f64],
    what: &dyn Fn() -> String,
) -> Result<Normed, String> {
    let mut xhat = vec![0.0; n * f];
    let mut inv_std = vec![0.0; f];
    if train {
        if n < 2 {
            return Err(format!(
                "Expected more than 1 value per channel when training, got input size [{n}, {f}] ({})",
                what()
            ));
        }
        for j in 0..f {
            let mu = (0..n).map(|r| x[r * f + j]).sum::<f64>() / n as f64;
            let var = (0..n)
                .map(|r| (x[r * f + j] - mu) * (x[r * f + j] - mu))
                .sum::<f64>()
                / n as f64;
            let is = 1.0 / (var + NORM_EPS).sqrt();
            inv_std[j] = is;
            for r in 0..n {
                xhat[r * f + j] = (x[r * f + j] - mu) * is;
            }
            rm[j] = (1.0 - BN_MOMENTUM) * rm[j] + BN_MOMENTUM * mu;
            rv[j] = (1.0 - BN_MOMENTUM) * rv[j] + BN_MOMENTUM * var * n as f64 / (n - 1) as f64;
        }
    } else {
        for j in 0..f {
            let is = 1.0 / (rv[j] + NORM_EPS).sqrt();
            inv_std[j] = is;
            for r in 0..n {
                xhat[r * f + j] = (x[r * f + j] - rm[j]) * is;
            }
        }
    }
    let y = affine(&xhat, n, f, gamma, beta);
    Ok(Normed {
        n,
        f,
        axis: if train {
            Axis::BatchTrain
        } else {
            Axis::BatchEval
        },
        y,
        xhat,
        inv_std,
    })
}

/// `y = xhat * w + b` per feature.
pub(super) fn affine(xhat: &[f64], n: usize, f: usize, w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; n * f];
    for r in 0..n {
        for j in 0..f {
            y[r * f + j] = xhat[r * f + j] * w[j] + b.map_or(0.0, |b| b[j]);
        }
    }
    y
}

/// Backward of a normalization given `dy: [n, f]` and the weight `gamma`.
/// Returns `(dx, dgamma, dbeta)`.
pub(super) fn norm_backward(
    nm: &Normed,
    dy: &[f64],
    gamma: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, f) = (nm.n, nm.f);
    assert_eq!(dy.len(), n * f);
    let mut dgamma = vec![0.0; f];
    let mut dbeta = vec![0.0; f];
    let mut dxhat = vec![0.0; n * f];
    for r in 0..n {
        for j in 0..f {
            let q = r * f + j;
            dgamma[j] += dy[q] * nm.xhat[q];
            dbeta[j] += dy[q];
            dxhat[q] = dy[q] * gamma[j];
        }
    }
    let mut dx = vec![0.0; n * f];
    match nm.axis {
        Axis::Row => {
            for r in 0..n {
                let idx = || (0..f).map(|j| r * f + j);
                let m1 = idx().map(|q| dxhat[q]).sum::<f64>() / f as f64;
                let m2 = idx().map(|q| dxhat[q] * nm.xhat[q]).sum::<f64>() / f as f64;
                for q in idx() {
                    dx[q] = nm.inv_std[r] * (dxhat[q] - m1 - nm.xhat[q] * m2);
                }
            }
        }
        Axis::BatchTrain => {
            for j in 0..f {
                let idx = || (0..n).map(|r| r * f + j);
                let m1 = idx().map(|q| dxhat[q]).sum::<f64>() / n as f64;
                let m2 = idx().map(|q| dxhat[q] * nm.xhat[q]).sum::<f64>() / n as f64;
                for q in idx() {
                    dx[q] = nm.inv_std[j] * (dxhat[q] - m1 - nm.xhat[q] * m2);
                }
            }
        }
        Axis::BatchEval => {
            for r in 0..n {
                for j in 0..f {
                    dx[r * f + j] = dxhat[r * f + j] * nm.inv_std[j];
                }
            }
        }
    }
    (dx, dgamma, dbeta)
}

/// BatchNorm using running-stat row `row` of `{base}.running_mean|running_var`
/// (`[T_max or 1, f]`) from `running`.
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_norm_running(
    running: &mut NormTensors,
    base: &str,
    row: usize,
    x: &[f64],
    n: usize,
    f: usize,
    gamma: &[f64],
    beta: Option<&[f64]>,
    train: bool,
    what: &dyn Fn() -> String,
) -> Result<Normed, String> {
    let (mk, vk) = (
        format!("{base}.running_mean"),
        format!("{base}.running_var"),
    );
    let mut rm = running.remove(&mk).expect("validated running_mean");
    let mut rv = running.remove(&vk).expect("validated running_var");
    let res = batch_norm(
        x,
        n,
        f,
        gamma,
        beta,
        train,
        &mut rm[row * f..(row + 1) * f],
        &mut rv[row * f..(row + 1) * f],
        what,
    );
    running.insert(mk, rm);
    running.insert(vk, rv);
    res
}

pub(super) fn acc(map: &mut NormTensors, name: &str, g: &[f64]) {
    let dst = map.get_mut(name).expect("gradient slot of a Param tensor");
    add_assign(dst, g);
}
