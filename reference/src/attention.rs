//! f64 reference of the attention head over a stack's outputs (the
//! trainer's `--head attention`): pooling of the valid positions of each
//! sequence, then a linear head on `[context; h_T]` and its mean squared
//! error, forward and backward.
//!
//! With `h_t` the output `[W]` (W = D·S) of sequence b at time t, `L_b` its
//! length and `h_T = h_{L_b − 1}` its last valid output:
//!
//! ```text
//! s_t = h_t · h_T          (RefScore::Dot)
//! s_t = q · h_t            (RefScore::Learned, q: [W])
//! a_t = exp(s_t) / Σ_{u < L_b} exp(s_u),   t < L_b   (0 for t ≥ L_b)
//! c   = Σ_{t < L_b} a_t h_t
//! y   = W_head [c; h_T] + b_head            (W_head: [O, 2W])
//! ```
//!
//! Backward, from `dc` and the direct `dh_T` (the two halves of
//! `W_headᵀ dy`): `da_t = dc · h_t`, `ds_t = a_t (da_t − Σ_u a_u da_u)`,
//! `dh_t = a_t dc + ds_t k` with `k = h_T` (dot) or `q` (learned), and
//! `dh_T += dh_T(direct) + Σ_t ds_t h_t` (dot: the key is `h_T` too) or
//! `dq = Σ_b Σ_t ds_t h_t` (learned).
//!
//! Tensors are flat row-major: outputs `[T, B, W]` time-major as the stack
//! returns them, weights `[B, T]`, features `[B, 2W]`.

use crate::linalg::{dot, matvec_acc, matvec_t_acc, outer_acc};

/// How the scores are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefScore {
    /// `s_t = h_t · h_T`.
    Dot,
    /// `s_t = q · h_t` with a trained query `q`.
    Learned,
}

/// Shape of the pooled outputs: `T`, `B`, `W` and the lengths (each in
/// `1..=T`).
#[derive(Clone, Debug)]
pub struct RefPoolShape {
    /// Padded length T.
    pub seq_len: usize,
    /// Batch B.
    pub batch: usize,
    /// Width W of each output.
    pub width: usize,
    /// Valid steps per sequence; all T when `None`.
    pub lengths: Option<Vec<usize>>,
}

impl RefPoolShape {
    fn len(&self, b: usize) -> usize {
        let l = self.lengths.as_ref().map_or(self.seq_len, |l| l[b]);
        assert!(
            (1..=self.seq_len).contains(&l),
            "length {l} of sequence {b} outside 1..={}",
            self.seq_len
        );
        l
    }

    fn row<'a>(&self, h: &'a [f64], t: usize, b: usize) -> &'a [f64] {
        let w = self.width;
        &h[(t * self.batch + b) * w..(t * self.batch + b + 1) * w]
    }
}

/// What the pooling gives.
#[derive(Clone, Debug)]
pub struct RefPooled {
    /// Attention weights `[B, T]`, 0 at padded positions.
    pub weights: Vec<f64>,
    /// The head's input `[B, 2W]`: context, then `h_T`.
    pub features: Vec<f64>,
}

/// The parameters of the attention head.
#[derive(Clone, Debug)]
pub struct RefAttentionHead {
    /// The score.
    pub score: RefScore,
    /// Query `[W]` (learned scores; ignored by dot scores).
    pub query: Vec<f64>,
    /// `head.weight` `[O, 2W]`.
    pub weight: Vec<f64>,
    /// `head.bias` `[O]`.
    pub bias: Vec<f64>,
}

/// Gradients of the attention head's loss.
#[derive(Clone, Debug)]
pub struct RefHeadGrads {
    /// Gradient w.r.t. the stack's outputs `[T, B, W]` (0 at padded
    /// positions): the `grad_output` of the stack's backward.
    pub output: Vec<f64>,
    /// Gradient w.r.t. the query `[W]` (zeros for dot scores).
    pub query: Vec<f64>,
    /// Gradient w.r.t. `head.weight`.
    pub weight: Vec<f64>,
    /// Gradient w.r.t. `head.bias`.
    pub bias: Vec<f64>,
}

/// The key each score multiplies: `h_T` or `q`.
fn key<'a>(score: RefScore, query: &'a [f64], last: &'a [f64]) -> &'a [f64] {
    match score {
        RefScore::Dot => last,
        RefScore::Learned => query,
    }
}

/// Attention pooling of the outputs `h` `[T, B, W]`.
pub fn attention_pool(score: RefScore, query: &[f64], h: &[f64], s: &RefPoolShape) -> RefPooled {
    let (t_len, b_len, w) = (s.seq_len, s.batch, s.width);
    assert_eq!(h.len(), t_len * b_len * w, "outputs shape");
    if score == RefScore::Learned {
        assert_eq!(query.len(), w, "query shape");
    }
    let mut weights = vec![0.0; b_len * t_len];
    let mut features = vec![0.0; b_len * 2 * w];
    for b in 0..b_len {
        let n = s.len(b);
        let last = s.row(h, n - 1, b);
        let k = key(score, query, last);
        let scores: Vec<f64> = (0..n).map(|t| dot(s.row(h, t, b), k)).collect();
        let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let f = &mut features[b * 2 * w..(b + 1) * 2 * w];
        for t in 0..n {
            let a = e[t] / sum;
            weights[b * t_len + t] = a;
            for (c, x) in f[..w].iter_mut().zip(s.row(h, t, b)) {
                *c += a * x;
            }
        }
        f[w..].copy_from_slice(last);
    }
    RefPooled { weights, features }
}

/// Backward of [`attention_pool`] from the gradient `d_features` `[B, 2W]`:
/// the gradients w.r.t. the outputs `[T, B, W]` and the query `[W]`.
pub fn attention_pool_backward(
    score: RefScore,
    query: &[f64],
    h: &[f64],
    s: &RefPoolShape,
    pooled: &RefPooled,
    d_features: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (t_len, b_len, w) = (s.seq_len, s.batch, s.width);
    assert_eq!(d_features.len(), b_len * 2 * w, "d_features shape");
    let mut dh = vec![0.0; h.len()];
    let mut dq = vec![0.0; w];
    for b in 0..b_len {
        let n = s.len(b);
        let last = s.row(h, n - 1, b);
        let k = key(score, query, last);
        let a = &pooled.weights[b * t_len..b * t_len + n];
        let dz = &d_features[b * 2 * w..(b + 1) * 2 * w];
        let (dc, dlast) = dz.split_at(w);
        let da: Vec<f64> = (0..n).map(|t| dot(dc, s.row(h, t, b))).collect();
        let mean: f64 = a.iter().zip(&da).map(|(x, y)| x * y).sum();
        let ds: Vec<f64> = a.iter().zip(&da).map(|(x, y)| x * (y - mean)).collect();
        // Σ_t ds_t h_t: the key's gradient (h_T's, or the query's).
        let mut dk = vec![0.0; w];
        for t in 0..n {
            let row = s.row(h, t, b);
            let d = &mut dh[(t * b_len + b) * w..(t * b_len + b + 1) * w];
            for j in 0..w {
                d[j] += a[t] * dc[j] + ds[t] * k[j];
                dk[j] += ds[t] * row[j];
            }
        }
        let d = &mut dh[((n - 1) * b_len + b) * w..((n - 1) * b_len + b + 1) * w];
        for j in 0..w {
            d[j] += dlast[j];
        }
        match score {
            RefScore::Dot => {
                for j in 0..w {
                    d[j] += dk[j];
                }
            }
            RefScore::Learned => {
                for j in 0..w {
                    dq[j] += dk[j];
                }
            }
        }
    }
    (dh, dq)
}

/// The head's predictions `[B, O]` and the pooling.
pub fn attention_head(p: &RefAttentionHead, h: &[f64], s: &RefPoolShape) -> (RefPooled, Vec<f64>) {
    let pooled = attention_pool(p.score, &p.query, h, s);
    let o = p.bias.len();
    assert_eq!(p.weight.len(), o * 2 * s.width, "head.weight shape");
    let mut y = Vec::with_capacity(s.batch * o);
    for z in pooled.features.chunks_exact(2 * s.width) {
        let mut r = p.bias.clone();
        matvec_acc(&mut r, &p.weight, z);
        y.extend(r);
    }
    (pooled, y)
}

/// The mean squared error of the head's predictions against `targets`
/// `[B, O]` (the mean over all B·O values, as the trainer's loss), and
/// its gradients.
pub fn attention_head_mse(
    p: &RefAttentionHead,
    h: &[f64],
    s: &RefPoolShape,
    targets: &[f64],
) -> (f64, RefHeadGrads) {
    let (pooled, y) = attention_head(p, h, s);
    assert_eq!(targets.len(), y.len(), "targets shape");
    let (o, w2) = (p.bias.len(), 2 * s.width);
    let n = y.len() as f64;
    let loss = y
        .iter()
        .zip(targets)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / n;
    let dy: Vec<f64> = y
        .iter()
        .zip(targets)
        .map(|(a, b)| 2.0 * (a - b) / n)
        .collect();
    let mut weight = vec![0.0; o * w2];
    let mut bias = vec![0.0; o];
    let mut dz = vec![0.0; s.batch * w2];
    for b in 0..s.batch {
        let g = &dy[b * o..(b + 1) * o];
        outer_acc(&mut weight, g, &pooled.features[b * w2..(b + 1) * w2]);
        for (x, v) in bias.iter_mut().zip(g) {
            *x += v;
        }
        matvec_t_acc(&mut dz[b * w2..(b + 1) * w2], &p.weight, g);
    }
    let (output, query) = attention_pool_backward(p.score, &p.query, h, s, &pooled, &dz);
    (
        loss,
        RefHeadGrads {
            output,
            query,
            weight,
            bias,
        },
    )
}
