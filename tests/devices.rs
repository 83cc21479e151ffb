//! `train --devices`: data parallelism over adapters of one process, one
//! thread per rank. Two ranks on the one adapter (`--devices 0,0`,
//! lavapipe in CI) train a text and a series model 50 steps: every loss,
//! the validation losses and the final checkpoints equal one process's
//! with the same global batch to 1e-5 relative, both ranks report the same
//! parameters' CRC, and only rank 0 writes; a run stopped and resumed on
//! the two ranks equals the uninterrupted one bit for bit. What the ranks
//! cannot share is refused by name before anything is written, and a rank
//! that fails mid-run ends the others' sums, named, instead of leaving
//! them waiting (tests/mpi.rs compares `--devices 0,0` with
//! `mpirun -np 2` bit for bit).

mod common;

use common::tempdir::TempDir;
use lstm_wgpu::error::Error;
use lstm_wgpu::run::{Config, Data, Prepared, Setup};
use lstm_wgpu::train::reduce::{Reducer, ThreadGroup};
use std::process::{Command, Output};

#[path = "common/parallel.rs"]
mod parallel;
use parallel::{
    TEXT_MODEL, close, p, same_checkpoints, same_losses, series_model, sunspots, two_ranks_agree,
};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

fn launch(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .env_remove("PMI_SIZE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// Runs `args`, which must succeed: stdout and stderr.
fn ok(args: &[&str]) -> (String, String) {
    let o = launch(args);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{args:?} failed: {err}");
    (text(&o.stdout), err)
}

/// Trains `args` 50 steps in one process and on `--devices 0,0`, and
/// compares; `resume`: also stopped at step 20 and resumed on the two.
fn one_against_two(tag: &str, args: &[&str], resume: bool) {
    let dir = TempDir::new(tag);
    let run = |devices: &[&str], name: &str| {
        let (m, ck) = (
            dir.join(format!("{name}.jsonl")),
            dir.join(format!("{name}.st")),
        );
        let extra = ["--metrics", p(&m), "--checkpoint", p(&ck)];
        let t0 = std::time::Instant::now();
        let (out, err) = ok(&[args, devices, &extra[..]].concat());
        eprintln!("{tag} {name}: {:.1} s", t0.elapsed().as_secs_f64());
        (m, ck, out, err)
    };
    let (m1, ck1, out1, _) = run(&[], "one");
    let (m2, ck2, out2, err) = run(&["--devices", "0,0"], "two");
    two_ranks_agree(args, &err);
    // Rank 0 alone prints the final line.
    assert_eq!(out2.lines().count(), 1, "{out2}");
    assert_eq!(out1.lines().count(), 1, "{out1}");
    let worst = same_losses(&m1, &m2);
    eprintln!("{tag}: largest relative loss difference {worst:.2e}");
    same_checkpoints(&ck1, &ck2, false);
    same_checkpoints(&dir.join("one.st.best"), &dir.join("two.st.best"), false);
    if !resume {
        return;
    }
    // Stopped at step 20 and resumed on the two ranks, summing each
    // layer's gradients apart (buckets of 0 MiB, where the first part ran
    // with the default): bit for bit.
    let ck = dir.join("resumed.st");
    let stop = [
        "--devices",
        "0,0",
        "--checkpoint",
        p(&ck),
        "--stop-after",
        "20",
    ];
    ok(&[args, &stop[..]].concat());
    ok(&[
        "train",
        "--devices",
        "0,0",
        "--resume",
        p(&ck),
        "--checkpoint",
        p(&ck),
        "--no-progress",
        "--bucket-mb",
        "0",
    ]);
    same_checkpoints(&ck2, &ck, true);
}

#[test]
fn text_on_two_devices_equals_one_process() {
    one_against_two("devices-text", &TEXT_MODEL, true);
}

#[test]
fn series_on_two_devices_equals_one_process() {
    let csv = sunspots();
    one_against_two("devices-series", &series_model(&csv), false);
}

/// A refusal's global flags, `train` flags, `OMPI_COMM_WORLD_SIZE` (as
/// mpirun sets it) and what its line says.
type Refusal<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a str>, &'a str);

/// Each refusal: exit 2, one line naming the problem, and none of the
/// run's output files created.
#[test]
fn what_the_ranks_cannot_share_is_refused() {
    let dir = TempDir::new("devices-refused");
    let (ck, m, plot) = (dir.join("ck.st"), dir.join("m.jsonl"), dir.join("p.svg"));
    let outputs = [
        "--checkpoint",
        p(&ck),
        "--metrics",
        p(&m),
        "--plot",
        p(&plot),
    ];
    let small = ["--hidden", "8", "--seq-len", "8", "--steps", "2"];
    let cases: [Refusal; 11] = [
        (
            &["--device", "0"],
            &["--devices", "0,0"],
            None,
            "with --device 0",
        ),
        (
            &[],
            &["--devices", "0,0"],
            Some("2"),
            "under mpirun (2 ranks)",
        ),
        (
            &[],
            &["--devices", "0,0", "--batch", "7"],
            None,
            "--batch 7: the global batch must divide evenly over the 2 devices",
        ),
        (
            &[],
            &["--devices", "0,0", "--batch", "4", "--norm", "batch"],
            None,
            "BatchNorm variants are not supported on 2 ranks",
        ),
        (
            &[],
            &["--devices", "0,0", "--batch", "4", "--dropout", "0.1"],
            None,
            "--dropout 0.1: dropout is not supported on 2 ranks",
        ),
        (
            &[],
            &["--devices", "0,0", "--batch", "4", "--zoneout-h", "0.1"],
            None,
            "zoneout is not supported on 2 ranks",
        ),
        (
            &[],
            &["--devices", "0,9", "--batch", "4"],
            None,
            "--devices 0,9: no adapter 9",
        ),
        (
            &[],
            &["--devices", "0,,0", "--batch", "4"],
            None,
            "--devices 0,,0: an empty entry",
        ),
        (
            &[],
            &["--bucket-mb", "1"],
            None,
            "--bucket-mb 1: buckets are for data-parallel runs",
        ),
        (
            &[],
            &["--devices", "0,0", "--batch", "4", "--bucket-mb=-1"],
            None,
            "--bucket-mb -1: a bucket's size must be a finite number of MiB",
        ),
        (
            &[],
            &["--devices", "0,0", "--batch", "4", "--bucket-mb", "NaN"],
            None,
            "--bucket-mb NaN: a bucket's size must be",
        ),
    ];
    for (global, args, mpi, want) in cases {
        let all = [global, &["train"], &small[..], args, &outputs[..]].concat();
        let mut c = Command::new(BIN);
        c.args(&all);
        match mpi {
            Some(n) => c.env("OMPI_COMM_WORLD_SIZE", n),
            None => c.env_remove("OMPI_COMM_WORLD_SIZE"),
        };
        let o = c.output().unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{all:?}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{all:?}: {err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(want),
            "{all:?}: no `{want}` in {err}"
        );
        for f in [&ck, &m, &plot] {
            assert!(!f.exists(), "{all:?} created {}", f.display());
        }
        assert!(o.stdout.is_empty(), "{all:?}");
    }
}

/// A small text model of `steps` steps (batch 4 of 8 positions).
fn small(steps: usize) -> Config {
    Config {
        hidden: Some(8),
        seq_len: Some(8),
        batch: Some(4),
        steps: Some(steps),
        ..Default::default()
    }
}

/// A rank that fails mid-run (rank 1's step callback errs or panics at
/// step 3) ends rank 0's next sum at once, naming rank 1: the group's
/// error is rank 1's, and nobody waits.
#[test]
fn a_failing_rank_ends_the_others() {
    for panics in [false, true] {
        let config = small(30);
        let t0 = std::time::Instant::now();
        let got = ThreadGroup::new(2).run(|r| {
            let rank = r.rank();
            let p = Prepared::new(config.clone(), Data::Settings)?;
            let setup = Setup {
                reducer: Some(Box::new(r)),
                histograms: false,
            };
            let run = p.start(common::ctx(), setup)?;
            run.train(|m| match (rank, m.step) {
                (1, 3) if panics => panic!("rank 1 gives up"),
                (1, 3) => Err(Error::Invalid("rank 1 gives up".into())),
                _ => Ok(()),
            })
            .map(|t| t.summary.state.step)
        });
        let e = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("rank 1 of 2: ") && e.contains("rank 1 gives up"),
            "{e}"
        );
        assert!(t0.elapsed().as_secs() < 120, "{:?}", t0.elapsed());
    }
}

/// The library's run on two devices ([`lstm_wgpu::run::train_on_devices`])
/// takes one process's steps to 1e-5, and calls back rank 0's.
#[test]
fn the_library_trains_on_two_devices() {
    let config = small(10);
    let one = lstm_wgpu::run::Run::new(config.clone(), Data::Settings)
        .and_then(|r| r.train(|_| Ok(())))
        .unwrap_or_else(|e| panic!("{e}"));
    let dev = lstm_wgpu::gpu::GpuOptions::default();
    let mut seen = 0;
    let two = lstm_wgpu::run::train_on_devices(config, Data::Settings, &[dev.clone(), dev], |_| {
        seen += 1;
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen, 10);
    assert_eq!(one.history.len(), two.history.len());
    for (a, b) in one.history.iter().zip(&two.history) {
        assert!(
            close(a.loss as f64, b.loss as f64, a.loss.abs() as f64),
            "{} against {}",
            a.loss,
            b.loss
        );
    }
}

/// A context's `wait_timeout` bounds every wait for the GPU: a wait for
/// work that outlasts it fails, naming the time, instead of blocking (so a
/// `--devices` rank on a hung driver returns, and its group ends).
#[test]
fn a_gpu_wait_past_its_timeout_fails() {
    use lstm_wgpu::GpuContext;
    use lstm_wgpu::kernels::gemm::{Gemm, GemmOp, GemmVariant, TileShape};
    let ctx = GpuContext::with_options(lstm_wgpu::gpu::GpuOptions {
        wait_timeout: Some(std::time::Duration::from_micros(1)),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let n = 512;
    let a = ctx.storage("a", n * n).unwrap_or_else(|e| panic!("{e}"));
    let c = ctx.storage("c", n * n).unwrap_or_else(|e| panic!("{e}"));
    let gemm = Gemm::new(&ctx, GemmVariant::Tiled, TileShape::DEFAULT);
    let op = GemmOp {
        m: n,
        n,
        k: n,
        trans_a: false,
        trans_b: false,
        a: (&a, 0, n),
        b: (&a, 0, n),
        c: (&c, 0, n),
        bias: None,
        alpha: 1.0,
        accumulate: false,
    };
    let ds = gemm
        .and_then(|g| g.dispatch(&ctx, &op))
        .unwrap_or_else(|e| panic!("{e}"));
    // A few products of 512³: far beyond a microsecond on any device.
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for _ in 0..4 {
            ds.iter().for_each(|d| d.record(&mut pass));
        }
    }
    ctx.queue.submit([enc.finish()]);
    let e = ctx.wait().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("the GPU did not finish within 0.0 s"), "{e:?}");
}
