//! f64 CPU reference of PyTorch's `nn.LSTM` and of the other recurrent
//! cells (forward and backward through time), of the normalization variants
//! and of gradient clipping: the judge that lstm-wgpu's tests compare the GPU
//! path with.
//!
//! A judge must not share code with what it judges, so this crate does not
//! depend on lstm-wgpu and uses only `std` (its tests also read safetensors
//! fixtures). The few things both sides must agree on bit for bit are
//! copied, not shared, and the library's tests check each copy against its
//! original (`tests/reference_copies.rs`): the SplitMix64 stream of [`Rng`]
//! and the Philox dropout mask of [`dropout`].
//! Its own tests (`reference/tests/`) check it by finite differences,
//! hand-written loops and PyTorch fixtures (`tests/fixtures/cells/` for the
//! GRU and the projected LSTM).
//!
//! * the stacked network: [`forward`], [`backward`] and their `_links`
//!   forms (dropout and residual links between layers) and `_reg` forms
//!   (also zoneout and weight-drop inside the recurrence, [`RefRecurrentReg`]);
//!   one recurrence (layers, directions, lengths, states, backward through
//!   time) for every cell of [`RefCellKind`] (`RefConfig::cell`): `nn.LSTM`
//!   (the default), `nn.LSTM(proj_size)`, `nn.GRU` and IndRNN;
//! * [`norm`]: the five normalization variants;
//! * [`clip`]: `clip_grad_norm_` and `clip_grad_value_`;
//! * [`dropout`]: the GPU's dropout mask, and [`RefLinks`] made with it;
//! * [`attention`]: the attention head over a stack's outputs (pooling of
//!   the valid positions, then a linear head on `[context; h_T]` and its
//!   mean squared error).

pub mod attention;
mod cell;
pub mod clip;
pub mod dropout;
mod linalg;
mod lstm;
pub mod norm;
mod recurrent_reg;
mod rng;

pub use cell::{RefActivation, RefCellKind};
pub use lstm::*;
pub use recurrent_reg::{RefRecurrentReg, RefWeightDrop, RefZoneout};
pub use rng::Rng;
