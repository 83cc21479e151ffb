//! The small f64 linear algebra that the plain and the norm references share.

/// The logistic function.
pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `Σ a_i b_i`.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += x`.
pub(crate) fn add_assign(y: &mut [f64], x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// `y += W x` with `W: [y.len(), x.len()]`.
pub(crate) fn matvec_acc(y: &mut [f64], w: &[f64], x: &[f64]) {
    debug_assert_eq!(w.len(), y.len() * x.len());
    for (yi, row) in y.iter_mut().zip(w.chunks_exact(x.len())) {
        *yi += dot(row, x);
    }
}

/// `y += Wᵀ g` with `W: [g.len(), y.len()]`.
pub(crate) fn matvec_t_acc(y: &mut [f64], w: &[f64], g: &[f64]) {
    debug_assert_eq!(w.len(), y.len() * g.len());
    for (row, &gr) in w.chunks_exact(y.len()).zip(g) {
        for (yj, wj) in y.iter_mut().zip(row) {
            *yj += wj * gr;
        }
    }
}

/// `W += g xᵀ` with `W: [g.len(), x.len()]`.
pub(crate) fn outer_acc(w: &mut [f64], g: &[f64], x: &[f64]) {
    debug_assert_eq!(w.len(), g.len() * x.len());
    for (row, &gr) in w.chunks_exact_mut(x.len()).zip(g) {
        for (wj, xj) in row.iter_mut().zip(x) {
            *wj += gr * xj;
        }
    }
}
