//! Random reference cases shared by the GPU-against-reference tests: one
//! [`Case`] (the model's and the batch's shapes, lengths, layout, norm),
//! its host data rounded to f32, the GPU model and pass built from it, and
//! the comparison of every output and gradient with the f64 reference.

use super::{assert_close, ref_to_tensors, round_f32};
use lstm_wgpu::model::norm::NormKind;
use lstm_wgpu::{
    Batch, GpuContext, Grads, Lstm, LstmModel, NamedTensor, Outputs, Result, Upstream,
};
use lstm_wgpu_reference::norm::{self as rn, RefNorm};
use lstm_wgpu_reference::{
    self as reference, RefConfig, RefGrads, RefInputs, RefOutputs, RefUpstream, RefWeights, Rng,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The values as f32.
pub fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The model's normalization kind of a reference variant.
pub fn kind(n: RefNorm) -> NormKind {
    match n {
        RefNorm::Layer { .. } => NormKind::Layer,
        RefNorm::LayerCell => NormKind::LayerCell,
        RefNorm::Batch { .. } => NormKind::Batch,
        RefNorm::StepBatch { .. } => NormKind::StepBatch,
        RefNorm::RecurrentBatch { .. } => NormKind::RecurrentBatch,
    }
}

/// A reference configuration.
pub fn ref_config(
    input: usize,
    hidden: usize,
    layers: usize,
    bidir: bool,
    bias: bool,
) -> RefConfig {
    RefConfig {
        input_size: input,
        hidden_size: hidden,
        num_layers: layers,
        bidirectional: bidir,
        bias,
        ..Default::default()
    }
}

/// The sequence lengths of a [`Case`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lengths {
    /// None given: every sequence is T long.
    Full,
    /// Sequence 0 T long, sequence b > 0 of length 1 + (7b + 3) mod T.
    Spread,
    /// As [`Lengths::Spread`], but the last sequence (when B > 1) of
    /// length 1.
    SpreadToOne,
    /// These, one a sequence.
    Given(&'static [usize]),
}

impl Lengths {
    /// The lengths of `batch` sequences of at most `seq` steps.
    pub fn of(self, seq: usize, batch: usize) -> Option<Vec<usize>> {
        let spread = |b: usize| if b == 0 { seq } else { 1 + (b * 7 + 3) % seq };
        match self {
            Lengths::Full => None,
            Lengths::Spread => Some((0..batch).map(spread).collect()),
            Lengths::SpreadToOne => Some(
                (0..batch)
                    .map(|b| {
                        if b > 0 && b + 1 == batch {
                            1
                        } else {
                            spread(b)
                        }
                    })
                    .collect(),
            ),
            Lengths::Given(l) => Some(l.to_vec()),
        }
    }
}

/// One LSTM case of the GPU-against-reference tests: the model's shape,
/// the batch's, and how the pass runs. Its data comes from
/// [`Case::data`], its GPU LSTM from [`Case::lstm`].
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub layers: usize,
    pub bidir: bool,
    pub bias: bool,
    pub input: usize,
    pub hidden: usize,
    pub seq: usize,
    pub batch: usize,
    /// h0 and c0 given.
    pub states: bool,
    pub lengths: Lengths,
    /// The GPU gets batch-first data (the reference always time-major).
    pub batch_first: bool,
    /// A normalization variant, its tensors in the data and the model.
    pub norm: Option<RefNorm>,
    /// Train mode (the LSTM's default) or eval.
    pub train: bool,
}

impl Case {
    /// One unidirectional layer with bias, I = 5, H = 7, T = 6, B = 3;
    /// no states, full lengths, time-major, no norm, train mode.
    pub const BASE: Case = Case {
        layers: 1,
        bidir: false,
        bias: true,
        input: 5,
        hidden: 7,
        seq: 6,
        batch: 3,
        states: false,
        lengths: Lengths::Full,
        batch_first: false,
        norm: None,
        train: true,
    };

    /// Two bidirectional layers, h0 (and c0), spread lengths, B = 4.
    pub const BI2: Case = Case {
        layers: 2,
        bidir: true,
        states: true,
        lengths: Lengths::Spread,
        batch: 4,
        ..Case::BASE
    };

    /// The reference configuration.
    pub fn ref_config(&self) -> RefConfig {
        ref_config(self.input, self.hidden, self.layers, self.bidir, self.bias)
    }

    /// The case's random data (see [`data`]), from `Rng::new(seed)`.
    pub fn data(&self, seed: u64) -> Data {
        self.data_of(self.ref_config(), seed)
    }

    /// The same for reference configuration `rc` (another cell).
    pub fn data_of(&self, rc: RefConfig, seed: u64) -> Data {
        let lengths = self.lengths.of(self.seq, self.batch);
        data(
            rc,
            self.norm,
            (self.seq, self.batch),
            self.states,
            lengths,
            seed,
        )
    }

    /// The GPU LSTM of the case's data `d`, in the case's train mode; a
    /// failure panics.
    pub fn lstm(&self, ctx: &Arc<GpuContext>, d: &Data) -> Lstm {
        let model = model_of(ctx, d, self.norm).unwrap_or_else(|e| panic!("{self:?}: {e}"));
        let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{self:?}: {e}"));
        lstm.train = self.train;
        lstm
    }
}

/// Host data of one case, rounded to f32 so that both sides see the same
/// numbers: weights, normalization tensors (empty without a norm), inputs
/// and upstream gradients.
pub struct Data {
    pub rc: RefConfig,
    pub w: RefWeights,
    pub nt: rn::NormTensors,
    pub rin: RefInputs,
    pub up: RefUpstream,
}

/// Random data of a case, drawn from `Rng::new(seed)` in a fixed order:
/// weights, norm tensors (with `norm`), input, h0 and c0 (with `states`),
/// grad_output, grad_h_n, grad_c_n. All values uniform in [-1, 1).
pub fn data(
    rc: RefConfig,
    norm: Option<RefNorm>,
    (seq, batch): (usize, usize),
    states: bool,
    lengths: Option<Vec<usize>>,
    seed: u64,
) -> Data {
    let mut rng = Rng::new(seed);
    let mut w = reference::random_weights(&rc, &mut rng);
    for cell in &mut w.cells {
        round_f32(&mut cell.w_ih);
        round_f32(&mut cell.w_hh);
        for b in [&mut cell.b_ih, &mut cell.b_hh, &mut cell.w_hr]
            .into_iter()
            .flatten()
        {
            round_f32(b);
        }
    }
    let mut nt = match norm {
        Some(n) => rn::random_norm_tensors(&rc, n, &mut rng),
        None => BTreeMap::new(),
    };
    for v in nt.values_mut() {
        round_f32(v);
    }
    let (t, n) = (seq, batch);
    // h states are S wide (P with a projection), c states H.
    let sl = rc.num_layers * rc.dirs() * n * rc.hidden_size;
    let hl = rc.num_layers * rc.dirs() * n * rc.state_size();
    let mut vecr = |len: usize| {
        let mut v = rng.vec(len, -1.0, 1.0);
        round_f32(&mut v);
        v
    };
    let x = vecr(t * n * rc.input_size);
    let (h0, c0) = if states {
        (Some(vecr(hl)), Some(vecr(sl)))
    } else {
        (None, None)
    };
    let up = RefUpstream {
        grad_output: vecr(t * n * rc.dirs() * rc.state_size()),
        grad_h_n: vecr(hl),
        grad_c_n: vecr(sl),
    };
    let rin = RefInputs {
        seq_len: t,
        batch: n,
        x,
        h0,
        c0,
        lengths,
    };
    Data { rc, w, nt, rin, up }
}

/// The GPU model of a case's weights (and norm tensors with `norm`).
pub fn model_of(ctx: &GpuContext, d: &Data, norm: Option<RefNorm>) -> Result<LstmModel> {
    let mut tensors = ref_to_tensors(&d.rc, &d.w);
    if let Some(norm) = norm {
        for (name, shape, _) in rn::norm_tensor_shapes(&d.rc, norm) {
            tensors.push(NamedTensor::new(name.clone(), shape, f32s(&d.nt[&name])));
        }
    }
    let cell = super::config(&d.rc).cell;
    let host = LstmModel::host_model(&tensors, &BTreeMap::new(), norm.map(kind), cell)?;
    LstmModel::from_host(ctx, host)
}

/// A case's inputs and upstream gradients as f32, time-major or (with
/// `batch_first`) batch-first, ready for [`Batch`] and [`Upstream`].
pub struct HostPass {
    pub seq_len: usize,
    pub batch: usize,
    pub batch_first: bool,
    x: Vec<f32>,
    h0: Option<Vec<f32>>,
    c0: Option<Vec<f32>>,
    lengths: Option<Vec<usize>>,
    grad_output: Vec<f32>,
    grad_h_n: Vec<f32>,
    grad_c_n: Vec<f32>,
}

impl HostPass {
    pub fn new(d: &Data, batch_first: bool) -> Self {
        let (t, n) = (d.rin.seq_len, d.rin.batch);
        let hp = HostPass {
            seq_len: t,
            batch: n,
            batch_first,
            x: f32s(&d.rin.x),
            h0: d.rin.h0.as_deref().map(f32s),
            c0: d.rin.c0.as_deref().map(f32s),
            lengths: d.rin.lengths.clone(),
            grad_output: f32s(&d.up.grad_output),
            grad_h_n: f32s(&d.up.grad_h_n),
            grad_c_n: f32s(&d.up.grad_c_n),
        };
        let w_io = d.rc.dirs() * d.rc.state_size();
        HostPass {
            x: hp.pass_layout(hp.x.clone(), d.rc.input_size),
            grad_output: hp.pass_layout(hp.grad_output.clone(), w_io),
            ..hp
        }
    }

    /// Time-major `[T, B, width]` data in this pass's layout.
    pub fn pass_layout(&self, v: Vec<f32>, width: usize) -> Vec<f32> {
        if self.batch_first {
            lstm_wgpu::lstm::swap01(&v, self.seq_len, self.batch, width)
        } else {
            v
        }
    }

    /// Data in this pass's layout as time-major `[T, B, width]`.
    pub fn time_major(&self, v: Vec<f32>, width: usize) -> Vec<f32> {
        if self.batch_first {
            lstm_wgpu::lstm::swap01(&v, self.batch, self.seq_len, width)
        } else {
            v
        }
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            input: &self.x,
            seq_len: self.seq_len,
            batch: self.batch,
            batch_first: self.batch_first,
            h0: self.h0.as_deref(),
            c0: self.c0.as_deref(),
            lengths: self.lengths.as_deref(),
        }
    }

    pub fn upstream(&self) -> Upstream<'_> {
        Upstream {
            grad_output: &self.grad_output,
            grad_h_n: &self.grad_h_n,
            grad_c_n: &self.grad_c_n,
        }
    }
}

/// Forward and backward of a case (time-major) on the GPU.
pub fn gpu_pass(lstm: &mut Lstm, d: &Data) -> Result<(Outputs, Grads)> {
    let hp = HostPass::new(d, false);
    lstm.forward_backward(&hp.batch(), &hp.upstream())
}

/// max |a - b| / max |b| (what `assert_close` bounds); infinite with a NaN.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(
            0f64,
            |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
        );
    worst / scale
}

/// `assert_close` under "{label}: {name}", returning the relative error.
pub fn check(label: &str, name: &str, got: &[f32], want: &[f64], tol: f64) -> f64 {
    assert_close(&format!("{label}: {name}"), got, want, tol);
    rel_err(got, want)
}

/// The reference parameter gradients by PyTorch name (`weight_ih_l0`,
/// `bias_hh_l1_reverse`, ...), plus `extra` (normalization gradients).
pub fn param_grads(
    rc: &RefConfig,
    rgrads: &RefGrads,
    extra: &BTreeMap<String, Vec<f64>>,
) -> BTreeMap<String, Vec<f64>> {
    let mut want = BTreeMap::new();
    for (l, cell) in rgrads.weights.cells.iter().enumerate() {
        let sfx = if l % rc.dirs() == 1 { "_reverse" } else { "" };
        let layer = l / rc.dirs();
        want.insert(format!("weight_ih_l{layer}{sfx}"), cell.w_ih.clone());
        want.insert(format!("weight_hh_l{layer}{sfx}"), cell.w_hh.clone());
        if let (Some(bi), Some(bh)) = (&cell.b_ih, &cell.b_hh) {
            want.insert(format!("bias_ih_l{layer}{sfx}"), bi.clone());
            want.insert(format!("bias_hh_l{layer}{sfx}"), bh.clone());
        }
        if let Some(hr) = &cell.w_hr {
            want.insert(format!("weight_hr_l{layer}{sfx}"), hr.clone());
        }
    }
    want.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    want
}

/// Outputs, final states and input/state gradients against the reference;
/// returns the worst relative error.
pub fn check_outputs(
    label: &str,
    (out, grads): (&Outputs, &Grads),
    (rout, rgrads): (&RefOutputs, &RefGrads),
    tol: f64,
) -> f64 {
    [
        check(label, "output", &out.output, &rout.output, tol),
        check(label, "h_n", &out.h_n, &rout.h_n, tol),
        check(label, "c_n", &out.c_n, &rout.c_n, tol),
        check(label, "grad.input", &grads.input, &rgrads.input, tol),
        check(label, "grad.h0", &grads.h0, &rgrads.h0, tol),
        check(label, "grad.c0", &grads.c0, &rgrads.c0, tol),
    ]
    .into_iter()
    .fold(0f64, f64::max)
}

/// Every parameter gradient (`grad.NAME`) against `want[NAME]`, which must
/// hold exactly as many tensors; returns the worst relative error.
pub fn check_params(
    label: &str,
    params: &[NamedTensor],
    want: &BTreeMap<String, Vec<f64>>,
    tol: f64,
) -> f64 {
    assert_eq!(params.len(), want.len(), "{label}: gradient count");
    let mut worst = 0f64;
    for g in params {
        let name = g.name.trim_start_matches("grad.");
        let w = want
            .get(name)
            .unwrap_or_else(|| panic!("{label}: no reference for {}", g.name));
        worst = worst.max(check(label, &g.name, &g.data, w, tol));
    }
    worst
}

/// Every output and gradient of a GPU pass against the reference (`extra`:
/// normalization gradients by name); returns the worst relative error.
pub fn check_all(
    label: &str,
    rc: &RefConfig,
    gpu: (&Outputs, &Grads),
    reference: (&RefOutputs, &RefGrads),
    extra: &BTreeMap<String, Vec<f64>>,
    tol: f64,
) -> f64 {
    let e = check_outputs(label, gpu, reference, tol);
    let want = param_grads(rc, reference.1, extra);
    e.max(check_params(label, &gpu.1.params, &want, tol))
}

/// Every output and gradient of a GPU pass without normalization
/// (time-major) against `reference::backward` of the same data; returns
/// the worst relative error.
pub fn check_reference(label: &str, d: &Data, gpu: (&Outputs, &Grads), tol: f64) -> f64 {
    let (rout, rgrads) = reference::backward(&d.rc, &d.w, &d.rin, &d.up);
    check_all(label, &d.rc, gpu, (&rout, &rgrads), &BTreeMap::new(), tol)
}

/// Cases of the cells' tests over the recurrent strategies: one layer,
/// bidirectional with lengths and states, layers without bias down to
/// length 1, the wide path's H = 8, the subgroup path's B = 24, H = 32.
/// A shape whose persistent loop exceeds lavapipe's loop-iteration cap in
/// one dispatch (H = 512, T = 260, B = 2, lengths down to 1): the host
/// splits it there.
pub const LOOP_CAP_CASE: Case = Case {
    hidden: 512,
    input: 4,
    seq: 260,
    batch: 2,
    lengths: Lengths::SpreadToOne,
    ..Case::BASE
};

pub const CELL_CASES: [(&str, Case); 5] = [
    ("uni 1 layer", Case::BASE),
    ("bi 2 layers, lengths, h0", Case::BI2),
    (
        "3 layers, no bias, lengths to 1",
        Case {
            layers: 3,
            bias: false,
            lengths: Lengths::SpreadToOne,
            batch: 4,
            ..Case::BASE
        },
    ),
    (
        "wide (H = 8), bi, h0",
        Case {
            hidden: 8,
            bidir: true,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
    ),
    (
        "subgroup shape (B = 24, H = 32), 2 layers",
        Case {
            hidden: 32,
            batch: 24,
            seq: 4,
            layers: 2,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
    ),
];

/// Every tensor of (out, grads) by name, in a fixed order.
pub fn tensors(out: &Outputs, grads: &Grads) -> Vec<(String, Vec<f32>)> {
    let mut v = vec![
        ("output".to_string(), out.output.clone()),
        ("h_n".to_string(), out.h_n.clone()),
        ("c_n".to_string(), out.c_n.clone()),
        ("grad.input".to_string(), grads.input.clone()),
        ("grad.h0".to_string(), grads.h0.clone()),
        ("grad.c0".to_string(), grads.c0.clone()),
    ];
    v.extend(
        grads
            .params
            .iter()
            .map(|t| (t.name.clone(), t.data.clone())),
    );
    v
}

/// The bits of every tensor of (out, grads), for bit-for-bit comparisons.
pub fn bits(out: &Outputs, grads: &Grads) -> Vec<(String, Vec<u32>)> {
    tensors(out, grads)
        .into_iter()
        .map(|(n, v)| (n, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

/// The persistent path's results `a` against the per-step path's `b`,
/// tensor by tensor, within `tol`; the worst relative error.
pub fn check_paths_agree(label: &str, a: &(Outputs, Grads), b: &(Outputs, Grads), tol: f64) -> f64 {
    let mut worst = 0f64;
    let (ta, tb) = (tensors(&a.0, &a.1), tensors(&b.0, &b.1));
    assert_eq!(ta.len(), tb.len(), "{label}: tensor counts differ");
    for ((name, x), (_, y)) in ta.iter().zip(tb) {
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("{label}: {name} persistent vs per-step"),
            x,
            &y64,
            tol,
        );
        worst = worst.max(rel_err(x, &y64));
    }
    worst
}
