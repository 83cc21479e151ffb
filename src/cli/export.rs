//! `lstm-wgpu export`: a checkpoint's weights as a PyTorch state_dict, or
//! the model as an ONNX file.

use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::infer::Checkpoint;
use lstm_wgpu::run::checkpoint::load_checkpoint;
use std::path::PathBuf;

/// Arguments of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The format: pytorch (the state_dict of the README's `LstmWgpu`
    /// module, as safetensors, and a JSON file beside it) or onnx (the
    /// model for inference, standard operators, opset 14).
    #[arg(long, value_parser = ["pytorch", "onnx"])]
    pub to: String,
    /// The file to write: the state_dict (`.safetensors`; the JSON with
    /// sizes, normaliser or vocabulary goes to the same path with
    /// `.json`), or the ONNX model (`.onnx`).
    pub out: PathBuf,
}

/// Runs `export`: the output paths are checked and the checkpoint read and
/// converted before any file is written.
pub fn export(a: &ExportArgs) -> Result<()> {
    let inputs = [a.checkpoint.as_path()];
    if a.to == "onnx" {
        lstm_wgpu::io::check_output(&a.out, "OUT", &inputs)?;
        let l = load_checkpoint(&a.checkpoint)?;
        let bytes = Checkpoint::from_file(&l.file)?.onnx()?;
        lstm_wgpu::io::write_atomic(&a.out, &bytes)?;
        eprintln!(
            "export: ONNX model (opset {}, {} bytes) to {}",
            lstm_wgpu::infer::onnx::OPSET,
            bytes.len(),
            a.out.display()
        );
        return Ok(());
    }
    let json = a.out.with_extension("json");
    if json == a.out {
        return Err(Error::file(
            &a.out,
            "OUT ends in .json, the name of the JSON file beside it; name it .safetensors",
        ));
    }
    lstm_wgpu::io::check_output(&a.out, "OUT", &inputs)?;
    lstm_wgpu::io::check_output(&json, "OUT's JSON", &inputs)?;
    let l = load_checkpoint(&a.checkpoint)?;
    let (tensors, counters, text) = Checkpoint::from_file(&l.file)?.pytorch()?;
    lstm_wgpu::io::write_with_counters(&a.out, &tensors, &counters, None)?;
    lstm_wgpu::io::write_atomic(&json, text.as_bytes())?;
    eprintln!(
        "export: {} tensors to {}, sizes and {} to {}",
        tensors.len() + counters.len(),
        a.out.display(),
        if l.vocab.is_some() {
            "vocabulary"
        } else {
            "normaliser"
        },
        json.display()
    );
    Ok(())
}
