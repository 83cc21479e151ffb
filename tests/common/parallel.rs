//! What the data-parallel tests compare (tests/mpi.rs, tests/devices.rs):
//! the losses of a metrics file, checkpoints to 1e-5 or bit for bit, and
//! the parameters' CRC-32C each rank reports. Included by path.
#![allow(dead_code)]

use lstm_wgpu::io::TensorFile;
use std::path::Path;

pub fn p(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

/// (step, key, value) of every `loss` and `val_loss` in a metrics file.
pub fn losses(path: &Path) -> Vec<(i64, &'static str, f64)> {
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

pub fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-5 * scale
}

/// Two checkpoints: the same counters, and every float tensor equal to 1e-5 of each tensor's
/// largest magnitude (`exact`: bit for bit).
pub fn same_checkpoints(a: &Path, b: &Path, exact: bool) {
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
pub fn rank_crcs(stderr: &str, ranks: usize) -> Vec<String> {
    (0..ranks)
        .map(|r| {
            let head = format!("rank {r} of {ranks}: parameters crc32c ");
            let line = stderr.lines().find_map(|l| l.strip_prefix(&head));
            line.unwrap_or_else(|| panic!("no `{head}` line in {stderr}"))
                .to_string()
        })
        .collect()
}

/// The small text model both compare: 50 steps, batch 8, validated at 25.
pub const TEXT_MODEL: [&str; 12] = [
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
];

/// The small series model both compare (on examples/data/sunspots.csv):
/// 50 steps, batch 16, validated at 25.
pub fn series_model(csv: &Path) -> Vec<&str> {
    let mut v = vec![
        "train",
        "--data",
        p(csv),
        "--seq-len",
        "12",
        "--hidden",
        "16",
    ];
    v.extend([
        "--steps",
        "50",
        "--batch",
        "16",
        "--val-every",
        "25",
        "--no-progress",
    ]);
    v
}

/// examples/data/sunspots.csv.
pub fn sunspots() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/sunspots.csv")
}

/// Checks the stderr `err` of a two-rank run of `args`: each rank says its
/// adapter and its half of every global batch, and both report the same
/// parameters' CRC, which it returns.
pub fn two_ranks_agree(args: &[&str], err: &str) -> Vec<String> {
    let batch: usize = (args.iter().position(|a| *a == "--batch"))
        .and_then(|i| args[i + 1].parse().ok())
        .unwrap_or_else(|| panic!("no --batch"));
    for r in 0..2 {
        let (from, to) = (r * batch / 2, (r + 1) * batch / 2);
        let want = format!("rank {r} of 2: sequences {from}..{to} of each global batch of {batch}");
        assert!(err.contains(&want), "no `{want}` in {err}");
        // Rank r opens adapter r modulo the adapters (or its entry of
        // --devices): lavapipe for both.
        let adapter = format!("rank {r} of 2: adapter: ");
        assert!(err.contains(&adapter), "no `{adapter}` in {err}");
    }
    let crcs = rank_crcs(err, 2);
    assert_eq!(crcs[0], crcs[1], "the ranks' parameters differ: {err}");
    crcs
}

/// The losses of metrics files `one` and `two` of 50-step runs: the same
/// steps, each loss within 1e-5 relative; the largest relative difference.
pub fn same_losses(one: &Path, two: &Path) -> f64 {
    let (l1, l2) = (losses(one), losses(two));
    assert_eq!(l1.len(), l2.len());
    assert_eq!(l1.iter().filter(|l| l.1 == "loss").count(), 50);
    assert!(l1.iter().any(|l| l.1 == "val_loss"));
    let mut worst = 0f64;
    for (a, b) in l1.iter().zip(&l2) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        assert!(close(a.2, b.2, a.2.abs()), "{a:?} against {b:?}");
        worst = worst.max((a.2 - b.2).abs() / a.2.abs());
    }
    worst
}
