//! `lstm_wgpu::run`, the library's `train`: the same settings give the CLI's
//! losses step by step and its checkpoint byte for byte; data given in
//! memory (rows of a series, token ids) trains the model the CLI trains on
//! the file they came from; the callback sees every step and can stop the
//! run; a run resumed from its checkpoint ends where an uninterrupted one
//! does; settings are refused with the CLI's messages.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/tempdir.rs"]
mod tempdir;

use cli::{ok, s};
use lstm_wgpu::data::Vocab;
use lstm_wgpu::run::{Config, Data, Run, StepMetrics, Trained};
use std::path::{Path, PathBuf};
use tempdir::TempDir;

const SUNSPOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sunspots.csv");

/// (step, loss) pairs of the training and of the validation losses.
type Losses = (Vec<(usize, f64)>, Vec<(usize, f64)>);

/// The (step, loss) and (step, val_loss) lines of a CLI metrics file.
fn metrics_losses(path: &Path) -> Losses {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        let step = v["step"].as_u64().unwrap_or_else(|| panic!("{line}")) as usize;
        if let Some(l) = v.get("loss").and_then(|x| x.as_f64()) {
            train.push((step, l));
        }
        if let Some(l) = v.get("val_loss").and_then(|x| x.as_f64()) {
            val.push((step, l));
        }
    }
    (train, val)
}

/// The same of a library run's history.
fn history_losses(h: &[StepMetrics]) -> Losses {
    let train = h.iter().map(|m| (m.step, m.loss as f64)).collect();
    let val = h
        .iter()
        .filter_map(|m| m.validation.map(|v| (m.step, v.loss)))
        .collect();
    (train, val)
}

/// Trains `config` on `data` in the library, keeping every step the
/// callback saw.
fn train(config: Config, data: Data) -> (Trained, Vec<StepMetrics>) {
    let mut seen = Vec::new();
    let run = Run::new(config, data).unwrap_or_else(|e| panic!("{e}"));
    let t = run
        .train(|m| {
            seen.push(m.clone());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (t, seen)
}

/// The settings the series tests share, as flags and as a `Config`.
fn series_flags() -> Vec<&'static str> {
    [
        "--seq-len",
        "12",
        "--horizon",
        "2",
        "--hidden",
        "8",
        "--steps",
        "14",
        "--val-every",
        "5",
        "--seed",
        "3",
        "--clip-norm",
        "1",
        "--schedule",
        "cosine",
        "--warmup",
        "2",
    ]
    .to_vec()
}

fn series_config() -> Config {
    Config {
        seq_len: Some(12),
        horizon: Some(2),
        hidden: Some(8),
        steps: Some(14),
        val_every: Some(5),
        seed: Some(3),
        clip_norm: Some(1.0),
        schedule: Some(lstm_wgpu::run::choice::Schedule::Cosine),
        warmup: Some(2),
        ..Default::default()
    }
}

fn parameters(t: &Trained) -> Vec<lstm_wgpu::NamedTensor> {
    t.model.checkpoint().state_dict()
}

fn checkpoint_parameters(ck: &Path) -> Vec<lstm_wgpu::NamedTensor> {
    lstm_wgpu::infer::Checkpoint::read(ck)
        .unwrap_or_else(|e| panic!("{e}"))
        .state_dict()
}

#[test]
fn library_run_equals_the_cli() {
    let d = TempDir::new("run-cli");
    let (ck_cli, ck_lib, m) = (d.join("cli.st"), d.join("lib.st"), d.join("cli.jsonl"));
    let mut args = vec!["train", "--data", SUNSPOTS, "--no-progress"];
    args.extend(series_flags());
    args.extend(["--checkpoint", s(&ck_cli), "--metrics", s(&m)]);
    ok(&args);
    let config = Config {
        data: Some(PathBuf::from(SUNSPOTS)),
        checkpoint: Some(ck_lib.clone()),
        ..series_config()
    };
    let (t, seen) = train(config, Data::Settings);
    assert_eq!(history_losses(&t.history), metrics_losses(&m));
    assert_eq!(seen, t.history, "the callback saw every step");
    assert_eq!(t.history.len(), 14);
    assert!(t.history.iter().filter(|m| m.validation.is_some()).count() == 3);
    // The checkpoints, and the best ones, byte for byte.
    for (a, b) in [
        (&ck_cli, &ck_lib),
        (&d.join("cli.st.best"), &d.join("lib.st.best")),
    ] {
        let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        assert!(x == y, "{} and {} differ", a.display(), b.display());
    }
    // The returned model is the final checkpoint's.
    assert_eq!(parameters(&t), checkpoint_parameters(&ck_cli));
    let s = &t.summary;
    assert_eq!((s.state.step, s.first_step, s.epochs > 0), (14, 0, true));
    assert_eq!(s.curves.train.len(), 14);
}

#[test]
fn rows_in_memory_equal_the_csv() {
    let d = TempDir::new("run-rows");
    let ck = d.join("cli.st");
    let mut args = vec![
        "train",
        "--data",
        SUNSPOTS,
        "--no-progress",
        "--checkpoint",
        s(&ck),
    ];
    args.extend(series_flags());
    let m = d.join("cli.jsonl");
    args.extend(["--metrics", s(&m)]);
    ok(&args);
    // Both columns, as the CSV has them: YEAR is no feature (a time index).
    let text = std::fs::read_to_string(SUNSPOTS).unwrap();
    let values: Vec<f64> = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()))
        .collect();
    let (t, _) = train(
        series_config(),
        Data::rows(values, &["YEAR", "SUNACTIVITY"]),
    );
    assert_eq!(history_losses(&t.history), metrics_losses(&m));
    assert_eq!(parameters(&t), checkpoint_parameters(&ck));
    assert_eq!(
        t.model.normalizer(),
        lstm_wgpu::Model::load(&ck).unwrap().normalizer()
    );
    // The model predicts in the data's units, as the CLI's checkpoint does.
    let mut model = t.model;
    let rows = model.csv_rows(SUNSPOTS).unwrap();
    let want = lstm_wgpu::Model::load(&ck).unwrap().predict(&rows).unwrap();
    assert_eq!(model.predict(&rows).unwrap(), want);
}

#[test]
fn tokens_in_memory_equal_the_text_file() {
    let d = TempDir::new("run-tokens");
    let file = d.join("text.txt");
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(60);
    std::fs::write(&file, &text).unwrap();
    let (ck, m) = (d.join("cli.st"), d.join("cli.jsonl"));
    ok(&[
        "train",
        "--data",
        s(&file),
        "--hidden",
        "16",
        "--embed",
        "8",
        "--steps",
        "8",
        "--val-every",
        "4",
        "--batch",
        "4",
        "--seq-len",
        "16",
        "--checkpoint",
        s(&ck),
        "--metrics",
        s(&m),
        "--no-progress",
    ]);
    let config = Config {
        hidden: Some(16),
        embed: Some(8),
        steps: Some(8),
        val_every: Some(4),
        batch: Some(4),
        seq_len: Some(16),
        ..Default::default()
    };
    let (t, _) = train(config, Data::text(&text).unwrap());
    assert_eq!(history_losses(&t.history), metrics_losses(&m));
    assert_eq!(parameters(&t), checkpoint_parameters(&ck));
    let v = Vocab::from_text(&text).unwrap();
    assert_eq!(t.model.vocab(), Some(&v));
    let mut model = t.model;
    let s = lstm_wgpu::infer::Sampling::default();
    let want = lstm_wgpu::Model::load(&ck)
        .unwrap()
        .generate("the ", 20, &s)
        .unwrap();
    assert_eq!(model.generate("the ", 20, &s).unwrap(), want);
}

#[test]
fn the_callback_stops_the_run_and_resume_continues_it() {
    let d = TempDir::new("run-resume");
    let whole = Config {
        checkpoint: Some(d.join("whole.st")),
        ..series_config()
    };
    let (t, _) = train(whole, Data::Settings);
    // An error from the callback ends the run with it.
    let run = Run::new(series_config(), Data::Settings).unwrap();
    let e = run
        .train(|m| match m.step {
            3 => Err(lstm_wgpu::Error::Invalid("enough".into())),
            _ => Ok(()),
        })
        .err()
        .map(|e| e.to_string());
    assert_eq!(e.as_deref(), Some("enough"));
    // Stopped after 6 steps and resumed, as an uninterrupted run.
    let part = Config {
        checkpoint: Some(d.join("part.st")),
        stop_after: Some(6),
        ..series_config()
    };
    let (first, _) = train(part, Data::Settings);
    assert_eq!(first.summary.state.step, 6);
    let rest = Config {
        resume: Some(d.join("part.st")),
        checkpoint: Some(d.join("part.st")),
        ..Default::default()
    };
    let (second, _) = train(rest, Data::Settings);
    assert_eq!(second.summary.first_step, 6);
    assert_eq!(second.history.first().map(|m| m.step), Some(7));
    let both: Vec<_> = first
        .history
        .iter()
        .chain(&second.history)
        .cloned()
        .collect();
    assert_eq!(history_losses(&both), history_losses(&t.history));
    assert_eq!(parameters(&second), parameters(&t));
}

#[test]
fn settings_are_refused_as_the_cli_refuses_them() {
    let refused = |c: Config, data: Data| match Run::new(c, data) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let e = refused(
        Config {
            seq_len: Some(0),
            ..Default::default()
        },
        Data::Settings,
    );
    assert_eq!(e, "--seq-len must be at least 1");
    let norm: Result<Config, _> = toml::from_str("norm = \"group\"");
    let e = norm
        .err()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(e.contains("--norm group: expected none, layer"), "{e}");
    // Data given twice, or of the other task.
    let e = refused(
        Config {
            data: Some(SUNSPOTS.into()),
            ..Default::default()
        },
        Data::rows(vec![1.0; 40], &["y"]),
    );
    assert!(e.contains("the data is given in memory"), "{e}");
    let e = refused(
        Config {
            task: Some(lstm_wgpu::run::choice::Task::Series),
            ..Default::default()
        },
        Data::text("abc abc").unwrap(),
    );
    assert!(
        e.contains("--task series: the data given in memory is token ids"),
        "{e}"
    );
    let e = refused(
        Config::default(),
        Data::Tokens {
            ids: vec![0, 5],
            vocab: Vocab::from_text("ab").unwrap(),
        },
    );
    assert!(e.contains("token id 5 at position 1"), "{e}");
}
