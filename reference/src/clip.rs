//! Gradient clipping as `torch.nn.utils` does it.

/// Euclidean norm of one gradient tensor (per-tensor norms for monitoring).
pub fn grad_norm(g: &[f64]) -> f64 {
    g.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (norm type 2) over every
/// listed gradient: `total = sqrt(Σ g²)`, `scale = min(1, max_norm / (total + 1e-6))`,
/// every gradient `*= scale`. Returns `total` (before clipping).
///
/// When `total` is not finite (NaN/Inf gradients) the gradients are left
/// untouched and the non-finite total is returned for the caller to report.
pub fn clip_grad_norm(grads: &mut [&mut [f64]], max_norm: f64) -> f64 {
    let total = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    if !total.is_finite() {
        return total;
    }
    let scale = max_norm / (total + 1e-6);
    if scale < 1.0 {
        for g in grads.iter_mut() {
            for v in g.iter_mut() {
                *v *= scale;
            }
        }
    }
    total
}

/// `torch.nn.utils.clip_grad_value_`: clamps every gradient to `[-v, v]`
/// (NaN stays NaN).
pub fn clip_grad_value(grads: &mut [&mut [f64]], v: f64) {
    for g in grads.iter_mut() {
        for x in g.iter_mut() {
            *x = x.clamp(-v, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        // Above max_norm: scaled to max_norm * total / (total + 1e-6).
        let mut a = vec![3.0, 0.0];
        let mut b = vec![-4.0];
        let total = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert_eq!(total, 5.0);
        let after = (a[0] * a[0] + b[0] * b[0]).sqrt();
        assert!((after - 5.0 / (5.0 + 1e-6)).abs() < 1e-15);
        assert!((after - 1.0).abs() < 1e-6);
        assert!((a[0] / b[0] + 0.75).abs() < 1e-15 && a[1] == 0.0);
        assert!((grad_norm(&a) - 0.6).abs() < 1e-6);
        // Below (or at) max_norm: unchanged, bit for bit.
        let (mut a, mut b) = (vec![0.3, -0.1], vec![0.2]);
        let (a0, b0) = (a.clone(), b.clone());
        let total = clip_grad_norm(&mut [&mut a, &mut b], 10.0);
        assert!((total - (0.14f64).sqrt()).abs() < 1e-15);
        assert_eq!((a, b), (a0, b0));
        // Non-finite: reported, gradients untouched.
        let mut n = vec![1.0, f64::NAN];
        assert!(clip_grad_norm(&mut [&mut n], 1.0).is_nan());
        assert_eq!(n[0], 1.0);
        let mut inf = vec![f64::INFINITY, 2.0];
        assert_eq!(clip_grad_norm(&mut [&mut inf], 1.0), f64::INFINITY);
        assert_eq!(inf[1], 2.0);
        // Clip by value.
        let (mut a, mut b) = (vec![-3.0, 0.5, 2.0], vec![0.0, -0.25]);
        clip_grad_value(&mut [&mut a, &mut b], 1.0);
        assert_eq!(a, vec![-1.0, 0.5, 1.0]);
        assert_eq!(b, vec![0.0, -0.25]);
    }
}
