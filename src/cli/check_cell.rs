//! `lstm-wgpu check-cell`: a cell file's backward against central
//! differences of its forward, then a few training steps of it.

use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::run::choice::CellFile;
use lstm_wgpu::train::cell_check;
use std::path::PathBuf;

/// Arguments of `check-cell`.
#[derive(clap::Args, Debug)]
pub struct CheckCellArgs {
    /// The cell file (WGSL, in the form of `shaders/cells/*.wgsl`).
    pub path: PathBuf,
    /// Seed of the random inputs and of the training run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs the checks, printing each quantity's worst relative error and the
/// training losses; exit 1 (via `Error::CheckFailed`) when one fails.
pub fn run(a: &CheckCellArgs, verbose: bool) -> Result<()> {
    let f = CellFile::read(&a.path)?;
    let ctx = crate::cli::env::open_gpu(verbose)?;
    let out = crate::cli::out::line;
    out(format!(
        "check-cell {}: {} gates, {}, on {}",
        f.name,
        f.cell.gates(),
        match f.cell.has_c() {
            true => "state c and h",
            false => "state h",
        },
        ctx.info.name
    ))?;
    let grad = cell_check::grad_check(&ctx, f.cell, a.seed)?;
    out(format!(
        "gradients vs central differences (f32, {} points, step {} and {}; tolerance {:e}):",
        cell_check::UNITS,
        cell_check::DELTA,
        cell_check::DELTA / 2.0,
        cell_check::TOLERANCE
    ))?;
    for q in &grad.quantities {
        out(format!(
            "  {:<6} worst relative error {:.3e} over {} values{}{}  {}",
            q.name,
            q.worst,
            q.compared,
            match q.skipped {
                0 => String::new(),
                n => format!(", {n} not smooth"),
            },
            match q.nonfinite {
                0 => String::new(),
                n => format!(", {n} non-finite"),
            },
            if q.passed() { "ok" } else { "FAILED" }
        ))?;
    }
    if !grad.failures().is_empty() {
        // Training on a wrong gradient shows nothing more.
        out("training: skipped (the gradients are wrong)".to_string())?;
        return Err(Error::CheckFailed(grad.failures().join("; ")));
    }
    let train = cell_check::train_check(&ctx, f.cell, a.seed)?;
    let (head, tail) = train.ends();
    out(format!(
        "training ({} steps, sine, hidden 16): loss {head:.5} -> {tail:.5} (means of the first \
         and last 5)  {}",
        train.losses.len(),
        if train.failure().is_none() {
            "ok"
        } else {
            "FAILED"
        }
    ))?;
    cell_check::verdict(&grad, &train)?;
    out(format!("check-cell {}: passed", f.name))
}
