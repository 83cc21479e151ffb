//! Data-parallel training under `mpirun` (cargo feature `mpi`; needs
//! OpenMPI's mpirun, `.ci/setup-mpi`). Two ranks on the one adapter
//! (lavapipe in CI) train a text and a series model 50 steps: every step's
//! loss, the validation losses and the final checkpoint equal a single
//! process's with the same global batch to 1e-5 relative (the same sums
//! grouped otherwise), both ranks end with bit-identical parameters, a run
//! stopped and resumed equals the uninterrupted one bit for bit, one
//! process resumes the two ranks' checkpoint, and a batch that does not
//! divide over the ranks is refused by name.
#![cfg(feature = "mpi")]

use lstm_wgpu::io::TensorFile;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

#[path = "common/tempdir.rs"]
mod tempdir;
use tempdir::TempDir;

fn p(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

/// `BIN args` on `ranks` MPI ranks (`None`: without mpirun).
fn launch(ranks: Option<usize>, args: &[&str]) -> Output {
    let mut c = match ranks {
        None => Command::new(BIN),
        Some(n) => {
            let mut c = Command::new("mpirun");
            c.args(["-np", &n.to_string(), "--oversubscribe", BIN]);
            c
        }
    };
    // CI runs as root, which OpenMPI refuses unless told; containers often
    // forbid the cross-process memory copy of its shared-memory transport.
    c.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {BIN} (or mpirun): {e}"))
}

fn ok(ranks: Option<usize>, args: &[&str]) -> String {
    let o = launch(ranks, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{ranks:?} ranks, {args:?} failed: {err}"
    );
    err
}

/// (step, key, value) of every `loss` and `val_loss` in a metrics file.
fn losses(path: &Path) -> Vec<(i64, &'static str, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        for key in ["loss", "val_loss"] {
            if let (Some(s), Some(x)) = (v["step"].as_i64(), v[key].as_f64()) {
                out.push((s, key, x));
            }
        }
    }
    out
}

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-5 * scale
}

/// Two checkpoints: the same counters, and every float tensor equal to 1e-5 of each tensor's
/// largest magnitude (`exact`: bit for bit).
fn same_checkpoints(a: &Path, b: &Path, exact: bool) {
    let [(ta, ca), (tb, cb)] = [a, b].map(|f| {
        TensorFile::read(f)
            .and_then(|t| t.params_and_counters())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
    });
    assert_eq!(ca, cb);
    assert_eq!(ta.len(), tb.len());
    for (x, y) in ta.iter().zip(&tb) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        let scale = x.data.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (i, (u, v)) in x.data.iter().zip(&y.data).enumerate() {
            let same = match exact {
                true => u.to_bits() == v.to_bits(),
                false => close(*u as f64, *v as f64, scale),
            };
            assert!(same, "{}[{i}]: {u} against {v}", x.name);
        }
    }
}

/// The parameters' CRC-32C each rank reports, in rank order.
fn rank_crcs(stderr: &str, ranks: usize) -> Vec<String> {
    (0..ranks)
        .map(|r| {
            let head = format!("rank {r} of {ranks}: parameters crc32c ");
            let line = stderr.lines().find_map(|l| l.strip_prefix(&head));
            line.unwrap_or_else(|| panic!("no `{head}` line in {stderr}"))
                .to_string()
        })
        .collect()
}

/// Trains `args` 50 steps in one process and on two ranks, and compares.
fn one_against_two(tag: &str, args: &[&str]) {
    let dir = TempDir::new(tag);
    let run = |ranks: Option<usize>, name: &str| {
        let (m, ck) = (
            dir.join(format!("{name}.jsonl")),
            dir.join(format!("{name}.st")),
        );
        let extra = ["--metrics", p(&m), "--checkpoint", p(&ck)];
        let err = ok(ranks, &[args, &extra[..]].concat());
        (m, ck, err)
    };
    let (m1, ck1, _) = run(None, "one");
    let (m2, ck2, err) = run(Some(2), "two");
    // Each rank trained on its half of every global batch.
    let at = args
        .iter()
        .position(|a| *a == "--batch")
        .map(|i| args[i + 1]);
    let batch: usize = at
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no --batch"));
    for r in 0..2 {
        let (from, to) = (r * batch / 2, (r + 1) * batch / 2);
        let want = format!("rank {r} of 2: sequences {from}..{to} of each global batch of {batch}");
        assert!(err.contains(&want), "no `{want}` in {err}");
        // Rank r opens adapter r modulo the adapters: lavapipe for both.
        let adapter = format!("rank {r} of 2: adapter: ");
        assert!(err.contains(&adapter), "no `{adapter}` in {err}");
    }
    let crcs = rank_crcs(&err, 2);
    assert_eq!(crcs[0], crcs[1], "the ranks' parameters differ: {err}");
    let (l1, l2) = (losses(&m1), losses(&m2));
    assert_eq!(l1.len(), l2.len());
    assert!(l1.iter().filter(|l| l.1 == "loss").count() == 50);
    assert!(l1.iter().any(|l| l.1 == "val_loss"));
    for (a, b) in l1.iter().zip(&l2) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        assert!(close(a.2, b.2, a.2.abs()), "{a:?} against {b:?}");
    }
    same_checkpoints(&ck1, &ck2, false);
    same_checkpoints(&dir.join("one.st.best"), &dir.join("two.st.best"), false);

    // Stopped at step 20 and resumed: the same run, bit for bit.
    let ck = dir.join("resumed.st");
    let stop = ["--checkpoint", p(&ck), "--stop-after", "20"];
    ok(Some(2), &[args, &stop[..]].concat());
    let at20 = dir.join("at20.st");
    std::fs::copy(&ck, &at20).unwrap_or_else(|e| panic!("{e}"));
    let resume = |from: &Path, to: &Path| {
        [
            "train",
            "--resume",
            p(from),
            "--checkpoint",
            p(to),
            "--no-progress",
        ]
        .map(String::from)
    };
    ok(Some(2), &resume(&ck, &ck).each_ref().map(String::as_str));
    same_checkpoints(&ck2, &ck, true);
    // The checkpoint holds the whole batch's state: one process resumes it.
    let one = dir.join("one-resumed.st");
    ok(None, &resume(&at20, &one).each_ref().map(String::as_str));
    same_checkpoints(&ck1, &one, false);
}

#[test]
fn text_on_two_ranks_equals_one_process() {
    one_against_two(
        "mpi-text",
        &[
            "train",
            "--steps",
            "50",
            "--hidden",
            "32",
            "--seq-len",
            "16",
            "--batch",
            "8",
            "--val-every",
            "25",
            "--no-progress",
        ],
    );
}

#[test]
fn series_on_two_ranks_equals_one_process() {
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/sunspots.csv");
    one_against_two(
        "mpi-series",
        &[
            "train",
            "--data",
            p(&csv),
            "--seq-len",
            "12",
            "--hidden",
            "16",
            "--steps",
            "50",
            "--batch",
            "16",
            "--val-every",
            "25",
            "--no-progress",
        ],
    );
}

#[test]
fn a_batch_that_does_not_divide_is_refused() {
    let o = launch(Some(2), &["train", "--batch", "7", "--steps", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(!lines.is_empty(), "{err}");
    for l in lines {
        assert!(
            l.contains("--batch 7") && l.contains("2 MPI ranks"),
            "{err}"
        );
    }
}
