//! `lstm-wgpu grad`: one forward and backward of given weights and inputs,
//! written as safetensors (the PyTorch parity tests compare them).

use super::describe;
use super::env::open_gpu;
use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::io::{self, TensorFile};
use lstm_wgpu::kernels::elementwise::DropoutStep;
use lstm_wgpu::lstm::{Batch, Lstm, Upstream, validate_batch, validate_upstream};
use lstm_wgpu::model::norm::NormKind;
use lstm_wgpu::model::{Links, LstmConfig, LstmModel, NamedTensor};
use std::path::PathBuf;

/// Arguments of `grad`.
#[derive(clap::Args, Debug)]
pub struct GradArgs {
    /// nn.LSTM (nn.GRU with --cell gru) state_dict in safetensors
    /// (weight_ih_l0, weight_hh_l0, ...). With weight_hr_l{k}, an
    /// nn.LSTM(proj_size=P): h0, grad_h_n, h_n and grad.h0 are
    /// [L*D, B, P] and output D*P wide.
    #[arg(long)]
    pub weights: PathBuf,
    /// The recurrent cell: lstm (nn.LSTM), gru (nn.GRU) or indrnn (IndRNN:
    /// weight_hh_l{k} the vector u [H]); gru and indrnn have no c, so no
    /// c0, grad_c_n, c_n or grad.c0.
    #[arg(
        long,
        value_name = "CELL",
        default_value = "lstm",
        hide_possible_values = true
    )]
    pub cell: lstm_wgpu::run::choice::CellChoice,
    /// A cell written in WGSL instead of --cell (see `lstm-wgpu
    /// check-cell`); the state_dict's shapes follow its gate count.
    #[arg(long, value_name = "PATH", conflicts_with = "cell")]
    pub cell_file: Option<PathBuf>,
    /// IndRNN's activation: relu | tanh. [default: relu]
    #[arg(long, value_name = "ACT", hide_possible_values = true)]
    pub activation: Option<lstm_wgpu::run::choice::ActivationChoice>,
    /// input, grad_output, grad_h_n, grad_c_n [, h0, c0, lengths]
    /// (a GRU: no grad_c_n, no c0).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write output, h_n, c_n and the gradients.
    #[arg(long)]
    pub out: PathBuf,
    /// input and grad_output are [B, T, ...] instead of [T, B, ...].
    #[arg(long)]
    pub batch_first: bool,
    /// Normalization variant: layer | layer-cell | batch | step-batch |
    /// recurrent-batch; the weights file must hold exactly its tensors
    /// [default: none].
    #[arg(long, value_parser = NormKind::parse)]
    pub norm: Option<NormKind>,
    /// BatchNorm in train mode: batch statistics, running statistics
    /// updated and written to the output (the default).
    #[arg(long, conflicts_with = "eval")]
    pub train: bool,
    /// BatchNorm in eval mode: running statistics.
    #[arg(long)]
    pub eval: bool,
    /// Clip the gradients to this global L2 norm (clip_grad_norm_); the
    /// output gets `grad_norm` (before clipping) and `grad_norm.<name>`
    /// [default: no clipping].
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// Clamp every gradient to [-V, V] (clip_grad_value_), after --clip-norm
    /// [default: no clamping].
    #[arg(long)]
    pub clip_value: Option<f32>,
    /// Dropout probability in [0, 1) on each layer's output but the last
    /// (after its between-layer norm), as nn.LSTM's `dropout`; train mode
    /// only, identity with --eval.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub dropout: f32,
    /// Residual connections: layer l >= 1 adds its input to its output.
    #[arg(long)]
    pub residual: bool,
    /// Weight-drop (DropConnect) probability in [0, 1) on every W_hh: one
    /// mask per (layer, direction) for the pass, drawn from --dropout-seed
    /// and --dropout-step, inverted scaling; train mode only (--eval uses
    /// W_hh as it is). The output gets the masks,
    /// `weight_drop.mask_l{k}[_reverse]` (0/1, shaped like W_hh).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub weight_drop: f32,
    /// Zoneout probability in [0, 1) of h: after each step every unit keeps
    /// its previous h with probability P (train mode: masks drawn from
    /// --dropout-seed and --dropout-step; --eval: the expectation
    /// P·prev + (1 − P)·new). The output gets the mask, `zoneout.h_mask`
    /// [L·D, T, B, H] (1: kept the previous value).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub zoneout_h: f32,
    /// Zoneout probability of c, likewise (LSTM only; `zoneout.c_mask`).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub zoneout_c: f32,
    /// Seed of the dropout mask (Philox key).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub dropout_seed: u64,
    /// Counter of the dropout mask (the training step it belongs to).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub dropout_step: u32,
    /// Precision of the passes: f32, f16-mixed (f16 weights and gate
    /// cache, f32 accumulation, state and gradients; needs SHADER_F16 and a
    /// plain cell) or auto (f16-mixed where possible, else f32 with a
    /// warning).
    #[arg(long, value_name = "P", default_value = "f32", value_parser = lstm_wgpu::model::precision::PrecisionChoice::parse)]
    pub precision: lstm_wgpu::model::precision::PrecisionChoice,
}

fn expect_shape(t: &NamedTensor, want: &[usize], what: &str) -> Result<()> {
    if t.shape != want {
        return Err(Error::tensor(
            &t.name,
            format!("shape {:?}, expected {want:?} ({what})", t.shape),
        ));
    }
    Ok(())
}

const INPUT_NAMES: [&str; 7] = [
    "input",
    "grad_output",
    "grad_h_n",
    "grad_c_n",
    "h0",
    "c0",
    "lengths",
];

/// The input file's tensors, checked against the weights' configuration.
struct Inputs {
    x: NamedTensor,
    grad_output: NamedTensor,
    grad_h_n: NamedTensor,
    grad_c_n: NamedTensor,
    h0: Option<NamedTensor>,
    c0: Option<NamedTensor>,
    lengths: Option<Vec<usize>>,
    /// T and B.
    t: usize,
    n: usize,
    /// Shapes of `output` and of the states (h's: S wide, P with a
    /// projection; c's: H wide).
    oshape: [usize; 3],
    hshape: [usize; 3],
    sshape: [usize; 3],
}

impl Inputs {
    fn batch(&self, batch_first: bool) -> Batch<'_> {
        Batch {
            input: &self.x.data,
            seq_len: self.t,
            batch: self.n,
            batch_first,
            h0: self.h0.as_ref().map(|v| v.data.as_slice()),
            c0: self.c0.as_ref().map(|v| v.data.as_slice()),
            lengths: self.lengths.as_deref(),
        }
    }

    fn upstream(&self) -> Upstream<'_> {
        Upstream {
            grad_output: &self.grad_output.data,
            grad_h_n: &self.grad_h_n.data,
            grad_c_n: &self.grad_c_n.data,
        }
    }
}

/// Reads `--inputs` and checks every tensor's shape against `cfg`.
fn read_inputs(a: &GradArgs, cfg: &LstmConfig) -> Result<Inputs> {
    let inp = TensorFile::read(&a.inputs)?;
    if let Some(name) = inp
        .tensors
        .keys()
        .find(|k| !INPUT_NAMES.contains(&k.as_str()))
    {
        return Err(Error::tensor(
            name,
            format!(
                "unexpected in {}; known: {}",
                a.inputs.display(),
                INPUT_NAMES.join(", ")
            ),
        ));
    }
    let x = inp.require_f32("input")?;
    let (i, h, sd) = (cfg.input_size, cfg.hidden_size, cfg.num_layers * cfg.dirs());
    let layout = if a.batch_first {
        "[B, T, I] with --batch-first"
    } else {
        "[T, B, I]"
    };
    if x.shape.len() != 3 || x.shape[2] != i || x.shape[0] == 0 || x.shape[1] == 0 {
        return Err(Error::tensor(
            "input",
            format!(
                "shape {:?}, expected {layout} with I = {i} from the weights",
                x.shape
            ),
        ));
    }
    let (t, n) = if a.batch_first {
        (x.shape[1], x.shape[0])
    } else {
        (x.shape[0], x.shape[1])
    };
    let w = cfg.out_width();
    let oshape = if a.batch_first { [n, t, w] } else { [t, n, w] };
    let grad_output = inp.require_f32("grad_output")?;
    expect_shape(&grad_output, &oshape, "the shape of output")?;
    let sshape = [sd, n, h];
    let hshape = [sd, n, cfg.state_size()];
    let hwhat = match cfg.proj() {
        Some(_) => "[L*D, B, P]",
        None => "[L*D, B, H]",
    };
    let grad_h_n = inp.require_f32("grad_h_n")?;
    expect_shape(&grad_h_n, &hshape, hwhat)?;
    let has_c = cfg.cell().has_c();
    let module = cfg.cell().module();
    let without_c = |name: &str| -> Result<()> {
        match inp.tensors.contains_key(name) {
            true => Err(Error::tensor(
                name,
                format!("given, but an {module} has no cell state c"),
            )),
            false => Ok(()),
        }
    };
    let grad_c_n = match has_c {
        true => inp.require_f32("grad_c_n")?,
        false => {
            without_c("grad_c_n")?;
            without_c("c0")?;
            NamedTensor::new("grad_c_n", vec![0], Vec::new())
        }
    };
    if has_c {
        expect_shape(&grad_c_n, &sshape, "[L*D, B, H]")?;
    }
    let h0 = inp.f32("h0")?;
    let c0 = inp.f32("c0")?;
    if let Some(s) = &h0 {
        expect_shape(s, &hshape, hwhat)?;
    }
    if let Some(s) = &c0 {
        expect_shape(s, &sshape, "[L*D, B, H]")?;
    }
    let lengths = match inp.ints("lengths")? {
        None => None,
        Some((shape, v)) => {
            if shape != [n] {
                return Err(Error::tensor(
                    "lengths",
                    format!("shape {shape:?}, expected [{n}] (one per sequence)"),
                ));
            }
            if let Some((k, l)) = v
                .iter()
                .enumerate()
                .find(|(_, l)| **l < 1 || **l > t as i64)
            {
                return Err(Error::tensor(
                    "lengths",
                    format!("lengths[{k}] = {l} is outside 1..={t} (the sequence length)"),
                ));
            }
            Some(v.iter().map(|&l| l as usize).collect::<Vec<_>>())
        }
    };
    Ok(Inputs {
        x,
        grad_output,
        grad_h_n,
        grad_c_n,
        h0,
        c0,
        lengths,
        t,
        n,
        oshape,
        hshape,
        sshape,
    })
}

/// The clipping and dropout flags, checked.
fn check_flags(a: &GradArgs) -> Result<Links> {
    for (flag, v) in [("--clip-norm", a.clip_norm), ("--clip-value", a.clip_value)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(Error::Invalid(format!(
                "{flag} {}: expected a finite value >= 0",
                lstm_wgpu::error::num(v)
            )));
        }
    }
    let links = Links {
        dropout: a.dropout,
        residual: a.residual,
        weight_drop: a.weight_drop,
        zoneout_h: a.zoneout_h,
        zoneout_c: a.zoneout_c,
    };
    for (flag, p) in [("--dropout", a.dropout), ("--weight-drop", a.weight_drop)] {
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return Err(Error::Invalid(format!(
                "{flag} {}: expected a probability in [0, 1)",
                lstm_wgpu::error::num(p)
            )));
        }
    }
    Ok(links)
}

/// Runs `grad`: checks everything on the host, then one forward and backward.
pub fn run(a: &GradArgs, verbose: bool) -> Result<()> {
    // Everything is read and checked on the host before the GPU is opened.
    io::check_output(&a.out, "--out", &[&a.weights, &a.inputs])?;
    let cell = lstm_wgpu::run::choice::cell_of(a.cell, a.activation, a.cell_file.as_deref())?;
    lstm_wgpu::run::choice::check_zoneout(a.zoneout_h, a.zoneout_c, cell, a.norm)?;
    let wfile = TensorFile::read(&a.weights)?;
    let (floats, counters) = wfile.params_and_counters()?;
    let host = LstmModel::host_model(&floats, &counters, a.norm, cell)?;
    let cfg = host.config.clone();
    let inp = read_inputs(a, &cfg)?;
    let (batch, up) = (inp.batch(a.batch_first), inp.upstream());
    validate_batch(&cfg, &batch)?;
    validate_upstream(&cfg, &batch, &up)?;
    let train = !a.eval;
    lstm_wgpu::model::check_batch(&cfg, &host.norm, &batch, train)?;
    let links = check_flags(a)?;

    let ctx = open_gpu(verbose)?;
    let (precision, warning) =
        lstm_wgpu::model::precision::resolve_for(a.precision, &ctx, &host.norm, &cfg)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let model = LstmModel::from_host(&ctx, host)?;
    let mut lstm = Lstm::new(ctx.clone(), model)?;
    lstm.set_precision(precision)?;
    lstm.train = train;
    lstm.set_links(links)?;
    lstm.set_dropout_step(DropoutStep {
        seed: a.dropout_seed,
        counter: a.dropout_step,
    });
    let (out, mut g) = lstm.forward_backward(&batch, &up)?;
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    if precision.is_half()
        && !(finite(&g.input)
            && finite(&g.h0)
            && finite(&g.c0)
            && g.params.iter().all(|p| finite(&p.data)))
    {
        eprintln!(
            "warning: gradients are not finite: in f16-mixed the gate gradients overflow \
             at 2^16 (scale grad_output, grad_h_n and grad_c_n down, or use --precision f32)"
        );
    }
    let mut norms = Vec::new();
    if a.clip_norm.is_some() || a.clip_value.is_some() {
        let st = lstm.clip_gradients(a.clip_norm, a.clip_value)?;
        if st.nonfinite {
            eprintln!("warning: gradients are not finite; they were left unclipped");
        }
        g.params = lstm.model.grad_tensors(&ctx)?;
        norms.push(NamedTensor::new("grad_norm", vec![], vec![st.total_norm]));
        for (e, n) in lstm.model.table.entries.iter().zip(&st.per_tensor) {
            norms.push(NamedTensor::new(
                format!("grad_norm.{}", e.name),
                vec![],
                vec![*n],
            ));
        }
    }
    let (t, n, oshape, hshape, sshape) = (inp.t, inp.n, inp.oshape, inp.hshape, inp.sshape);
    if verbose && let Some((f, b)) = lstm.dispatch_counts(t, n) {
        eprintln!("dispatches: forward {f}, backward {b}, in 1 submit");
    }
    let mut tensors = vec![
        NamedTensor::new("output", oshape.to_vec(), out.output),
        NamedTensor::new("h_n", hshape.to_vec(), out.h_n),
    ];
    if cfg.cell().has_c() {
        tensors.push(NamedTensor::new("c_n", sshape.to_vec(), out.c_n));
    }
    tensors.push(NamedTensor::new("grad.input", inp.x.shape.clone(), g.input));
    if inp.h0.is_some() {
        tensors.push(NamedTensor::new("grad.h0", hshape.to_vec(), g.h0));
    }
    if inp.c0.is_some() {
        tensors.push(NamedTensor::new("grad.c0", sshape.to_vec(), g.c0));
    }
    tensors.extend(g.params);
    tensors.extend(norms);
    if train {
        tensors.extend(lstm.weight_drop_masks()?);
        let step = DropoutStep {
            seed: a.dropout_seed,
            counter: a.dropout_step,
        };
        tensors.extend(lstm.zoneout_masks(&step, batch.seq_len, batch.batch)?);
    }
    let mut counters = std::collections::BTreeMap::new();
    if train && lstm.model.norm.has_batch_stats() {
        tensors.extend(lstm.model.stat_tensors(&ctx)?);
        counters = lstm.model.tracked.clone();
    }
    io::write_with_counters(&a.out, &tensors, &counters, None)?;
    if verbose {
        eprintln!(
            "wrote {} tensors to {} ({})",
            tensors.len(),
            a.out.display(),
            describe(&cfg)
        );
    }
    Ok(())
}
