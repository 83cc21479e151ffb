//! `--cell gru` through the commands that train and use a model: `train`
//! (text and series), its checkpoint and settings, `--resume` bit for bit,
//! `generate`, `predict`, `bench`; and the combinations the GRU does not
//! take, refused by name with exit 2.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/final_line.rs"]
mod final_line;
#[path = "common/tempdir.rs"]
mod tempdir;

use cli::{ok, run, s, settings_of, stderr_lines};
use final_line::final_line;
use tempdir::TempDir;

const TEXT: &[&str] = &[
    "train",
    "--cell",
    "gru",
    "--hidden",
    "16",
    "--layers",
    "2",
    "--batch",
    "4",
    "--seq-len",
    "12",
    "--val-every",
    "5",
    "--no-progress",
];

/// Resuming `ck` to step 10 ends as the uninterrupted run `full`.
fn assert_resumes_to(ck: &std::path::Path, full: &str) {
    let resumed = ok(&["train", "--resume", s(ck), "--steps", "10", "--no-progress"]);
    assert_eq!(
        final_line(&resumed),
        final_line(full),
        "resume is bit for bit"
    );
}

#[test]
fn gru_trains_resumes_and_generates() {
    let dir = TempDir::new("gru-text");
    let ck = dir.join("g.ckpt");
    let full = ok(&[TEXT, &["--steps", "10"]].concat());
    let first = ok(&[TEXT, &["--steps", "5", "--checkpoint", s(&ck)]].concat());
    assert_ne!(final_line(&first), final_line(&full));
    let settings = settings_of(&ck);
    assert!(settings.contains("cell = \"gru\""), "{settings}");
    assert_resumes_to(&ck, &full);
    let text = ok(&["generate", "--checkpoint", s(&ck), "--prompt", "The "]);
    assert!(text.starts_with("The "), "{text}");
    // The cell of a checkpoint cannot change on resume.
    let o = run(&[
        "train",
        "--resume",
        s(&ck),
        "--cell",
        "lstm",
        "--steps",
        "12",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr_lines(&o).join("\n");
    assert!(e.contains("--cell") && e.contains("gru"), "{e}");
}

#[test]
fn gru_forecasts_a_series() {
    let dir = TempDir::new("gru-series");
    let ck = dir.join("s.ckpt");
    let csv = dir.sine_csv("s.csv");
    let out = ok(&[
        "train",
        "--cell",
        "gru",
        "--data",
        s(&csv),
        "--hidden",
        "12",
        "--batch",
        "8",
        "--steps",
        "40",
        "--val-every",
        "20",
        "--no-progress",
        "--checkpoint",
        s(&ck),
    ]);
    let last = final_line(&out);
    assert!(last.contains("val_mae"), "{last}");
    let pred = ok(&["predict", "--checkpoint", s(&ck), "--data", s(&csv)]);
    assert!(pred.lines().count() > 10, "{pred}");
}

#[test]
fn gru_bench_rows_are_named() {
    let o = ok(&[
        "bench",
        "--workload",
        "ts",
        "--cell",
        "gru",
        "--json",
        "--steps",
        "2",
        "--warmup",
        "1",
    ]);
    assert!(o.contains("\"workload\":\"ts-gru\""), "{o}");
}

#[test]
fn gru_refuses_what_it_has_not() {
    for (args, names) in [
        (&["--forget-bias", "1"][..], "--forget-bias"),
        (&["--norm", "layer-cell"][..], "--norm layer-cell"),
        (&["--norm", "recurrent-batch"][..], "--norm recurrent-batch"),
        (&["--activation", "tanh"][..], "--activation"),
    ] {
        let o = run(&[&["train", "--cell", "gru", "--steps", "2"], args].concat());
        let e = stderr_lines(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e:?}");
        assert_eq!(e.len(), 1, "{args:?}: {e:?}");
        assert!(e[0].contains(names), "{args:?}: {e:?}");
    }
    let o = run(&["train", "--cell", "rnn", "--steps", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_lines(&o).join(" ").contains("--cell"), "{o:?}");
}

/// `--weight-drop P`: stored in the settings, resumed bit for bit, refused
/// outside [0, 1), with the normalized cells and in f16-mixed.
#[test]
fn weight_drop_trains_and_resumes() {
    let dir = TempDir::new("weight-drop");
    let ck = dir.join("w.ckpt");
    let wd = ["--weight-drop", "0.3", "--cell", "lstm"];
    let args =
        |steps: &'static str| [&TEXT[..1], &TEXT[3..], &wd[..], &["--steps", steps]].concat();
    let full = ok(&args("10"));
    let plain = ok(&[&TEXT[..1], &TEXT[3..], &["--steps", "10"][..]].concat());
    assert_ne!(
        final_line(&full),
        final_line(&plain),
        "weight-drop changes the run"
    );
    ok(&[args("5"), vec!["--checkpoint", s(&ck)]].concat());
    assert!(
        settings_of(&ck).contains("weight-drop = 0.3"),
        "{}",
        settings_of(&ck)
    );
    assert_resumes_to(&ck, &full);
    for (bad, names) in [
        (&["--weight-drop", "1"][..], "--weight-drop"),
        (
            &["--weight-drop", "0.2", "--norm", "layer-cell"][..],
            "--weight-drop",
        ),
        (
            &["--weight-drop", "0.2", "--precision", "f16-mixed"][..],
            "--weight-drop",
        ),
    ] {
        let o = run(&[&["train", "--steps", "2"], bad].concat());
        let e = stderr_lines(&o);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {e:?}");
        assert!(e.len() == 1 && e[0].contains(names), "{bad:?}: {e:?}");
    }
}

/// `--cell indrnn --activation tanh`: stored, resumed bit for bit; an
/// orthogonal W_hh (a matrix) is refused for its vector u.
#[test]
fn indrnn_trains_and_resumes() {
    let dir = TempDir::new("indrnn");
    let ck = dir.join("i.ckpt");
    let ind = ["--cell", "indrnn", "--activation", "tanh"];
    let args =
        |steps: &'static str| [&TEXT[..1], &TEXT[3..], &ind[..], &["--steps", steps]].concat();
    let full = ok(&args("10"));
    ok(&[args("5"), vec!["--checkpoint", s(&ck)]].concat());
    let settings = settings_of(&ck);
    assert!(
        settings.contains("cell = \"indrnn\"") && settings.contains("activation = \"tanh\""),
        "{settings}"
    );
    assert_resumes_to(&ck, &full);
    let o = run(&[
        "train",
        "--cell",
        "indrnn",
        "--init-whh",
        "orthogonal",
        "--steps",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_lines(&o).join(" ").contains("--init-whh"));
}

/// Histograms (`--metrics` takes them every `--hist-every` steps) of the
/// cells without c: the GRU's gates r, z, n, IndRNN's h alone.
#[test]
fn histograms_of_every_cell() {
    let dir = TempDir::new("cell-hists");
    for (cell, gates) in [
        ("gru", &["gate_r", "gate_z", "gate_n"][..]),
        ("indrnn", &[][..]),
    ] {
        let m = dir.join(format!("{cell}.jsonl"));
        let args = [
            &TEXT[..1],
            &TEXT[3..],
            &["--cell", cell, "--steps", "4", "--hist-every", "2"],
        ]
        .concat();
        ok(&[args, vec!["--metrics", s(&m)]].concat());
        let text = std::fs::read_to_string(&m).unwrap_or_else(|e| panic!("{e}"));
        let line = text
            .lines()
            .find(|l| l.contains("\"histograms\""))
            .unwrap_or_else(|| panic!("{cell}: no histogram line"));
        assert!(line.contains("activations/layer_1/h"), "{cell}");
        assert!(!line.contains("/c\""), "{cell}: a cell without c");
        for g in gates {
            assert!(line.contains(&format!("layer_0/{g}")), "{cell}: {g}");
        }
    }
}
