//! A tour of the library API: one forward pass and one forward+backward pass
//! of a 2-layer bidirectional LSTM on a small batch of variable-length
//! sequences, then the weights saved as a safetensors file.
//!
//! Run with `cargo run --example forward_backward`. Without a GPU, install
//! Mesa's lavapipe (`apt-get install -y mesa-vulkan-drivers libvulkan1`).

use lstm_wgpu::{Batch, GpuContext, Lstm, LstmConfig, LstmModel, Upstream};
use std::sync::Arc;

fn main() -> lstm_wgpu::Result<()> {
    // One context per process: adapter, device, queue and the adapter's
    // limits. `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` choose among several.
    let ctx = Arc::new(GpuContext::new()?);
    eprintln!("adapter: {}", ctx.describe());

    // nn.LSTM(input_size=4, hidden_size=8, num_layers=2, bidirectional=True).
    let cfg = LstmConfig {
        input_size: 4,
        hidden_size: 8,
        num_layers: 2,
        bidirectional: true,
        bias: true,
        cell: lstm_wgpu::Cell::Lstm,
        proj_size: 0,
    };
    let (seq, batch) = (6, 3);
    let (i, h, dirs) = (cfg.input_size, cfg.hidden_size, cfg.dirs());
    let state_len = cfg.num_layers * dirs * batch * h;

    // Parameters initialised like PyTorch's default, U(-1/sqrt(H), 1/sqrt(H)),
    // from a seed. They live in one GPU buffer, gradients in another.
    let model = LstmModel::init_uniform(&ctx, cfg.clone(), 42)?;
    // Binding a model to the context compiles the kernels; buffers and
    // dispatches are prepared once per (T, B) shape on first use.
    let mut lstm = Lstm::new(ctx.clone(), model)?;

    // Input [T, B, I], time-major (set `batch_first` for [B, T, I]). Each
    // sequence has its own valid length, as with
    // pack_padded_sequence(..., enforce_sorted=False): steps past a
    // sequence's length are ignored and its output there is zero.
    let input: Vec<f32> = (0..seq * batch * i)
        .map(|k| ((k as f32) * 0.37).sin())
        .collect();
    let lengths = [6, 4, 1];
    let b = Batch {
        input: &input,
        seq_len: seq,
        batch,
        batch_first: false,
        h0: None, // zero initial states
        c0: None,
        lengths: Some(&lengths),
    };

    // Forward only: output [T, B, D*H], h_n and c_n [L*D, B, H].
    let out = lstm.forward(&b)?;
    println!(
        "forward: output [{seq}, {batch}, {}] ({} values), h_n/c_n [{}, {batch}, {h}]",
        dirs * h,
        out.output.len(),
        cfg.num_layers * dirs,
    );
    println!("  output[t=0, b=0, 0..4] = {:?}", &out.output[..4]);
    // Sequence 2 has length 1, so every later step of it is padding.
    let row = (5 * batch + 2) * dirs * h;
    println!(
        "  output[t=5, b=2, 0..4] = {:?} (padding)",
        &out.output[row..row + 4]
    );
    println!("  h_n[0, 0, 0..4]       = {:?}", &out.h_n[..4]);

    // Forward and backward in one submission. The upstream gradients define
    // the loss  sum(output * grad_output) + sum(h_n * grad_h_n) + sum(c_n * grad_c_n);
    // here loss = sum(output), so grad_output is all ones.
    let grad_output = vec![1.0f32; out.output.len()];
    let zeros = vec![0.0f32; state_len];
    let up = Upstream {
        grad_output: &grad_output,
        grad_h_n: &zeros,
        grad_c_n: &zeros,
    };
    let (out2, grads) = lstm.forward_backward(&b, &up)?;
    assert_eq!(out2, out, "forward is deterministic");
    println!(
        "backward: grad input [{seq}, {batch}, {i}], grad h0/c0 [{}, {batch}, {h}], {} parameter gradients",
        cfg.num_layers * dirs,
        grads.params.len()
    );
    println!("  grad_input[t=0, b=0, ..] = {:?}", &grads.input[..i]);
    // Parameter gradients come back with PyTorch names, prefixed `grad.`;
    // they also stay on the GPU in `lstm.model.grads` for an optimizer.
    let g = grads
        .params
        .iter()
        .find(|t| t.name == "grad.weight_hh_l0_reverse")
        .expect("the model is bidirectional");
    let norm = g.data.iter().map(|v| v * v).sum::<f32>().sqrt();
    println!("  |{}| {:?} = {norm:.6}", g.name, g.shape);

    // Save the weights with nn.LSTM state_dict names; the file loads in
    // PyTorch with safetensors.torch.load_file + lstm.load_state_dict.
    let dir = std::env::temp_dir().join(format!("lstm-wgpu-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| lstm_wgpu::Error::file(&dir, e))?;
    let path = dir.join("weights.safetensors");
    let params = lstm.model.param_tensors(&ctx)?;
    lstm_wgpu::io::write(&path, &params, None)?;
    let bytes = std::fs::metadata(&path)
        .map_err(|e| lstm_wgpu::Error::file(&path, e))?
        .len();
    // Read it back: same names, shapes and values.
    let back = lstm_wgpu::io::TensorFile::read(&path)?.all_f32()?;
    assert_eq!(back.len(), params.len());
    assert!(back.iter().all(|t| params.contains(t)));
    println!(
        "saved {} tensors ({bytes} bytes) to {}, read them back, removed it",
        params.len(),
        path.display()
    );
    std::fs::remove_dir_all(&dir).map_err(|e| lstm_wgpu::Error::file(&dir, e))?;
    Ok(())
}
