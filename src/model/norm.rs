//! Normalization variants: names, shapes and kinds of their tensors, and how
//! a variant is read from a state_dict. The equations are in docs/math.md
//! ("Normalization variants").

use crate::error::{Error, Result};
use crate::model::config::{LstmConfig, dir_suffix};
use std::collections::BTreeMap;

/// Which normalization a model uses, with what the variant needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Norm {
    /// Plain nn.LSTM.
    #[default]
    None,
    /// LayerNorm(D·H) on each layer's output before the next layer; `last`
    /// also normalizes the final output.
    Layer {
        /// Normalize the last layer's output too.
        last: bool,
    },
    /// LayerNorm LSTM cell (Ba et al. 2016).
    LayerCell,
    /// Sequence-wise BatchNorm(D·H) between layers.
    Batch {
        /// Normalize the last layer's output too.
        last: bool,
    },
    /// Per-timestep BatchNorm between layers, running statistics per step.
    StepBatch {
        /// Normalize the last layer's output too.
        last: bool,
        /// Rows of running statistics.
        t_max: usize,
    },
    /// Recurrent BatchNorm cell (Cooijmans et al. 2016).
    RecurrentBatch {
        /// Rows of running statistics.
        t_max: usize,
    },
}

/// The variant's name on the command line, without its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// LayerNorm between layers.
    Layer,
    /// LayerNorm LSTM cell.
    LayerCell,
    /// Sequence-wise BatchNorm between layers.
    Batch,
    /// Per-timestep BatchNorm between layers.
    StepBatch,
    /// Recurrent BatchNorm cell.
    RecurrentBatch,
}

impl NormKind {
    /// Every variant, in the order the command line lists them.
    pub const ALL: [NormKind; 5] = [
        NormKind::Layer,
        NormKind::LayerCell,
        NormKind::Batch,
        NormKind::StepBatch,
        NormKind::RecurrentBatch,
    ];

    /// The name on the command line and in checkpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            NormKind::Layer => "layer",
            NormKind::LayerCell => "layer-cell",
            NormKind::Batch => "batch",
            NormKind::StepBatch => "step-batch",
            NormKind::RecurrentBatch => "recurrent-batch",
        }
    }

    /// The variant named `s`; an unknown name lists the known ones.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown norm `{s}` (expected {})", names.join(", "))
            })
    }
}

/// Whether a norm tensor is trained or a running statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// A parameter with a gradient.
    Param,
    /// A BatchNorm running statistic (no gradient).
    RunningStat,
}

impl Norm {
    /// Its kind (`None` without a norm).
    pub fn kind(&self) -> Option<NormKind> {
        Some(match self {
            Norm::None => return None,
            Norm::Layer { .. } => NormKind::Layer,
            Norm::LayerCell => NormKind::LayerCell,
            Norm::Batch { .. } => NormKind::Batch,
            Norm::StepBatch { .. } => NormKind::StepBatch,
            Norm::RecurrentBatch { .. } => NormKind::RecurrentBatch,
        })
    }

    /// Between-layer variants: (tensor prefix, normalizes last layer).
    pub fn between(&self) -> Option<(&'static str, bool)> {
        match *self {
            Norm::Layer { last } => Some(("layer_norms", last)),
            Norm::Batch { last } => Some(("batch_norms", last)),
            Norm::StepBatch { last, .. } => Some(("step_norms", last)),
            _ => None,
        }
    }

    /// Variants that live inside the cell.
    pub fn in_cell(&self) -> bool {
        matches!(self, Norm::LayerCell | Norm::RecurrentBatch { .. })
    }

    /// Whether layer `l`'s output is normalized before use.
    pub fn normalizes_output(&self, cfg: &LstmConfig, l: usize) -> bool {
        match self.between() {
            Some((_, last)) => l + 1 < cfg.num_layers || last,
            None => false,
        }
    }

    /// True for variants with batch statistics (train/eval modes differ).
    pub fn has_batch_stats(&self) -> bool {
        matches!(
            self,
            Norm::Batch { .. } | Norm::StepBatch { .. } | Norm::RecurrentBatch { .. }
        )
    }

    /// Names, shapes and kinds of every norm tensor, in buffer order.
    pub fn tensor_shapes(&self, cfg: &LstmConfig) -> Vec<(String, Vec<usize>, TensorKind)> {
        use TensorKind::{Param, RunningStat};
        let (h, dh) = (cfg.hidden_size, cfg.dirs() * cfg.hidden_size);
        let gh = cfg.cell().gates() * h;
        let mut v = Vec::new();
        let mut push = |n: String, s: Vec<usize>, k| v.push((n, s, k));
        match *self {
            Norm::None => {}
            Norm::Layer { .. } | Norm::Batch { .. } | Norm::StepBatch { .. } => {
                let (prefix, _) = self.between().unwrap_or(("", false));
                for l in (0..cfg.num_layers).filter(|&l| self.normalizes_output(cfg, l)) {
                    push(format!("{prefix}.{l}.weight"), vec![dh], Param);
                    push(format!("{prefix}.{l}.bias"), vec![dh], Param);
                    match *self {
                        Norm::Batch { .. } => {
                            push(format!("{prefix}.{l}.running_mean"), vec![dh], RunningStat);
                            push(format!("{prefix}.{l}.running_var"), vec![dh], RunningStat);
                        }
                        Norm::StepBatch { t_max, .. } => {
                            let s = vec![t_max, dh];
                            push(format!("{prefix}.{l}.running_mean"), s.clone(), RunningStat);
                            push(format!("{prefix}.{l}.running_var"), s, RunningStat);
                        }
                        _ => {}
                    }
                }
            }
            Norm::LayerCell => {
                for l in 0..cfg.num_layers {
                    for d in 0..cfg.dirs() {
                        let s = dir_suffix(d);
                        for (m, n) in [("ln_ih", gh), ("ln_hh", gh), ("ln_c", h)] {
                            push(format!("{m}_l{l}{s}.weight"), vec![n], Param);
                            push(format!("{m}_l{l}{s}.bias"), vec![n], Param);
                        }
                    }
                }
            }
            Norm::RecurrentBatch { t_max } => {
                for l in 0..cfg.num_layers {
                    for d in 0..cfg.dirs() {
                        let s = dir_suffix(d);
                        for (m, n) in [("bn_ih", gh), ("bn_hh", gh), ("bn_c", h)] {
                            push(format!("{m}_l{l}{s}.weight"), vec![n], Param);
                            if m == "bn_c" {
                                push(format!("{m}_l{l}{s}.bias"), vec![n], Param);
                            }
                            push(
                                format!("{m}_l{l}{s}.running_mean"),
                                vec![t_max, n],
                                RunningStat,
                            );
                            push(
                                format!("{m}_l{l}{s}.running_var"),
                                vec![t_max, n],
                                RunningStat,
                            );
                        }
                    }
                }
            }
        }
        v
    }

    /// Initial value of a norm tensor for a model made from scratch: gains 1
    /// (0.1 for the recurrent BatchNorm's, as Cooijmans et al.), shifts and
    /// running means 0, running variances 1.
    pub fn init_value(&self, name: &str) -> f32 {
        if name.ends_with(".running_var") {
            1.0
        } else if name.ends_with(".weight") {
            if matches!(self, Norm::RecurrentBatch { .. }) {
                0.1
            } else {
                1.0
            }
        } else {
            0.0
        }
    }

    /// Reads the variant `kind` from state_dict shapes: whether the last
    /// layer is normalized, and T_max from the running statistics.
    pub fn infer(
        kind: NormKind,
        cfg: &LstmConfig,
        shapes: &BTreeMap<String, Vec<usize>>,
    ) -> Result<Self> {
        let last_l = cfg.num_layers - 1;
        let t_max_of = |name: String| -> Result<usize> {
            match shapes.get(&name) {
                Some(s) if s.len() == 2 && s[0] >= 1 => Ok(s[0]),
                Some(s) => Err(Error::tensor(
                    &name,
                    format!("shape {s:?}, expected [T_max, features] with T_max >= 1"),
                )),
                None => Err(Error::tensor(&name, "missing: the variant needs it")),
            }
        };
        Ok(match kind {
            NormKind::Layer => Norm::Layer {
                last: shapes.contains_key(&format!("layer_norms.{last_l}.weight"))
                    || shapes.contains_key(&format!("layer_norms.{last_l}.bias")),
            },
            NormKind::Batch => Norm::Batch {
                last: shapes.contains_key(&format!("batch_norms.{last_l}.weight"))
                    || shapes.contains_key(&format!("batch_norms.{last_l}.bias")),
            },
            NormKind::StepBatch => Norm::StepBatch {
                last: shapes.contains_key(&format!("step_norms.{last_l}.weight"))
                    || shapes.contains_key(&format!("step_norms.{last_l}.bias")),
                t_max: t_max_of(format!(
                    "step_norms.{}.running_mean",
                    if cfg.num_layers > 1 { 0 } else { last_l }
                ))?,
            },
            NormKind::LayerCell => Norm::LayerCell,
            NormKind::RecurrentBatch => Norm::RecurrentBatch {
                t_max: t_max_of("bn_ih_l0.running_mean".to_string())?,
            },
        })
    }
}
