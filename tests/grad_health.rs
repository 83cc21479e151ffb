//! `train`'s gradient health through the binary: explosions counted
//! against a fixed threshold, the clip norm and the running median;
//! a layer cut off from the loss counted as vanishing; the per-epoch
//! records, the metrics' step fields and the final line agree; a resumed
//! run counts as the uninterrupted one; a bad `--explode-threshold` is
//! refused before anything is written.

use lstm_wgpu::NamedTensor;
use serde_json::Value as Json;
use std::path::Path;

#[path = "common/cli.rs"]
mod cli;
#[path = "common/final_line.rs"]
mod final_line;
#[path = "common/tempdir.rs"]
mod tempdir;

use cli::{ok, run, s, stderr_lines};
use tempdir::TempDir;

/// The `name N` value of the final line.
fn final_count(out: &str, name: &str) -> u64 {
    let line = final_line::final_line(out);
    let w: Vec<&str> = line.split(' ').collect();
    let i = w
        .iter()
        .position(|x| *x == name)
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    w[i + 1].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The metrics file's step lines and epoch lines.
fn records(path: &Path) -> (Vec<Json>, Vec<Json>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let steps = all.iter().filter(|j| j.get("loss").is_some()).cloned();
    let epochs = all.iter().filter(|j| j.get("epoch").is_some()).cloned();
    (steps.collect(), epochs.collect())
}

fn int(j: &Json, key: &str) -> u64 {
    j[key].as_u64().unwrap_or_else(|| panic!("{key} in {j}"))
}

/// A 40-row series: 32 training rows, so with `--seq-len 4 --batch 4`
/// 7 batches (steps) an epoch.
fn series_csv(d: &TempDir) -> String {
    let p = d.join("s.csv");
    let mut text = String::from("t,y\n");
    for i in 0..40 {
        text += &format!("{i},{}\n", (i as f64 * 0.4).sin() + 0.1 * i as f64);
    }
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    s(&p).to_string()
}

const SERIES: [&str; 12] = [
    "train",
    "--seq-len",
    "4",
    "--batch",
    "4",
    "--hidden",
    "8",
    "--val-fraction",
    "0.2",
    "--val-every",
    "5",
    "--no-progress",
];

/// Every step counts over a tiny threshold, none under a huge one; the
/// epochs (7 steps, then the last 3) sum to the final line's total. The
/// plot, titled with the data file, draws the norms and the threshold
/// under the loss (log scale with --plot-log).
#[test]
fn explosions_over_a_fixed_threshold() {
    let d = TempDir::new("health-fixed");
    let csv = series_csv(&d);
    let (m, plot) = (d.join("m.jsonl"), d.join("p.svg"));
    for (x, want) in [("1e-30", 10), ("1e30", 0)] {
        let out = ok(&[
            &SERIES[..],
            &[
                "--data",
                &csv,
                "--steps",
                "10",
                &format!("--explode-threshold={x}"),
            ],
            &["--metrics", s(&m), "--plot", s(&plot), "--plot-log"],
        ]
        .concat());
        let svg = std::fs::read_to_string(&plot).unwrap_or_else(|e| panic!("{e}"));
        for want in [
            "lstm-wgpu series on s.csv",
            "loss (log scale)",
            "global gradient norm before clipping (log scale)",
            &format!("explosion threshold {}", x.parse::<f64>().unwrap_or(0.0)),
        ] {
            assert!(svg.contains(want), "{want}: {svg}");
        }
        // Train, validation and naive losses; norms and threshold.
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(out.contains("explosions"), "{out}");
        assert_eq!(final_count(&out, "explosions"), want, "{x}");
        let (steps, epochs) = records(&m);
        assert_eq!(steps.len(), 10);
        let flagged = steps.iter().filter(|j| j["explosion"] == true).count();
        assert_eq!(flagged as u64, want, "{x}");
        let fixed: f64 = x.parse().unwrap_or(f64::NAN);
        for j in &steps {
            let t = j["explode_threshold"].as_f64().unwrap_or(f64::NAN);
            assert!((t - fixed).abs() <= 1e-12 * fixed, "{j}");
        }
        let at: Vec<(u64, u64)> = epochs
            .iter()
            .map(|j| (int(j, "step"), int(j, "epoch")))
            .collect();
        assert_eq!(at, [(7, 1), (10, 2)]);
        let per: Vec<u64> = epochs.iter().map(|j| int(j, "explosions")).collect();
        assert_eq!(per, [want.min(7), want.saturating_sub(7)], "{x}");
        assert_eq!(int(&epochs[1], "explosions_total"), want);
    }
}

/// Without --explode-threshold: the clip norm when clipping, else 10× the
/// median of the norms before the step (none at the first step).
#[test]
fn default_thresholds_clip_norm_then_median() {
    let d = TempDir::new("health-default");
    let csv = series_csv(&d);
    let m = d.join("m.jsonl");
    let base = [&SERIES[..], &["--data", &csv, "--steps", "9"]].concat();
    let out = ok(&[&base[..], &["--clip-norm", "1e-6", "--metrics", s(&m)]].concat());
    assert_eq!(final_count(&out, "explosions"), 9);
    let (steps, _) = records(&m);
    for j in &steps {
        let t = j["explode_threshold"].as_f64().unwrap_or(f64::NAN);
        assert!((t - 1e-6f32 as f64).abs() <= 1e-12 * t, "{j}");
    }

    ok(&[&base[..], &["--lr", "0.5", "--metrics", s(&m)]].concat());
    let (steps, _) = records(&m);
    let norms: Vec<f64> = steps
        .iter()
        .map(|j| j["grad_norm"].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert!(steps[0]["explode_threshold"].is_null());
    for (k, j) in steps.iter().enumerate().skip(1) {
        let mut before: Vec<f64> = norms[..k].iter().map(|&v| v as f32 as f64).collect();
        before.sort_by(f64::total_cmp);
        let n = before.len();
        let median = match n % 2 {
            1 => before[n / 2],
            _ => (before[n / 2 - 1] + before[n / 2]) / 2.0,
        };
        let t = j["explode_threshold"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (t - 10.0 * median).abs() <= 1e-12 * t,
            "step {}: {t} vs {median}",
            k + 1
        );
        assert_eq!(j["explosion"], norms[k] > t, "step {}", k + 1);
    }
}

/// Layer 1's input weights set to zero cut layer 0 off from the loss: its
/// gradients are zero, so at lr 0 it vanishes at every step, and every
/// step line, epoch line and the final line say so.
#[test]
fn a_layer_cut_off_from_the_loss_vanishes() {
    let d = TempDir::new("health-vanish");
    let (ck, init, m) = (d.join("ck.st"), d.join("init.st"), d.join("m.jsonl"));
    let small: Vec<&str> = "train --hidden 8 --batch 2 --seq-len 4 --no-progress"
        .split(' ')
        .collect();
    ok(&[&small[..], &["--steps", "0", "--checkpoint", s(&ck)]].concat());
    let f = lstm_wgpu::io::TensorFile::read(&ck).unwrap_or_else(|e| panic!("{e}"));
    let (floats, _) = f.params_and_counters().unwrap_or_else(|e| panic!("{e}"));
    let model: Vec<NamedTensor> = floats
        .into_iter()
        .filter(|t| !t.name.starts_with("train.") && !t.name.starts_with("optimizer."))
        .map(|mut t| {
            if t.name == "lstm.weight_ih_l1" {
                t.data.fill(0.0);
            }
            t
        })
        .collect();
    lstm_wgpu::io::write(&init, &model, None).unwrap_or_else(|e| panic!("{e}"));
    let out = ok(&[
        &small[..],
        &["--steps", "3", "--optimizer", "sgd", "--lr", "0"],
        &["--init", s(&init), "--metrics", s(&m)],
    ]
    .concat());
    assert_eq!(final_count(&out, "vanishing"), 3);
    let (steps, epochs) = records(&m);
    for j in &steps {
        assert_eq!(j["vanishing_layers"], serde_json::json!([0]), "{j}");
        let layers = &j["layer_grad_norms"];
        assert_eq!(layers[0].as_f64(), Some(0.0), "{j}");
        assert!(layers[1].as_f64().is_some_and(|v| v > 0.0), "{j}");
        assert_eq!(j["grad_norms"]["weight_hh_l0"].as_f64(), Some(0.0), "{j}");
        assert!(
            j["grad_norms"]["head.bias"]
                .as_f64()
                .is_some_and(|v| v > 0.0)
        );
    }
    assert_eq!(epochs.len(), 1);
    assert_eq!(int(&epochs[0], "vanishing"), 3);
}

/// Stopped mid-epoch and resumed, a run writes the uninterrupted run's
/// metrics (thresholds from the restored median window included) and
/// epoch counts, and ends with its final line; --explode-threshold is
/// kept from the checkpoint.
#[test]
fn resumed_run_counts_as_uninterrupted() {
    let d = TempDir::new("health-resume");
    let csv = series_csv(&d);
    let (ck, ma, mb) = (d.join("ck.st"), d.join("a.jsonl"), d.join("b.jsonl"));
    let strip = |p: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{e}"));
        text.lines()
            .map(|l| match l.find(",\"tokens_per_s\"") {
                Some(i) => l[..i].to_string(),
                None => l.to_string(),
            })
            .collect()
    };
    // The median's run, then a threshold some steps of the first epoch
    // exceed before the stop and some after it.
    for extra in [&["--lr", "0.5"][..], &["--explode-threshold", "1"]] {
        let base = [&SERIES[..], &["--data", &csv, "--steps", "12"], extra].concat();
        let full = ok(&[&base[..], &["--metrics", s(&ma)]].concat());
        ok(&[
            &base[..],
            &[
                "--metrics",
                s(&mb),
                "--checkpoint",
                s(&ck),
                "--stop-after",
                "5",
            ],
        ]
        .concat());
        let resumed = ok(&[
            "train",
            "--resume",
            s(&ck),
            "--metrics",
            s(&mb),
            "--no-progress",
        ]);
        assert_eq!(strip(&ma), strip(&mb), "{extra:?}");
        assert_eq!(
            final_line::final_line(&full),
            final_line::final_line(&resumed)
        );
        let (steps, epochs) = records(&mb);
        assert_eq!(steps.len(), 12);
        let flagged = steps.iter().filter(|j| j["explosion"] == true).count() as u64;
        let summed: u64 = epochs.iter().map(|j| int(j, "explosions")).sum();
        assert_eq!(
            (flagged, summed),
            (final_count(&full, "explosions"), flagged)
        );
    }
    // The fixed threshold's run must have counted some and not all.
    let n = final_count(
        &ok(&["train", "--resume", s(&ck), "--no-progress"]),
        "explosions",
    );
    assert!(n > 0 && n < 12, "{n}");
}

/// A threshold that is not a finite number > 0: exit 2, one line naming
/// the flag, no output file; also on --resume.
#[test]
fn bad_explode_threshold_is_refused_before_any_output() {
    let d = TempDir::new("health-bad");
    let (m, ck) = (d.join("m.jsonl"), d.join("ck.st"));
    let outs = ["--metrics", s(&m), "--checkpoint", s(&ck), "--no-progress"];
    for x in ["0", "-1", "nan", "inf", "1e400"] {
        let flag = format!("--explode-threshold={x}");
        let o = run(&[&["train", "--steps", "1", &flag], &outs[..]].concat());
        let lines = stderr_lines(&o);
        assert_eq!(o.status.code(), Some(2), "{x}: {lines:?}");
        assert_eq!(lines.len(), 1, "{x}: {lines:?}");
        assert!(
            lines[0].starts_with("error: --explode-threshold"),
            "{x}: {lines:?}"
        );
        assert!(d.files().is_empty(), "{x}: {:?}", d.files());
    }
    let first: Vec<&str> = "train --steps 1 --hidden 8 --no-progress"
        .split(' ')
        .collect();
    ok(&[&first[..], &["--checkpoint", s(&ck)]].concat());
    let o = run(&[
        "train",
        "--resume",
        s(&ck),
        "--explode-threshold",
        "0",
        "--steps",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--explode-threshold 0"));
}

/// A checkpoint whose median window is too long or holds a negative norm
/// is refused on --resume, naming the tensor.
#[test]
fn bad_stored_window_is_refused() {
    let d = TempDir::new("health-window");
    let (ck, bad) = (d.join("ck.st"), d.join("bad.st"));
    let args: Vec<&str> = "train --steps 3 --stop-after 2 --hidden 8 --no-progress"
        .split(' ')
        .collect();
    ok(&[&args[..], &["--checkpoint", s(&ck)]].concat());
    let f = lstm_wgpu::io::TensorFile::read(&ck).unwrap_or_else(|e| panic!("{e}"));
    let (floats, ints) = f.params_and_counters().unwrap_or_else(|e| panic!("{e}"));
    for (data, want) in [(vec![1.0; 101], "n <= 100"), (vec![-1.0], "negative")] {
        let edited: Vec<NamedTensor> = floats
            .iter()
            .map(|t| match t.name.as_str() {
                "train.grad_norm_window" => {
                    NamedTensor::new(&t.name, vec![data.len()], data.clone())
                }
                _ => t.clone(),
            })
            .collect();
        lstm_wgpu::io::write_with_counters(&bad, &edited, &ints, Some(f.metadata.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let o = run(&["train", "--resume", s(&bad), "--no-progress"]);
        let lines = stderr_lines(&o);
        assert_eq!(o.status.code(), Some(2), "{lines:?}");
        assert!(
            lines.len() == 1 && lines[0].contains("train.grad_norm_window"),
            "{lines:?}"
        );
        assert!(lines[0].contains(want), "{lines:?}");
    }
}
