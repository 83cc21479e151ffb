//! lstm-wgpu: PyTorch-compatible LSTM training on any GPU that wgpu reaches.
//!
//! ```no_run
//! use lstm_wgpu::{Batch, Cell, GpuContext, Lstm, LstmConfig, LstmModel};
//! use std::sync::Arc;
//! # fn main() -> lstm_wgpu::Result<()> {
//! let ctx = Arc::new(GpuContext::new()?);
//! let cfg = LstmConfig { input_size: 3, hidden_size: 8, num_layers: 2, bidirectional: false, bias: true,
//!                        cell: Cell::Lstm, proj_size: 0 };
//! let model = LstmModel::init_uniform(&ctx, cfg, 0)?;
//! let mut lstm = Lstm::new(ctx, model)?;
//! let x = vec![0.5f32; 5 * 2 * 3]; // [T=5, B=2, I=3]
//! let out = lstm.forward(&Batch { input: &x, seq_len: 5, batch: 2, batch_first: false,
//!                                 h0: None, c0: None, lengths: None })?;
//! assert_eq!(out.output.len(), 5 * 2 * 8);
//! # Ok(()) }
//! ```

pub mod data;
pub mod error;
pub mod gpu;
pub mod infer;
pub mod io;
pub mod kernels;
pub mod lstm;
pub mod model;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod train;

pub use error::{Error, Result};
pub use gpu::GpuContext;
pub use gpu::tuning::Tuning;
pub use infer::Model;
pub use kernels::cell::Cell;
pub use lstm::{Batch, Grads, Lstm, Outputs, Upstream};
pub use model::{Links, LstmConfig, LstmModel, NamedTensor};
pub use run::Run;
