//! Optimizer kernels (`shaders/optim.wgsl`): SGD, Adam and AdamW (with
//! amsgrad) against `torch.optim` in float64 (`tests/fixtures/optim/`, made by
//! `tests/fixtures/make_optim_fixtures.py`), params and every state buffer
//! after every step; against an f64 CPU loop on a larger buffer; skipped
//! steps (own flag and the clip plan's non-finite flag) leave everything
//! bit-identical and do not advance `t`; learning-rate changes through the
//! per-step buffer; state save/load; bit-identical reruns.

mod common;

use common::gpu::*;

use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::io::TensorFile;
use lstm_wgpu::kernels::clip::Clip;
use lstm_wgpu::kernels::optim::{OptimConfig, OptimKind, OptimPlan, STEP_WORDS};
use safetensors::Dtype;
use std::path::PathBuf;

/// Tolerance of the comparisons with float64 results: max|gpu-ref|/max|ref|.
const TOL: f64 = 1e-5;

const FIXTURES: &[&str] = &[
    "sgd_nesterov",
    "sgd_damp",
    "sgd_plain",
    "sgd_nesterov_lrsched",
    "adam",
    "adam_l2",
    "adamw",
    "adam_amsgrad",
    "adamw_amsgrad",
    "adamw_amsgrad_lrsched",
];

fn run(ctx: &GpuContext, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
}

/// Params and every state buffer, read back.
fn snapshot(ctx: &GpuContext, plan: &OptimPlan, params: &wgpu::Buffer) -> Vec<(String, Vec<f32>)> {
    let mut v = vec![(
        "param".to_string(),
        ctx.read_f32(params, 0, plan.n).unwrap(),
    )];
    for t in plan.state_tensors(ctx).unwrap() {
        v.push((t.name, t.data));
    }
    v
}

// ---- fixtures ----------------------------------------------------------------

struct Fixture {
    name: String,
    file: TensorFile,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/optim")
            .join(format!("{name}.safetensors"));
        Self {
            name: name.to_string(),
            file: TensorFile::read(&path).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        self.file.require_f32(name).unwrap().data
    }

    fn f64(&self, name: &str) -> Vec<f64> {
        let t = self
            .file
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.name));
        assert_eq!(t.dtype, Dtype::F64, "{}: {name}", self.name);
        t.bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn meta(&self, key: &str) -> &str {
        self.file
            .metadata
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata {key}", self.name))
    }

    fn num(&self, key: &str) -> f64 {
        self.meta(key).parse().unwrap()
    }

    fn flag(&self, key: &str) -> bool {
        match self.meta(key) {
            "true" => true,
            "false" => false,
            v => panic!("{}: {key} = {v}", self.name),
        }
    }

    fn config(&self) -> OptimConfig {
        let kind = match self.meta("kind") {
            "sgd" => OptimKind::Sgd,
            "adam" => OptimKind::Adam,
            "adamw" => OptimKind::AdamW,
            k => panic!("{}: kind {k}", self.name),
        };
        OptimConfig {
            kind,
            lr: self.num("lr"),
            momentum: self.num("momentum"),
            dampening: self.num("dampening"),
            nesterov: self.flag("nesterov"),
            betas: (self.num("beta1"), self.num("beta2")),
            eps: self.num("eps"),
            weight_decay: self.num("weight_decay"),
            amsgrad: self.flag("amsgrad"),
        }
    }

    fn steps(&self) -> usize {
        self.f64("lr").len()
    }
}

/// A plan over a fresh copy of a fixture's start params, with its own skip
/// flag buffer (zero: apply). Buffers are 7 elements longer than the
/// parameters, to check that nothing past `n` is written.
struct Setup {
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    flag: wgpu::Buffer,
    plan: OptimPlan,
}

const TAIL: usize = 7;

fn setup(ctx: &GpuContext, cfg: &OptimConfig, p0: &[f32]) -> Setup {
    let n = p0.len();
    let mut init = p0.to_vec();
    init.extend(values_in(TAIL, 99, 3.0));
    let params = ctx.storage_init("params", &init).unwrap();
    let grads = ctx.storage("grads", n + TAIL).unwrap();
    // The flag at word 2 of a small buffer, to exercise the offset.
    let flag = ctx.storage("flag", 4).unwrap();
    let plan = lstm_wgpu::kernels::optim::Optim::new(ctx)
        .plan(ctx, cfg, &params, &grads, n, Some((&flag, 2)))
        .unwrap();
    Setup {
        params,
        grads,
        flag,
        plan,
    }
}

impl Setup {
    /// One step: gradients, per-step buffer, dispatch, commit.
    fn step(&mut self, ctx: &GpuContext, g: &[f32], lr: f64) -> bool {
        ctx.write(&self.grads, 0, g);
        self.plan.prepare(ctx, lr).unwrap();
        run(ctx, |pass| self.plan.record(pass));
        let skipped = self.plan.skipped(ctx).unwrap();
        self.plan.commit(skipped);
        skipped
    }
}

/// Every fixture, every step, params and state vs float64 PyTorch; a skipped
/// step with garbage gradients is inserted before step 3.
#[test]
fn matches_pytorch_fixtures() {
    let ctx = ctx();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".safetensors").map(str::to_string))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "fixtures on disk vs FIXTURES");

    for name in FIXTURES {
        let fx = Fixture::load(name);
        let cfg = fx.config();
        let p0 = fx.f32("param0");
        let n = p0.len();
        let lrs = fx.f64("lr");
        let mut s = setup(&ctx, &cfg, &p0);
        let tail0 = ctx.read_f32(&s.params, n, TAIL).unwrap();
        let mut worst = 0f64;
        for k in 1..=fx.steps() {
            if k == 3 {
                let before = snapshot(&ctx, &s.plan, &s.params);
                ctx.write(&s.flag, 2, &[1.0f32]);
                let mut garbage = values_in(n, 5, 1.0);
                garbage[1] = f32::NAN;
                garbage[2] = f32::INFINITY;
                assert!(s.step(&ctx, &garbage, 7.0), "{name}: not skipped");
                assert_eq!(s.plan.steps(), 2, "{name}: t advanced on a skip");
                let after = snapshot(&ctx, &s.plan, &s.params);
                for ((what, a), (_, b)) in before.iter().zip(&after) {
                    assert_eq!(bits(a), bits(b), "{name}: {what} changed by a skipped step");
                }
                ctx.write(&s.flag, 2, &[0.0f32]);
            }
            let g = fx.f32(&format!("grad.{k}"));
            assert!(!s.step(&ctx, &g, lrs[k - 1]), "{name}: step {k} skipped");
            assert_eq!(s.plan.steps(), k as u64);
            for (what, got) in snapshot(&ctx, &s.plan, &s.params) {
                let key = if what == "param" {
                    format!("step{k}.param")
                } else {
                    format!("step{k}.{what}")
                };
                let want = fx.f64(&key);
                assert_close(&format!("{name} {key}"), &got, &want, TOL);
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
                worst = worst.max(err / scale);
            }
        }
        // Every state tensor of the fixture was compared.
        let state_in_file = fx
            .file
            .tensors
            .keys()
            .filter(|k| k.starts_with("step1.optimizer."))
            .count();
        assert_eq!(state_in_file, s.plan.state.len(), "{name}: state count");
        assert_eq!(
            bits(&ctx.read_f32(&s.params, n, TAIL).unwrap()),
            bits(&tail0),
            "{name}: elements past n were written"
        );
        println!("{name}: worst relative error {worst:.2e}");
    }
}

// ---- f64 CPU reference ---------------------------------------------------------

/// f64 state of the CPU reference: (momentum buffer or exp_avg, exp_avg_sq, max).
struct CpuState {
    s: [Vec<f64>; 3],
}

/// One step of `cfg` at step `t` and rate `lr`, as torch.optim in f64.
fn cpu_step(cfg: &OptimConfig, t: u64, lr: f64, p: &mut [f64], g: &[f32], st: &mut CpuState) {
    let wd = cfg.weight_decay;
    let (b1, b2) = cfg.betas;
    for i in 0..p.len() {
        let mut d = g[i] as f64;
        match cfg.kind {
            OptimKind::Sgd => {
                d += wd * p[i];
                if cfg.momentum != 0.0 {
                    let b = if t == 1 {
                        d
                    } else {
                        cfg.momentum * st.s[0][i] + (1.0 - cfg.dampening) * d
                    };
                    st.s[0][i] = b;
                    d = if cfg.nesterov {
                        d + cfg.momentum * b
                    } else {
                        b
                    };
                }
                p[i] -= lr * d;
            }
            OptimKind::Adam | OptimKind::AdamW => {
                if cfg.kind == OptimKind::AdamW {
                    p[i] *= 1.0 - lr * wd;
                } else {
                    d += wd * p[i];
                }
                let m = b1 * st.s[0][i] + (1.0 - b1) * d;
                let v = b2 * st.s[1][i] + (1.0 - b2) * d * d;
                st.s[0][i] = m;
                st.s[1][i] = v;
                let mut vv = v;
                if cfg.amsgrad {
                    st.s[2][i] = st.s[2][i].max(v);
                    vv = st.s[2][i];
                }
                let bc1 = 1.0 - b1.powf(t as f64);
                let bc2 = 1.0 - b2.powf(t as f64);
                p[i] -= lr / bc1 * m / (vv.sqrt() / bc2.sqrt() + cfg.eps);
            }
        }
    }
}

/// Every configuration on 5000 elements (20 workgroups, a partial last one)
/// against the CPU loop, with a learning rate that changes every step.
#[test]
fn matches_cpu_reference_with_changing_lr() {
    let ctx = ctx();
    let n = 5000;
    let configs = [
        OptimConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.05,
            ..OptimConfig::sgd()
        },
        OptimConfig {
            lr: 0.1,
            momentum: 0.5,
            dampening: 0.5,
            ..OptimConfig::sgd()
        },
        OptimConfig {
            lr: 0.1,
            ..OptimConfig::sgd()
        },
        OptimConfig {
            weight_decay: 0.2,
            ..OptimConfig::adam()
        },
        OptimConfig {
            amsgrad: true,
            betas: (0.5, 0.7),
            ..OptimConfig::adamw()
        },
    ];
    let lrs = [0.02, 0.05, 0.0, 0.03, 0.1, 0.01];
    for (ci, cfg) in configs.iter().enumerate() {
        let p0 = values_in(n, 10 + ci as u64, 1.5);
        let mut s = setup(&ctx, cfg, &p0);
        let mut p: Vec<f64> = p0.iter().map(|&v| v as f64).collect();
        let mut st = CpuState {
            s: [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
        };
        for (k, &lr) in lrs.iter().enumerate() {
            let mut g = values_in(n, 100 * ci as u64 + k as u64, 2.0);
            if k % 2 == 1 {
                // Shrinking gradients make amsgrad's maximum matter.
                g.iter_mut().step_by(2).for_each(|v| *v *= 0.01);
            }
            let before = ctx.read_f32(&s.params, 0, n).unwrap();
            assert!(!s.step(&ctx, &g, lr));
            cpu_step(cfg, k as u64 + 1, lr, &mut p, &g, &mut st);
            let what = format!("config {ci} step {}", k + 1);
            let got = snapshot(&ctx, &s.plan, &s.params);
            assert_close(&format!("{what} param"), &got[0].1, &p, TOL);
            for (j, (name, v)) in got[1..].iter().enumerate() {
                assert_close(&format!("{what} {name}"), v, &st.s[j], TOL);
            }
            if lr == 0.0 {
                assert_eq!(bits(&got[0].1), bits(&before), "{what}: lr 0 moved params");
            }
        }
    }
}

/// The clip plan's non-finite flag (stats word 3) skips the update, with
/// the clip dispatches and the update in one pass; a finite step then
/// applies.
#[test]
fn clip_nonfinite_flag_skips_the_step() {
    let ctx = ctx();
    let n = 300;
    let p0 = values_in(n, 1, 1.0);
    let params = ctx.storage_init("params", &p0).unwrap();
    let grads = ctx.storage("grads", n).unwrap();
    let clip = Clip::new(&ctx)
        .plan(&ctx, &grads, &[(0, 100), (100, 200)], Some(1.0), None)
        .unwrap();
    let cfg = OptimConfig {
        amsgrad: true,
        ..OptimConfig::adamw()
    };
    let mut plan = lstm_wgpu::kernels::optim::Optim::new(&ctx)
        .plan(&ctx, &cfg, &params, &grads, n, Some((&clip.stats, 3)))
        .unwrap();
    let step = |plan: &mut OptimPlan, g: &[f32]| {
        ctx.write(&grads, 0, g);
        plan.prepare(&ctx, 0.01).unwrap();
        run(&ctx, |pass| {
            clip.record(pass);
            plan.record(pass);
        });
        let skipped = clip.read(&ctx).unwrap().nonfinite;
        assert_eq!(skipped, plan.skipped(&ctx).unwrap());
        plan.commit(skipped);
        skipped
    };
    let mut g = values_in(n, 2, 1.0);
    g[150] = f32::NEG_INFINITY;
    let before = snapshot(&ctx, &plan, &params);
    assert!(step(&mut plan, &g));
    assert_eq!(plan.steps(), 0);
    let after = snapshot(&ctx, &plan, &params);
    for ((what, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(bits(a), bits(b), "{what} changed by a skipped step");
    }
    g[150] = 0.5;
    assert!(!step(&mut plan, &g));
    assert_eq!(plan.steps(), 1);
    let moved = ctx.read_f32(&params, 0, n).unwrap();
    assert!(moved.iter().zip(&p0).all(|(a, b)| a != b), "not applied");
}

/// Two runs from the same start give bit-identical params and state; a run
/// saved after step 2 and loaded into a new plan continues bit-identically.
#[test]
fn bit_identical_reruns_and_state_reload() {
    let ctx = ctx();
    let n = 777;
    for cfg in [
        OptimConfig {
            amsgrad: true,
            ..OptimConfig::adamw()
        },
        OptimConfig {
            momentum: 0.9,
            ..OptimConfig::sgd()
        },
    ] {
        let p0 = values_in(n, 3, 1.0);
        let grads: Vec<Vec<f32>> = (0..4).map(|k| values_in(n, 40 + k, 1.0)).collect();
        let lrs = [0.01, 0.02, 0.005, 0.01];
        let full = |save_after: Option<usize>| {
            let mut s = setup(&ctx, &cfg, &p0);
            let mut out = Vec::new();
            for (k, g) in grads.iter().enumerate() {
                if save_after == Some(k) {
                    // Checkpoint, then continue in a brand-new plan.
                    let state = s.plan.state_tensors(&ctx).unwrap();
                    let params = ctx.read_f32(&s.params, 0, n).unwrap();
                    let steps = s.plan.steps();
                    let mut t = setup(&ctx, &cfg, &params);
                    t.plan.load_state(&ctx, &state).unwrap();
                    t.plan.set_steps(steps).unwrap();
                    s = t;
                }
                s.step(&ctx, g, lrs[k]);
                out.push(snapshot(&ctx, &s.plan, &s.params));
            }
            out
        };
        let a = full(None);
        let b = full(None);
        let c = full(Some(2));
        for (k, ((sa, sb), sc)) in a.iter().zip(&b).zip(&c).enumerate() {
            for (((what, x), (_, y)), (_, z)) in sa.iter().zip(sb).zip(sc) {
                assert_eq!(bits(x), bits(y), "{cfg:?} step {k} {what}: reruns differ");
                assert_eq!(bits(x), bits(z), "{cfg:?} step {k} {what}: reload differs");
            }
        }
        assert_eq!(a[0].len(), 1 + cfg.state_names().len());
    }
}

#[test]
fn defaults_names_and_step_words() {
    let adam = OptimConfig::adam();
    assert_eq!(
        (
            adam.lr,
            adam.betas,
            adam.eps,
            adam.weight_decay,
            adam.amsgrad
        ),
        (1e-3, (0.9, 0.999), 1e-8, 0.0, false)
    );
    let adamw = OptimConfig::adamw();
    assert_eq!(
        (adamw.kind, adamw.lr, adamw.weight_decay),
        (OptimKind::AdamW, 1e-3, 1e-2)
    );
    let sgd = OptimConfig::sgd();
    assert_eq!(
        (
            sgd.lr,
            sgd.momentum,
            sgd.dampening,
            sgd.nesterov,
            sgd.weight_decay
        ),
        (1e-3, 0.0, 0.0, false, 0.0)
    );
    assert!(sgd.state_names().is_empty());
    assert_eq!(
        OptimConfig {
            momentum: 0.9,
            ..sgd.clone()
        }
        .state_names(),
        ["optimizer.momentum_buffer"]
    );
    assert_eq!(
        OptimConfig {
            amsgrad: true,
            ..adam.clone()
        }
        .state_names(),
        [
            "optimizer.exp_avg",
            "optimizer.exp_avg_sq",
            "optimizer.max_exp_avg_sq"
        ]
    );

    let w = adamw.step_words(1, 1e-3);
    assert_eq!(w.len(), STEP_WORDS);
    let f = |i: usize| f32::from_bits(w[i]);
    assert_eq!(f(0), 1e-3f32);
    assert_eq!(f(1), (1e-3f64 / (1.0 - 0.9)) as f32);
    assert_eq!(f(2), (1.0f64 - 0.999).sqrt() as f32);
    assert_eq!(f(3), (1.0 - 1e-3 * 1e-2) as f32);
    assert_eq!((w[4], w[5]), (1, 1));
    let w = adamw.step_words(1000, 2e-3);
    assert_eq!(
        f32::from_bits(w[2]),
        (1.0 - 0.999f64.powi(1000)).sqrt() as f32
    );
    assert_eq!((w[4], w[5]), (0, 1000));
}

#[test]
fn invalid_configurations_and_plans() {
    let ctx = ctx();
    let bad = [
        OptimConfig {
            nesterov: true,
            ..OptimConfig::sgd()
        },
        OptimConfig {
            nesterov: true,
            momentum: 0.9,
            dampening: 0.1,
            ..OptimConfig::sgd()
        },
        OptimConfig {
            betas: (0.9, 1.0),
            ..OptimConfig::adam()
        },
        OptimConfig {
            lr: -1.0,
            ..OptimConfig::adam()
        },
        OptimConfig {
            eps: f64::NAN,
            ..OptimConfig::adamw()
        },
        OptimConfig {
            weight_decay: -0.1,
            ..OptimConfig::adamw()
        },
    ];
    for c in &bad {
        assert!(c.validate().is_err(), "{c:?} accepted");
    }
    let optim = lstm_wgpu::kernels::optim::Optim::new(&ctx);
    let params = ctx.storage("p", 10).unwrap();
    let grads = ctx.storage("g", 8).unwrap();
    let flag = ctx.storage("f", 4).unwrap();
    let cfg = OptimConfig::adam();
    assert!(optim.plan(&ctx, &cfg, &params, &grads, 9, None).is_err());
    assert!(
        optim
            .plan(&ctx, &cfg, &params, &grads, 8, Some((&flag, 4)))
            .is_err()
    );
    let mut plan = optim
        .plan(&ctx, &cfg, &params, &grads, 8, Some((&flag, 3)))
        .unwrap();
    assert_eq!(plan.dispatch_count(), 1);
    assert!(plan.prepare(&ctx, f64::INFINITY).is_err());
    // At most MAX_IN_FLIGHT + 1 updates prepared before the oldest is
    // committed; the step count cannot be set meanwhile.
    for _ in 0..=lstm_wgpu::kernels::optim::MAX_IN_FLIGHT {
        plan.prepare(&ctx, 0.1).unwrap();
    }
    assert!(plan.prepare(&ctx, 0.1).is_err());
    assert!(plan.set_steps(5).is_err());
    for _ in 0..=lstm_wgpu::kernels::optim::MAX_IN_FLIGHT {
        plan.commit(false);
    }
    assert_eq!(plan.in_flight(), 0);
    plan.set_steps(0).unwrap();
    // load_state: missing, misshapen or non-finite state is refused.
    let mut st = plan.state_tensors(&ctx).unwrap();
    assert!(plan.load_state(&ctx, &st[..1]).is_err());
    st[1].data.pop();
    assert!(plan.load_state(&ctx, &st).is_err());
    st[1].data.push(f32::NAN);
    assert!(plan.load_state(&ctx, &st).is_err());
    *st[1].data.last_mut().unwrap() = 0.5;
    plan.load_state(&ctx, &st).unwrap();
    assert_eq!(plan.state_tensors(&ctx).unwrap()[1].data[7], 0.5);
}
