//! `lstm-wgpu generate`: text sampled from a text checkpoint.

use crate::cli::env::{host_budget, open_gpu, size_limits};
use lstm_wgpu::Model;
use lstm_wgpu::data::Vocab;
use lstm_wgpu::error::{Error, Result, num};
use lstm_wgpu::infer::Checkpoint;
use lstm_wgpu::infer::Sampling;
use lstm_wgpu::run::checkpoint::load_checkpoint;
use lstm_wgpu::run::data::net_with;
use lstm_wgpu::run::settings::describe_data;
use lstm_wgpu::train::Head;
use std::path::PathBuf;

/// Arguments of `generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A text checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to start from (its characters must be in the vocabulary).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 200)]
    pub length: usize,
    /// Softmax temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample only among the k most likely characters (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `generate`: prints the prompt and the sampled continuation.
pub fn generate(a: &GenerateArgs, verbose: bool) -> Result<()> {
    if !(a.temperature > 0.0 && a.temperature.is_finite()) {
        return Err(Error::Invalid(format!(
            "--temperature {}: expected a positive number",
            num(a.temperature)
        )));
    }
    let l = load_checkpoint(&a.checkpoint)?;
    let vocab = l.vocab.clone().ok_or_else(|| {
        Error::file(
            &a.checkpoint,
            format!(
                "a {} checkpoint on {}: generate samples from text checkpoints trained on text",
                l.config.task,
                describe_data(&l.config)
            ),
        )
    })?;
    let c = l.config.clone();
    let net = net_with(
        &c,
        Head::Language {
            vocab: vocab.len(),
            embed: c.embed,
        },
    )?;
    net.check_size(1, 1, &size_limits(None))?;
    let ck = Checkpoint::from_file(&l.file)?;
    // The prompt's characters are checked before the GPU opens.
    vocab.encode(&a.prompt)?;
    check_length(a, &vocab)?;
    let ctx = open_gpu(verbose)?;
    let mut model = Model::new(ctx, ck);
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
    };
    // The text streams out as it is sampled (a line, or 64 bytes, at a
    // time): memory does not grow with --length, and `| head` stops it.
    let mut out = a.prompt.clone();
    model.generate_with(&a.prompt, a.length, &sampling, |c| {
        out.push_str(c);
        if out.len() >= 64 || out.ends_with('\n') {
            crate::cli::out::text(&out)?;
            out.clear();
        }
        Ok(())
    })?;
    crate::cli::out::line(out)?;
    Ok(())
}

/// Refuses a `--length` whose text (the prompt and `--length` characters
/// of the vocabulary's longest UTF-8 form) would exceed the host budget.
/// The text is streamed, not held, but a length past any output the
/// machine could take is a mistake to refuse at once, not to run for days.
pub(crate) fn check_length(a: &GenerateArgs, vocab: &Vocab) -> Result<()> {
    let widest = vocab.chars.iter().map(|c| c.len_utf8()).max().unwrap_or(4);
    let bytes = (a.length as u128)
        .saturating_mul(widest as u128)
        .saturating_add(a.prompt.len() as u128 + 1);
    let budget = host_budget();
    if bytes > budget as u128 {
        return Err(Error::Invalid(format!(
            "--length {}: the text would take up to {bytes} bytes, over the host budget of \
             {budget} bytes; generate less",
            a.length
        )));
    }
    Ok(())
}
