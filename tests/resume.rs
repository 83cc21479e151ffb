//! Checkpoints and `--resume` through the binary: stored settings, counters
//! and state are checked as strictly as the command line; readers refuse
//! tensors they would ignore; flags on resume apply or are refused by name;
//! the metrics file and the loss plot continue without duplicates; a run of
//! zero steps exports its initial model.

use lstm_wgpu::NamedTensor;
use lstm_wgpu::io::{self, TensorFile};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

#[path = "common/final_line.rs"]
mod final_line;
#[path = "common/tempdir.rs"]
mod tempdir;

use final_line::final_line;
use tempdir::TempDir;

fn run_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn ok_in(dir: Option<&Path>, args: &[&str]) -> (String, String) {
    let o = run_in(dir, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?} failed: {err}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

fn ok(args: &[&str]) -> (String, String) {
    ok_in(None, args)
}

/// Runs `args`, expecting exit 2 and one `error:` line containing every
/// one of `want`.
fn refused(args: &[&str], want: &[&str]) {
    let o = run_in(None, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: no `{w}` in {err}");
    }
}

fn p(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

const SMALL: [&str; 9] = [
    "--hidden",
    "32",
    "--batch",
    "2",
    "--seq-len",
    "4",
    "--val-every",
    "2",
    "--no-progress",
];

/// A checkpoint's tensors and counters, to edit and write back.
struct Ck {
    floats: Vec<NamedTensor>,
    ints: BTreeMap<String, i64>,
    meta: std::collections::HashMap<String, String>,
}

impl Ck {
    fn read(path: &Path) -> Self {
        let f = TensorFile::read(path).unwrap_or_else(|e| panic!("{e}"));
        let (floats, ints) = f.params_and_counters().unwrap_or_else(|e| panic!("{e}"));
        Ck {
            floats,
            ints,
            meta: f.metadata,
        }
    }
    fn write(&self, path: &Path) {
        io::write_with_counters(path, &self.floats, &self.ints, Some(self.meta.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    /// Replaces the line `key = …` of the `config` metadata.
    fn config(mut self, key: &str, value: &str) -> Self {
        let c = &self.meta["config"];
        let prefix = format!("{key} = ");
        assert!(c.lines().any(|l| l.starts_with(&prefix)), "{key} in {c}");
        let new: Vec<String> = c
            .lines()
            .map(|l| match l.starts_with(&prefix) {
                true => format!("{prefix}{value}"),
                false => l.to_string(),
            })
            .collect();
        self.meta.insert("config".into(), new.join("\n") + "\n");
        self
    }
    fn int(mut self, name: &str, v: i64) -> Self {
        self.ints.insert(name.into(), v);
        self
    }
    fn float(mut self, name: &str, i: usize, v: f32) -> Self {
        let t = self.floats.iter_mut().find(|t| t.name == name);
        t.unwrap_or_else(|| panic!("no {name}")).data[i] = v;
        self
    }
    fn extra(mut self, name: &str) -> Self {
        self.floats
            .push(NamedTensor::new(name, vec![2], vec![0.5, 0.5]));
        self
    }
    fn names(&self) -> Vec<&str> {
        self.floats.iter().map(|t| t.name.as_str()).collect()
    }
}

/// `--resume` of a checkpoint with a bad stored setting, counter or value
/// is refused naming the file and the setting or tensor, and creates none
/// of the run's output files.
#[test]
fn resume_checks_stored_settings_counters_and_values() {
    let d = TempDir::new("bad");
    let (ck, bn) = (d.join("ck.st"), d.join("bn.st"));
    let mut args = vec!["train", "--steps", "4", "--stop-after", "2"];
    args.extend(SMALL);
    ok(&[
        &args[..],
        &["--optimizer", "amsgrad", "--checkpoint", p(&ck)],
    ]
    .concat());
    ok(&[&args[..], &["--norm", "batch", "--checkpoint", p(&bn)]].concat());
    assert!(
        Ck::read(&bn)
            .names()
            .contains(&"lstm.batch_norms.0.running_var")
    );
    let base = || Ck::read(&ck);
    let bad = d.join("bad.st");
    let (out, m) = (d.join("out.st"), d.join("m.jsonl"));
    let cases: Vec<(Ck, &[&str])> = vec![
        (base().config("task", "\"bogus\""), &["--task bogus"]),
        (
            base().config("optimizer", "\"bogus\""),
            &["--optimizer bogus"],
        ),
        (
            base().config("schedule", "\"bogus\""),
            &["--schedule bogus"],
        ),
        (base().config("val-every", "0"), &["--val-every"]),
        (base().config("norm", "\"group\""), &["--norm group"]),
        (base().config("dropout", "1.5"), &["--dropout 1.5"]),
        (base().config("lr", "-1.0"), &["-1"]),
        (base().int("train.step", -1), &["train.step", "-1"]),
        (base().int("train.step", 5), &["train.step", "5"]),
        (base().int("optimizer.step", -1), &["optimizer.step"]),
        (base().int("optimizer.step", 3), &["optimizer.step"]),
        (base().int("train.skipped", -2), &["train.skipped"]),
        (base().int("train.bad_vals", -1), &["train.bad_vals"]),
        (
            base().float("optimizer.exp_avg_sq", 3, -1e-3),
            &["optimizer.exp_avg_sq", "negative"],
        ),
        (
            base().float("optimizer.max_exp_avg_sq", 0, -1.0),
            &["optimizer.max_exp_avg_sq", "negative"],
        ),
        (
            base().float("optimizer.exp_avg", 1, f32::NAN),
            &["optimizer.exp_avg", "non-finite"],
        ),
        (
            base().float("lstm.weight_hh_l0", 0, f32::INFINITY),
            &["lstm.weight_hh_l0", "non-finite"],
        ),
        (
            Ck::read(&bn).float("lstm.batch_norms.0.running_var", 2, -0.5),
            &["lstm.batch_norms.0.running_var", "negative"],
        ),
        (
            Ck::read(&bn).int("lstm.batch_norms.0.num_batches_tracked", -1),
            &["num_batches_tracked"],
        ),
    ];
    let n = cases.len();
    for (mut c, want) in cases {
        c.meta.insert("note".into(), "edited".into());
        c.write(&bad);
        let args = [
            "train",
            "--resume",
            p(&bad),
            "--checkpoint",
            p(&out),
            "--metrics",
            p(&m),
            "--no-progress",
        ];
        let mut want = want.to_vec();
        want.push(p(&bad));
        refused(&args, &want);
        assert!(!out.exists() && !m.exists(), "{want:?}: an output file");
    }
    // best_val metadata that is not a loss.
    let mut c = base();
    c.meta.insert("best_val".into(), "NaN".into());
    c.write(&bad);
    refused(
        &["train", "--resume", p(&bad), "--no-progress"],
        &["best_val", p(&bad)],
    );
    assert!(n >= 19);
}

/// Every reader of weights or checkpoints (`--resume`, `--init`,
/// `generate`, `predict`) refuses a tensor it would ignore, naming it;
/// `--init` of a checkpoint uses its weights and says that its optimizer
/// state is not used.
#[test]
fn readers_refuse_tensors_they_would_ignore() {
    let d = TempDir::new("names");
    let ck = d.join("ck.st");
    let mut args = vec!["train", "--steps", "2"];
    args.extend(SMALL);
    ok(&[&args[..], &["--checkpoint", p(&ck)]].concat());
    let bad = d.join("bad.st");
    let resume = |f: &Path, want: &[&str]| {
        refused(
            &["train", "--resume", p(f), "--steps", "3", "--no-progress"],
            want,
        )
    };
    for name in [
        "lstm.weight_hh_l9",
        "head.scale",
        "train.extra",
        "optimizer.momentum_buffer",
    ] {
        Ck::read(&ck).extra(name).write(&bad);
        resume(&bad, &[name, "unexpected", p(&bad)]);
        // Any optimizer's state is a checkpoint's, which --init accepts.
        if !name.starts_with("optimizer.") {
            refused(
                &[&args[..], &["--init", p(&bad)]].concat(),
                &[name, "unexpected"],
            );
        }
        refused(
            &["generate", "--checkpoint", p(&bad)],
            &[name, "unexpected"],
        );
    }
    // An integer tensor nobody reads.
    Ck::read(&ck).int("train.epoch", 1).write(&bad);
    resume(&bad, &["train.epoch", "integer"]);
    refused(&["generate", "--checkpoint", p(&bad)], &["train.epoch"]);
    // --init of a checkpoint: weights used, the rest named as not used.
    let (_, err) = ok(&[&args[..], &["--init", p(&ck)]].concat());
    assert!(
        err.contains("note: --init") && err.contains("optimizer"),
        "{err}"
    );

    let csv = d.join("s.csv");
    let mut text = String::from("a,y\n");
    for i in 0..80 {
        let t = i as f64 * 0.3;
        text += &format!("{},{}\n", t.sin(), (t + 0.3).sin());
    }
    std::fs::write(&csv, text).unwrap_or_else(|e| panic!("{e}"));
    let sck = d.join("series.st");
    ok(&[
        &[
            "train",
            "--task",
            "series",
            "--data",
            p(&csv),
            "--steps",
            "2",
        ][..],
        &SMALL,
        &["--checkpoint", p(&sck)],
    ]
    .concat());
    ok(&["predict", "--checkpoint", p(&sck), "--data", p(&csv)]);
    Ck::read(&sck).extra("lstm.bias_ih_l5").write(&bad);
    refused(
        &["predict", "--checkpoint", p(&bad), "--data", p(&csv)],
        &["lstm.bias_ih_l5", "unexpected"],
    );
}

/// The metadata of a checkpoint is checked by every reader: a series
/// checkpoint without its normalizer or a text one without its vocabulary
/// is refused (not refitted or guessed), corrupt ones name the file, a
/// `precision` other than f32 or f16-mixed is refused, also by `--init`.
#[test]
fn readers_check_the_checkpoint_metadata() {
    let d = TempDir::new("meta");
    let (ck, sck, csv, bad) = (
        d.join("t.st"),
        d.join("s.st"),
        d.join("s.csv"),
        d.join("bad.st"),
    );
    let mut args = vec!["train", "--steps", "2"];
    args.extend(SMALL);
    ok(&[&args[..], &["--checkpoint", p(&ck)]].concat());
    let mut text = String::from("a,y\n");
    for i in 0..80 {
        let t = i as f64 * 0.3;
        text += &format!("{},{}\n", t.sin(), (t + 0.3).sin());
    }
    std::fs::write(&csv, text).unwrap_or_else(|e| panic!("{e}"));
    let series = [&args[..], &["--task", "series", "--data", p(&csv)]].concat();
    ok(&[&series[..], &["--checkpoint", p(&sck)]].concat());

    let resume = [
        "train",
        "--resume",
        p(&bad),
        "--steps",
        "3",
        "--no-progress",
    ];
    let predict = ["predict", "--checkpoint", p(&bad), "--data", p(&csv)];
    let generate = ["generate", "--checkpoint", p(&bad)];
    let edited = |from: &Path, key: &str, value: Option<&str>| {
        let mut c = Ck::read(from);
        match value {
            Some(v) => c.meta.insert(key.into(), v.into()),
            None => c.meta.remove(key),
        };
        c.write(&bad);
    };
    edited(&sck, "normalizer", None);
    for cmd in [&resume[..], &predict] {
        refused(
            cmd,
            &[p(&bad), "no `normalizer` metadata", "series checkpoint"],
        );
    }
    let long = format!("target\t1{}\t1\ty", "0".repeat(400));
    for corrupt in ["feature\tx\t1\ta\ntarget\t0\t1\ty\n", long.as_str()] {
        edited(&sck, "normalizer", Some(corrupt));
        for cmd in [&resume[..], &predict] {
            refused(cmd, &[p(&bad), "bad `normalizer` metadata", "line 1"]);
        }
    }
    let o = run_in(None, &predict);
    assert!(
        o.stderr.len() < 400,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    edited(&sck, "vocab", Some("ab"));
    refused(&predict, &[p(&bad), "`vocab` metadata, which a series"]);
    edited(&ck, "vocab", None);
    for cmd in [&resume[..], &generate] {
        refused(cmd, &[p(&bad), "no `vocab` metadata", "text checkpoint"]);
    }
    edited(&ck, "vocab", Some("ba"));
    refused(
        &generate,
        &[p(&bad), "bad `vocab` metadata", "not strictly sorted"],
    );
    // Each reader on the other kind of checkpoint says what it reads.
    refused(
        &["predict", "--checkpoint", p(&ck), "--data", p(&csv)],
        &["a text checkpoint", "predict runs series checkpoints"],
    );
    refused(
        &["generate", "--checkpoint", p(&sck)],
        &["a series checkpoint", "generate samples from text"],
    );
    edited(&sck, "precision", Some("f64"));
    refused(&predict, &[p(&bad), "bad `precision` metadata `f64`"]);
    edited(&ck, "precision", Some("auto"));
    for cmd in [&resume[..], &generate] {
        refused(cmd, &[p(&bad), "bad `precision` metadata `auto`"]);
    }
    refused(
        &[&args[..], &["--init", p(&bad)]].concat(),
        &[p(&bad), "bad `precision` metadata"],
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn config_of(path: &Path) -> String {
    Ck::read(path).meta["config"].clone()
}

/// On `--resume`, a flag that changes the model or its data is refused by
/// name (from the command line or `--config`) unless equal to the stored
/// value; the others apply and the stored settings record them; the data
/// path is stored absolute.
#[test]
fn resume_flags_apply_or_are_refused() {
    let d = TempDir::new("flags");
    let ck = d.join("ck.st");
    let mut args = vec!["train", "--steps", "4", "--stop-after", "2"];
    args.extend(SMALL);
    ok(&[&args[..], &["--checkpoint", p(&ck)]].concat());
    let out = d.join("out.st");
    let resume = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["train", "--resume", p(&ck), "--checkpoint", p(&out)];
        v.push("--no-progress");
        v.extend(extra);
        v.into_iter().map(String::from).collect()
    };
    let toml = d.join("c.toml");
    std::fs::write(&toml, "hidden = 48\n").unwrap_or_else(|e| panic!("{e}"));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--hidden", "128"],
            vec!["--hidden 128", "the checkpoint has 32"],
        ),
        (vec!["--layers", "1"], vec!["--layers 1", "has 2"]),
        (vec!["--embed", "8"], vec!["--embed 8"]),
        (vec!["--batch", "4"], vec!["--batch 4", "has 2"]),
        (vec!["--seq-len", "8"], vec!["--seq-len 8", "has 4"]),
        (
            vec!["--optimizer", "sgd"],
            vec!["--optimizer sgd", "has adam"],
        ),
        (vec!["--task", "series"], vec!["--task series"]),
        (vec!["--dataset", "copy"], vec!["--dataset copy"]),
        (vec!["--norm", "layer"], vec!["--norm layer", "has none"]),
        (vec!["--residual"], vec!["--residual"]),
        (vec!["--seed", "9"], vec!["--seed 9"]),
        (vec!["--clip-norm", "1"], vec!["--clip-norm 1", "has none"]),
        (vec!["--weight-decay", "0.5"], vec!["--weight-decay 0.5"]),
        (vec!["--schedule", "cosine"], vec!["--schedule cosine"]),
        // Equal to the stored value, but of a schedule the run does not use.
        (
            vec!["--gamma", "0.5"],
            vec!["--gamma applies to --schedule step"],
        ),
        (vec!["--init", p(&ck)], vec!["--init"]),
        (vec!["--config", p(&toml)], vec!["--hidden 48", p(&toml)]),
        (vec!["--steps", "1"], vec!["--steps 1", "step 2"]),
        (vec!["--lr=-1"], vec!["-1"]),
        (vec!["--val-every", "0"], vec!["--val-every"]),
    ];
    for (extra, want) in &cases {
        let args = resume(extra);
        refused(&strs(&args), want);
        assert!(!out.exists(), "{extra:?}");
    }
    // Equal values are no change.
    ok(&strs(&resume(&[
        "--hidden",
        "32",
        "--batch",
        "2",
        "--stop-after",
        "3",
    ])));
    // --lr, --steps, --val-every and --patience apply and are recorded.
    let args = resume(&[
        "--lr",
        "0.01",
        "--steps",
        "6",
        "--val-every",
        "3",
        "--patience",
        "5",
    ]);
    ok(&strs(&args));
    let c = config_of(&out);
    for want in ["lr = 0.01", "steps = 6", "val-every = 3", "patience = 5"] {
        assert!(c.lines().any(|l| l == want), "{want} in {c}");
    }
    assert_eq!(Ck::read(&out).ints["train.step"], 6);

    // A relative --data is stored absolute: resuming from elsewhere works;
    // --data overrides it, and must fit the checkpoint's columns.
    let (a, b) = (d.join("a"), d.join("b"));
    std::fs::create_dir_all(&a).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&b).unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::from("x,y\n");
    for i in 0..80 {
        let t = i as f64 * 0.3;
        text += &format!("{},{}\n", t.sin(), t.cos());
    }
    std::fs::write(a.join("s.csv"), &text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("other.csv"), text.replace("x,y", "u,v"))
        .unwrap_or_else(|e| panic!("{e}"));
    let sck = d.join("s.st");
    ok_in(
        Some(&a),
        &[
            &["train", "--task", "series", "--data", "s.csv"][..],
            &["--steps", "4", "--stop-after", "2", "--checkpoint", p(&sck)],
            &SMALL,
        ]
        .concat(),
    );
    let stored = a.join("s.csv");
    assert!(
        config_of(&sck).contains(&format!("data = \"{}\"", p(&stored))),
        "{}",
        config_of(&sck)
    );
    ok_in(
        Some(&b),
        &[
            "train",
            "--resume",
            p(&sck),
            "--stop-after",
            "3",
            "--no-progress",
        ],
    );
    let o = run_in(
        Some(&b),
        &[
            "train",
            "--resume",
            p(&sck),
            "--data",
            p(&d.join("other.csv")),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("differ from the stored"), "{err}");
    // A stored path that does not resolve (moved data, or a relative path
    // from an older checkpoint) says it came from the checkpoint.
    let moved = d.join("moved.st");
    let mut c = Ck::read(&sck).config("data", "\"s.csv\"");
    c.meta.insert("note".into(), "edited".into());
    c.write(&moved);
    let o = run_in(Some(&b), &["train", "--resume", p(&moved), "--no-progress"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for want in [
        "s.csv: No such file or directory",
        "the data path stored in checkpoint",
        "relative to the current directory",
        "give the data with --data",
    ] {
        assert!(err.contains(want), "no `{want}` in {err}");
    }
    ok_in(
        Some(&a),
        &[
            "train",
            "--resume",
            p(&moved),
            "--stop-after",
            "3",
            "--no-progress",
        ],
    );
    assert!(cases.len() >= 19);
}

fn strip_rate(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.find(",\"tokens_per_s\"") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect()
}

fn points(svg: &str) -> Vec<usize> {
    svg.lines()
        .filter(|l| l.starts_with("<polyline"))
        .map(|l| l.matches(',').count())
        .collect()
}

/// The metrics file of a resumed run drops the lines written after the
/// checkpoint and equals the uninterrupted run's; the plot covers the
/// whole run; a refused or failed run creates no metrics file.
#[test]
fn metrics_and_plot_continue_across_resume() {
    let d = TempDir::new("metrics");
    let (ma, mb) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let (pa, pb) = (d.join("a.svg"), d.join("b.svg"));
    let ck = d.join("ck.st");
    let mut args = vec!["train", "--steps", "7"];
    args.extend(SMALL);
    ok(&[&args[..], &["--metrics", p(&ma), "--plot", p(&pa)]].concat());
    ok(&[
        &args[..],
        &[
            "--metrics",
            p(&mb),
            "--stop-after",
            "4",
            "--checkpoint",
            p(&ck),
        ],
    ]
    .concat());
    // As if the run had gone on past its checkpoint before dying.
    let mut m = std::fs::read_to_string(&mb).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(strip_rate(&m).len(), 4 + 2, "{m}");
    m += "{\"step\":5,\"loss\":9}\n{\"step\":6,\"val_loss\":9}\n{\"step\":7,\"lo";
    std::fs::write(&mb, &m).unwrap_or_else(|e| panic!("{e}"));
    ok(&[
        "train",
        "--resume",
        p(&ck),
        "--metrics",
        p(&mb),
        "--plot",
        p(&pb),
        "--no-progress",
    ]);
    let read = |f: &Path| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(strip_rate(&read(&ma)), strip_rate(&read(&mb)));
    let (sa, sb) = (read(&pa), read(&pb));
    // Training and validation losses, then the gradient norms.
    assert_eq!(points(&sa), [7, 4, 7]);
    assert_eq!(points(&sa), points(&sb));

    // Refused, and failing before the first checkpoint: no file.
    let m2 = d.join("none.jsonl");
    refused(
        &[
            "train",
            "--resume",
            p(&ck),
            "--hidden",
            "64",
            "--metrics",
            p(&m2),
        ],
        &["--hidden 64"],
    );
    let o = run_in(
        None,
        &[
            &[
                "train",
                "--norm",
                "step-batch",
                "--batch",
                "1",
                "--hidden",
                "32",
            ][..],
            &["--seq-len", "4", "--steps", "1", "--metrics", p(&m2)],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!m2.exists());
}

/// `--steps 0` and `--epochs 0` write the initial model as a checkpoint;
/// resuming it equals a fresh run bit for bit.
#[test]
fn zero_steps_export_the_initial_model() {
    let d = TempDir::new("zero");
    let (z, e, f, r) = (
        d.join("z.st"),
        d.join("e.st"),
        d.join("f.st"),
        d.join("r.st"),
    );
    let mut args = vec!["train", "--seed", "4"];
    args.extend(SMALL);
    ok(&[&args[..], &["--steps", "0", "--checkpoint", p(&z)]].concat());
    ok(&[&args[..], &["--epochs", "0", "--checkpoint", p(&e)]].concat());
    ok(&[&args[..], &["--steps", "3", "--checkpoint", p(&f)]].concat());
    let (zc, ec) = (Ck::read(&z), Ck::read(&e));
    assert_eq!(zc.ints["train.step"], 0);
    assert_eq!(zc.ints["optimizer.step"], 0);
    let w = |c: &Ck| {
        c.floats
            .iter()
            .find(|t| t.name == "lstm.weight_ih_l0")
            .map(|t| t.data.clone())
    };
    assert!(w(&zc).is_some());
    assert_eq!(w(&zc), w(&ec));
    ok(&[
        "train",
        "--resume",
        p(&z),
        "--steps",
        "3",
        "--checkpoint",
        p(&r),
        "--no-progress",
    ]);
    let (fc, rc) = (Ck::read(&f), Ck::read(&r));
    assert_eq!(fc.names(), rc.names());
    for (x, y) in fc.floats.iter().zip(&rc.floats) {
        assert!(x.data == y.data, "{}", x.name);
    }
    assert_eq!(fc.ints, rc.ints);
}

/// Checkpoints written before the settings became typed (commit fc4b1ba:
/// `tests/fixtures/checkpoints/`, stopped at step 4 of 8) still resume,
/// and finish as an uninterrupted run of today's binary with the same
/// flags does; the text one still generates.
#[test]
fn checkpoints_of_an_earlier_version_resume() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints");
    let common = [
        "--hidden",
        "4",
        "--layers",
        "2",
        "--batch",
        "2",
        "--seq-len",
        "8",
        "--steps",
        "8",
        "--val-every",
        "4",
        "--no-progress",
    ];
    let text = [
        "--dataset",
        "text",
        "--embed",
        "4",
        "--val-fraction",
        "0.01",
        "--optimizer",
        "amsgrad",
        "--schedule",
        "cosine",
        "--warmup",
        "2",
        "--norm",
        "layer",
        "--init-whh",
        "orthogonal",
        "--init-wih",
        "xavier",
    ];
    let series = [
        "--dataset",
        "mackey-glass",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
        "--schedule",
        "step",
        "--step-size",
        "2",
        "--norm",
        "step-batch",
    ];
    let d = TempDir::new("old-checkpoints");
    for (name, flags) in [("text_v0", &text[..]), ("series_v0", &series[..])] {
        let old = fixtures.join(format!("{name}.safetensors"));
        let out = d.join(format!("{name}.st"));
        let (resumed, _) = ok(&[
            "train",
            "--resume",
            p(&old),
            "--checkpoint",
            p(&out),
            "--no-progress",
        ]);
        let (fresh, _) = ok(&[&["train"][..], &common, flags].concat());
        assert!(resumed.contains("step 8 "), "{name}: {resumed}");
        assert_eq!(final_line(&resumed), final_line(&fresh), "{name}");
        assert_eq!(
            config_of(&out),
            config_of(&old),
            "{name}: settings rewritten differently"
        );
    }
    let (sample, _) = ok(&[
        "generate",
        "--checkpoint",
        p(&fixtures.join("text_v0.safetensors")),
        "--length",
        "20",
    ]);
    assert!(!sample.is_empty());
}
