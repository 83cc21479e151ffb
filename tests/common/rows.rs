//! What the row-normalization kernel tests (`kernel_layer_norm.rs`,
//! `kernel_batch_norm.rs`) share: a [T, B, F] problem with per-sequence
//! lengths, the loss their CPU references differentiate, the
//! finite-difference check of those references, and the GPU buffers of a
//! case (tensors at offsets, padding holding garbage) with the checks of
//! what the backward writes into them.
#![allow(dead_code)]

use super::assert_close;
use super::gpu::{f32s, placed, rand, read, upload};
use lstm_wgpu::GpuContext;
use lstm_wgpu_reference::Rng;

/// A [T, B, F] problem with per-sequence lengths.
#[derive(Clone, Debug)]
pub struct Dims {
    pub t: usize,
    pub b: usize,
    pub f: usize,
    pub lengths: Vec<usize>,
}

impl Dims {
    pub fn new(t: usize, b: usize, f: usize, lengths: &[usize]) -> Self {
        assert_eq!(lengths.len(), b);
        Self {
            t,
            b,
            f,
            lengths: lengths.to_vec(),
        }
    }
    pub fn rows(&self) -> usize {
        self.t * self.b
    }
    pub fn n(&self) -> usize {
        self.rows() * self.f
    }
    pub fn valid(&self, row: usize) -> bool {
        row / self.b < self.lengths[row % self.b]
    }
}

pub fn lengths_u32(d: &Dims) -> Vec<u32> {
    d.lengths.iter().map(|&l| l as u32).collect()
}

/// Σ over valid rows of y·gy: the loss whose gradients the backward computes.
pub fn loss(d: &Dims, y: &[f64], gy: &[f64]) -> f64 {
    (0..d.n())
        .filter(|i| d.valid(i / d.f))
        .map(|i| y[i] * gy[i])
        .sum()
}

/// Central differences of `loss_of(v)` w.r.t. every index of `v` in `idx`,
/// against `analytic`.
pub fn fd_check(
    what: &str,
    v: &[f64],
    idx: impl Iterator<Item = usize>,
    analytic: &[f64],
    loss_of: impl Fn(&[f64]) -> f64,
) {
    let h = 1e-5;
    let mut p = v.to_vec();
    let scale = analytic.iter().fold(0f64, |m, a| m.max(a.abs())).max(1e-12);
    for i in idx {
        let v0 = p[i];
        p[i] = v0 + h;
        let lp = loss_of(&p);
        p[i] = v0 - h;
        let lm = loss_of(&p);
        p[i] = v0;
        let num = (lp - lm) / (2.0 * h);
        let err = (num - analytic[i]).abs() / scale;
        assert!(
            err < 1e-6,
            "{what}[{i}]: finite difference {num} vs analytic {}",
            analytic[i]
        );
    }
}

/// The problem the CPU references are checked on by finite differences:
/// drawn from `Rng::new(7)` (x, gy, w, b in that order; the generator is
/// returned for further draws).
pub struct FdProblem {
    pub d: Dims,
    pub x: Vec<f64>,
    pub gy: Vec<f64>,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    /// Indices of the valid rows' values.
    pub valid: Vec<usize>,
    pub rng: Rng,
}

impl FdProblem {
    pub fn new() -> Self {
        let mut rng = Rng::new(7);
        let d = Dims::new(4, 3, 5, &[4, 2, 3]);
        let x = rng.vec(d.n(), -1.0, 1.0);
        let gy = rng.vec(d.n(), -1.0, 1.0);
        let w = rng.vec(d.f, 0.5, 1.5);
        let b = rng.vec(d.f, -0.5, 0.5);
        let valid: Vec<usize> = (0..d.n()).filter(|i| d.valid(i / d.f)).collect();
        Self {
            d,
            x,
            gy,
            w,
            b,
            valid,
            rng,
        }
    }
}

/// Host inputs of a GPU case: x and dy of [T, B, F] in [-2, 2) and
/// [-1, 1) (padded rows hold garbage that must not matter), w in
/// [0.5, 1.5), b in [-0.5, 0.5), drawn in that order.
pub struct RowInputs {
    pub x: Vec<f64>,
    pub dy: Vec<f64>,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
}

impl RowInputs {
    pub fn draw(rng: &mut Rng, d: &Dims) -> Self {
        let (n, f) = (d.n(), d.f);
        let x = rand(rng, n, -2.0, 2.0);
        let dy = rand(rng, n, -1.0, 1.0);
        let w = rand(rng, f, 0.5, 1.5);
        let b = rand(rng, f, -0.5, 0.5);
        Self { x, dy, w, b }
    }
}

/// Element offsets of a GPU case's tensors in their buffers. In place, y
/// is x and dx is dy (and parameter gradients accumulate).
#[derive(Clone, Copy, Debug)]
pub struct Offsets {
    pub in_place: bool,
    pub x: usize,
    /// Where y goes out of place (the activation buffer ends past it).
    pub y_apart: usize,
    pub stats: usize,
    pub w: usize,
    pub b: usize,
    pub dw: usize,
    pub db: usize,
    pub dy: usize,
    pub dx: usize,
}

impl Offsets {
    pub fn new(d: &Dims, in_place: bool) -> Self {
        let (n, f) = (d.n(), d.f);
        Self {
            in_place,
            x: 3,
            y_apart: 3 + n + 5,
            stats: 2,
            w: 7,
            b: 7 + f + 2,
            dw: 5 + f + 1,
            db: 1,
            dy: 2,
            dx: if in_place { 2 } else { 4 },
        }
    }

    /// Where the forward writes y.
    pub fn y(&self) -> usize {
        if self.in_place { self.x } else { self.y_apart }
    }
}

/// The GPU buffers of a case (statistics and running statistics are the
/// kernel's own): x inside an activation buffer filled with 9, w and b
/// inside one filled with 5, the lengths, the gradient buffer holding
/// `g0`, dy inside one filled with 3, and (out of place) dx inside one
/// filled with 8.
pub struct RowBuffers {
    pub act: wgpu::Buffer,
    pub params: wgpu::Buffer,
    pub lengths: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub dy: wgpu::Buffer,
    dx_apart: Option<wgpu::Buffer>,
}

impl RowBuffers {
    pub fn new(ctx: &GpuContext, d: &Dims, o: &Offsets, h: &RowInputs, g0: &[f64]) -> Self {
        let (n, f) = (d.n(), d.f);
        let act = upload(ctx, "act", &placed(o.y_apart + n + 3, 9.0, &[(o.x, &h.x)]));
        let params = upload(
            ctx,
            "params",
            &placed(o.b + f + 1, 5.0, &[(o.w, &h.w), (o.b, &h.b)]),
        );
        let lengths = upload(ctx, "lengths", &lengths_u32(d));
        let grads = upload(ctx, "grads", &f32s(g0));
        let dy = upload(ctx, "dy", &placed(o.dy + n, 3.0, &[(o.dy, &h.dy)]));
        let dx_apart = (!o.in_place).then(|| upload(ctx, "dx", &vec![8.0f32; o.dx + n]));
        Self {
            act,
            params,
            lengths,
            grads,
            dy,
            dx_apart,
        }
    }

    /// The buffer dx goes to: dy's in place.
    pub fn dx(&self) -> &wgpu::Buffer {
        self.dx_apart.as_ref().unwrap_or(&self.dy)
    }

    /// After the forward: out of place, x must be untouched; in place, x
    /// is written back for the backward.
    pub fn check_x_and_restore(&self, ctx: &GpuContext, label: &str, o: &Offsets, x: &[f64]) {
        if o.in_place {
            ctx.write(&self.act, o.x, &f32s(x));
        } else {
            let got = read(ctx, &self.act, o.x, x.len());
            assert_close(&format!("{label}: x"), &got, x, 0.0);
        }
    }

    /// After the backward: dw and db at their offsets (added onto `g0` in
    /// place, replacing it out of place), and nothing else of the gradient
    /// buffer changed; each within `tol`.
    pub fn check_param_grads(
        &self,
        ctx: &GpuContext,
        label: &str,
        o: &Offsets,
        g0: &[f64],
        (want_dw, want_db): (&[f64], &[f64]),
        tol: f64,
    ) {
        let f = want_dw.len();
        let (dwo, dbo) = (o.dw, o.db);
        let mut want_g = g0.to_vec();
        for j in 0..f {
            let acc = if o.in_place { 1.0 } else { 0.0 };
            want_g[dwo + j] = acc * g0[dwo + j] + want_dw[j];
            want_g[dbo + j] = acc * g0[dbo + j] + want_db[j];
        }
        let g = read(ctx, &self.grads, 0, want_g.len());
        assert_close(
            &format!("{label}: dw"),
            &g[dwo..dwo + f],
            &want_g[dwo..dwo + f],
            tol,
        );
        assert_close(
            &format!("{label}: db"),
            &g[dbo..dbo + f],
            &want_g[dbo..dbo + f],
            tol,
        );
        assert_close(&format!("{label}: grads"), &g, &want_g, tol);
    }
}
