//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod cases;
pub mod gpu;
pub mod parity;
pub mod rows;
pub mod tempdir;

use lstm_wgpu::{GpuContext, LstmConfig, NamedTensor};
use lstm_wgpu_reference::{RefConfig, RefWeights};
use std::sync::Arc;

/// A GPU context, or a panic with the error that says how to get an adapter
/// (GPU tests never skip).
pub fn ctx() -> Arc<GpuContext> {
    match GpuContext::new() {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("{e}"),
    }
}

/// Compares `got` with the reference `want`: max |a-b| / max |ref| must be
/// at most `tol`. On failure reports the worst index and the first values
/// that differ by more than the tolerance.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = (0f64, 0usize);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let e = (*a as f64 - b).abs();
        if e.is_nan() || e > worst.0 {
            worst = (if e.is_nan() { f64::INFINITY } else { e }, i);
        }
    }
    let rel = worst.0 / scale;
    if rel > tol {
        let diffs: Vec<String> = got
            .iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (a, b))| ((**a as f64) - **b).abs() / scale > tol)
            .take(5)
            .map(|(i, (a, b))| format!("[{i}] got {a} want {b}"))
            .collect();
        panic!(
            "{name}: max rel error {rel:.3e} > {tol:.0e} at index {} (scale {scale:.3e}); first differences: {}",
            worst.1,
            diffs.join(", ")
        );
    }
}

/// Reference weights as `nn.LSTM` (`nn.GRU`) state_dict tensors.
pub fn ref_to_tensors(cfg: &RefConfig, w: &RefWeights) -> Vec<NamedTensor> {
    let h = cfg.hidden_size;
    let engine = config(cfg);
    let cell = engine.cell;
    let whh_shape = match engine.proj() {
        Some(p) => vec![cell.gates() * h, p],
        None => cell.whh_shape(h),
    };
    let gh = cell.gates() * h;
    let mut v = Vec::new();
    for l in 0..cfg.num_layers {
        for d in 0..cfg.dirs() {
            let c = &w.cells[l * cfg.dirs() + d];
            let sfx = if d == 1 { "_reverse" } else { "" };
            let f = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            v.push(NamedTensor::new(
                format!("weight_ih_l{l}{sfx}"),
                vec![gh, cfg.layer_input_size(l)],
                f(&c.w_ih),
            ));
            v.push(NamedTensor::new(
                format!("weight_hh_l{l}{sfx}"),
                whh_shape.clone(),
                f(&c.w_hh),
            ));
            if let Some(hr) = &c.w_hr {
                v.push(NamedTensor::new(
                    format!("weight_hr_l{l}{sfx}"),
                    vec![cfg.state_size(), h],
                    f(hr),
                ));
            }
            if let (Some(bi), Some(bh)) = (&c.b_ih, &c.b_hh) {
                v.push(NamedTensor::new(
                    format!("bias_ih_l{l}{sfx}"),
                    vec![gh],
                    f(bi),
                ));
                v.push(NamedTensor::new(
                    format!("bias_hh_l{l}{sfx}"),
                    vec![gh],
                    f(bh),
                ));
            }
        }
    }
    v
}

/// Rounds reference values to f32 and back, so that the GPU and the
/// reference see exactly the same inputs.
pub fn round_f32(v: &mut [f64]) {
    for x in v {
        *x = *x as f32 as f64;
    }
}

/// The model configuration matching a reference configuration.
pub fn config(cfg: &RefConfig) -> LstmConfig {
    LstmConfig {
        input_size: cfg.input_size,
        hidden_size: cfg.hidden_size,
        num_layers: cfg.num_layers,
        bidirectional: cfg.bidirectional,
        bias: cfg.bias,
        cell: match cfg.cell {
            lstm_wgpu_reference::RefCellKind::Lstm => lstm_wgpu::Cell::Lstm,
            lstm_wgpu_reference::RefCellKind::Gru => lstm_wgpu::Cell::Gru,
            lstm_wgpu_reference::RefCellKind::IndRnn { act } => lstm_wgpu::Cell::IndRnn {
                relu: act == lstm_wgpu_reference::RefActivation::Relu,
            },
            lstm_wgpu_reference::RefCellKind::LstmProj { .. } => lstm_wgpu::Cell::Lstm,
        },
        proj_size: match cfg.cell {
            lstm_wgpu_reference::RefCellKind::LstmProj { proj_size } => proj_size,
            _ => 0,
        },
    }
}

/// Forces (or, with `None`, frees) the cell path of `l`, the rest of its
/// tuning kept; prepared plans are dropped.
pub fn set_path(l: &mut lstm_wgpu::Lstm, path: Option<lstm_wgpu::schedule::CellPath>) {
    let t = lstm_wgpu::Tuning {
        cell_path: path,
        ..*l.tuning()
    };
    l.set_tuning(t).unwrap_or_else(|e| panic!("{e}"));
}

/// Forces the per-step cell variant of `l` with the automatic tiles, the
/// rest of its tuning kept; prepared plans are dropped.
pub fn set_cell(l: &mut lstm_wgpu::Lstm, variant: lstm_wgpu::kernels::lstm_cell::CellVariant) {
    let t = lstm_wgpu::Tuning {
        cell: Some(variant),
        cell_tile: None,
        ..*l.tuning()
    };
    l.set_tuning(t).unwrap_or_else(|e| panic!("{e}"));
}

/// Sine windows: x [T, B, 1] and the next value of each window [B, 1].
pub fn sine_batch(step: usize, t: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = vec![0f32; t * b];
    let mut y = vec![0f32; b];
    for bb in 0..b {
        let ph = (step * b + bb) as f32 * 0.37;
        for tt in 0..t {
            x[tt * b + bb] = (ph + 0.5 * tt as f32).sin();
        }
        y[bb] = (ph + 0.5 * t as f32).sin();
    }
    (x, y)
}
