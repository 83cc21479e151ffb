//! Safety of inputs and outputs through the binary: bad output paths,
//! impossible sizes, an unknown adapter and a failing or closed stdout are
//! refused with exit 2 and one line on stderr (a closed pipe ends quietly
//! with exit 0), before any file is created; identical runs write
//! byte-identical checkpoints.

use lstm_wgpu::NamedTensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

#[path = "common/cli.rs"]
mod cli;
#[path = "common/tempdir.rs"]
mod tempdir;

use cli::assert_refused;

use tempdir::TempDir;

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// stderr without the GL loader's XDG_RUNTIME_DIR notice.
fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(str::to_string)
        .collect()
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {:?}", stderr_lines(&o));
    o
}

/// A small nn.LSTM (I = 2, H = 3) and inputs (T = 2, B = 1) for `grad`.
fn grad_files(d: &TempDir) -> (PathBuf, PathBuf) {
    let t = |n: &str, shape: Vec<usize>| {
        let len = shape.iter().product::<usize>();
        let v = (0..len).map(|i| (i as f32 * 0.37).sin() * 0.5).collect();
        NamedTensor::new(n, shape, v)
    };
    let w = d.join("weights.st");
    lstm_wgpu::io::write(
        &w,
        &[
            t("weight_ih_l0", vec![12, 2]),
            t("weight_hh_l0", vec![12, 3]),
            t("bias_ih_l0", vec![12]),
            t("bias_hh_l0", vec![12]),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let i = d.join("inputs.st");
    lstm_wgpu::io::write(
        &i,
        &[
            t("input", vec![2, 1, 2]),
            t("grad_output", vec![2, 1, 3]),
            t("grad_h_n", vec![1, 1, 3]),
            t("grad_c_n", vec![1, 1, 3]),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (w, i)
}

/// `grad` on `grad_files` writing `out`.
fn grad_args<'a>(w: &'a Path, i: &'a Path, out: &'a Path) -> [&'a str; 7] {
    ["grad", "--weights", s(w), "--inputs", s(i), "--out", s(out)]
}

/// Bad output paths of every kind, for `grad --out` and every output of
/// `train`: exit 2, one line naming the flag and the path, no new file,
/// devices untouched.
#[test]
fn bad_output_paths_are_refused_before_the_run() {
    let d = TempDir::new("outputs");
    let (w, i) = grad_files(&d);
    let link = d.join("link-to-weights.st");
    std::os::unix::fs::symlink(&w, &link).unwrap_or_else(|e| panic!("{e}"));
    let text = d.join("data.txt");
    std::fs::write(&text, "abcdefgh ".repeat(200)).unwrap_or_else(|e| panic!("{e}"));
    let cfg = d.join("run.toml");
    std::fs::write(&cfg, "hidden = 8\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(d.join("ck.st.best")).unwrap_or_else(|e| panic!("{e}"));
    let missing = d.join("missing/out.st");
    let under_file = d.join("weights.st/out.st");
    let dir = d.to_path_buf();
    let bad: Vec<(PathBuf, &str)> = vec![
        (missing, "does not exist"),
        (under_file, "is not a directory"),
        (PathBuf::from("/proc/self/out.st"), "not writable"),
        (dir, "is a directory"),
        (PathBuf::from("/dev/null"), "device"),
        (PathBuf::from("/dev/full"), "device"),
    ];
    let before = d.names();
    let mut cases: Vec<(Vec<String>, String, String, &str)> = Vec::new();
    let grad = |out: &Path| grad_args(&w, &i, out).map(String::from).to_vec();
    for (p, why) in &bad {
        cases.push((grad(p), "--out".into(), s(p).into(), why));
    }
    for (p, why) in [(&w, "same file as input"), (&link, "same file as input")] {
        cases.push((grad(p), "--out".into(), s(p).into(), why));
    }
    let train = |extra: &[&str]| {
        let mut v: Vec<String> = ["train", "--steps", "1", "--no-progress"]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    for flag in ["--metrics", "--plot", "--checkpoint", "--dump-data"] {
        for (p, why) in &bad {
            cases.push((train(&[flag, s(p)]), flag.into(), s(p).into(), why));
        }
    }
    let best = d.join("ck.st.best");
    cases.push((
        train(&["--checkpoint", s(&d.join("ck.st"))]),
        "--checkpoint (its .best)".into(),
        s(&best).into(),
        "is a directory",
    ));
    for (flag, input_flag, input) in [
        ("--metrics", "--data", &text),
        ("--plot", "--data", &text),
        ("--checkpoint", "--data", &text),
        ("--dump-data", "--config", &cfg),
        ("--metrics", "--init", &w),
        ("--dump-data", "--resume", &w),
    ] {
        cases.push((
            train(&[input_flag, s(input), flag, s(input)]),
            flag.into(),
            s(input).into(),
            "same file as input",
        ));
    }
    for (args, flag, path, why) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert_refused(&o, &[flag, path, why], &format!("{args:?}"));
        assert_eq!(d.names(), before, "{args:?} left a file");
    }
    use std::os::unix::fs::FileTypeExt;
    for dev in ["/dev/null", "/dev/full"] {
        let t = std::fs::metadata(dev).unwrap_or_else(|e| panic!("{e}"));
        assert!(t.file_type().is_char_device(), "{dev} was replaced");
    }
    // The good paths still work: grad writes, and a run continues in place
    // (--resume X --checkpoint X).
    let out = d.join("out.st");
    ok(&grad(&out).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.is_file());
    let ck = d.join("run.st");
    let small = [
        "--hidden",
        "8",
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--no-progress",
    ];
    let mut first = vec!["train", "--steps", "2", "--stop-after", "1"];
    first.extend(["--checkpoint", s(&ck)]);
    first.extend(small);
    ok(&first);
    ok(&[
        "train",
        "--resume",
        s(&ck),
        "--checkpoint",
        s(&ck),
        "--no-progress",
    ]);
}

/// Identical runs write byte-identical checkpoints (safetensors wrote its
/// metadata in a per-process random order), which safetensors parses.
#[test]
fn identical_runs_write_identical_checkpoints() {
    let d = TempDir::new("identical");
    let (a, b) = (d.join("a.st"), d.join("b.st"));
    for p in [&a, &b] {
        ok(&[
            "train",
            "--steps",
            "3",
            "--hidden",
            "8",
            "--batch",
            "2",
            "--seq-len",
            "4",
            "--checkpoint",
            s(p),
            "--no-progress",
        ]);
    }
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(x == y, "checkpoints differ");
    let st = safetensors::SafeTensors::deserialize(&x).unwrap_or_else(|e| panic!("{e}"));
    assert!(st.tensor("train.step").is_ok());
    let (_, meta) = safetensors::SafeTensors::read_metadata(&x).unwrap_or_else(|e| panic!("{e}"));
    let meta = meta.metadata().clone().unwrap_or_default();
    assert!(meta.len() >= 3 && meta.contains_key("config"), "{meta:?}");
    // The dump of a generated task too.
    let (c, e) = (d.join("c.st"), d.join("e.st"));
    for p in [&c, &e] {
        ok(&[
            "train",
            "--dataset",
            "copy",
            "--steps",
            "2",
            "--dump-data",
            s(p),
        ]);
    }
    assert!(std::fs::read(&c).unwrap() == std::fs::read(&e).unwrap());
}

/// Sizes no host or adapter can hold: exit 2 naming the flag, before
/// anything is allocated (these aborted or panicked), and no file.
#[test]
fn impossible_sizes_are_refused() {
    let d = TempDir::new("sizes");
    let out = d.join("dump.st");
    let max = u64::MAX.to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--hidden", &max], "--hidden"),
        (vec!["--seq-len", &max], "--seq-len"),
        (vec!["--batch", &max], "--batch"),
        (vec!["--hidden", "100000"], "--hidden 100000"),
        (vec!["--embed", "1000000000"], "--embed"),
        (vec!["--layers", "1000000000"], "--layers 1000000000"),
        (vec!["--dataset", "copy", "--seq-len", &max], "--seq-len"),
        (vec!["--dataset", "adding", "--seq-len", &max], "--seq-len"),
        (
            vec!["--dataset", "copy", "--steps", "1000000000"],
            "--steps",
        ),
        (
            vec!["--dataset", "adding", "--steps", "1000000000"],
            "--steps",
        ),
        (
            vec!["--norm", "step-batch", "--norm-t-max", "100000000000"],
            "--norm-t-max",
        ),
    ];
    for (extra, want) in &cases {
        for dump in [true, false] {
            let mut args = vec!["train", "--no-progress"];
            if !extra.contains(&"--steps") {
                args.extend(["--steps", "1"]);
            } else if !dump {
                continue; // a billion steps are for --dump-data only
            }
            args.extend(extra);
            if dump {
                args.extend(["--dump-data", s(&out)]);
            }
            let o = run(&args);
            assert_refused(&o, &[want], &format!("{args:?}"));
            assert!(d.names().is_empty(), "{args:?} left a file");
        }
    }
}

/// A checkpoint whose stored settings say 2^32 layers is refused on
/// --resume and by generate, naming the size.
#[test]
fn resumed_sizes_are_checked() {
    let d = TempDir::new("resume");
    let ck = d.join("ck.st");
    ok(&[
        "train",
        "--steps",
        "1",
        "--hidden",
        "8",
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--checkpoint",
        s(&ck),
        "--no-progress",
    ]);
    let f = lstm_wgpu::io::TensorFile::read(&ck).unwrap_or_else(|e| panic!("{e}"));
    let (floats, ints) = f.params_and_counters().unwrap_or_else(|e| panic!("{e}"));
    let mut meta = f.metadata.clone();
    let cfg = meta.get("config").cloned().unwrap_or_default();
    assert!(cfg.contains("layers = 2\n"), "{cfg}");
    let bad = d.join("bad.st");
    for (from, to, want) in [
        (
            "layers = 2\n",
            "layers = 4294967296\n",
            "--layers 4294967296",
        ),
        ("batch = 2\n", "batch = 18446744073709551615\n", "--batch"),
    ] {
        meta.insert("config".into(), cfg.replace(from, to));
        lstm_wgpu::io::write_with_counters(&bad, &floats, &ints, Some(meta.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let before = d.names();
        let o = run(&[
            "train",
            "--resume",
            s(&bad),
            "--steps",
            "2",
            "--no-progress",
        ]);
        assert_refused(&o, &[want], to);
        if from.starts_with("layers") {
            let o = run(&["generate", "--checkpoint", s(&bad), "--length", "2"]);
            assert_refused(&o, &[want], "generate");
        }
        assert_eq!(d.names(), before);
    }
}

/// WGPU_ADAPTER_NAME matching no adapter: wgpu's lookup panics; here
/// exit 2 naming the variable and listing the adapters.
#[test]
fn unknown_adapter_name_is_an_error() {
    let d = TempDir::new("adapter");
    let (w, i) = grad_files(&d);
    let out = d.join("out.st");
    let env = [("WGPU_ADAPTER_NAME", "no-such-adapter-anywhere")];
    let o = run_env(&grad_args(&w, &i, &out), &env);
    assert_refused(&o, &["WGPU_ADAPTER_NAME", "adapters: "], "grad");
    assert!(!out.exists());
    let o = run_env(&["demo", "--steps", "1"], &env);
    assert_refused(&o, &["WGPU_ADAPTER_NAME"], "demo");
}

/// `--device` chooses an adapter by its number in `devices` or a part of
/// its name; one that is not there is refused (exit 2, the adapters
/// listed) before any output file, and the flag wins over
/// WGPU_ADAPTER_NAME.
#[test]
fn device_flag_chooses_the_adapter() {
    let o = run(&["devices"]);
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    let first = list.lines().nth(1).unwrap_or_else(|| panic!("{list}"));
    assert!(first.starts_with("0  "), "{list}");
    let n = list.lines().count() - 1;
    let d = TempDir::new("device");
    let (w, i) = grad_files(&d);
    let out = d.join("out.st");
    let past = n.to_string();
    for (spec, want) in [
        (past.as_str(), format!("no adapter {n}")),
        (
            "no-such-adapter-anywhere",
            "no adapter's name contains".into(),
        ),
        ("0,", "an empty entry".into()),
    ] {
        let mut args = vec!["--device", spec];
        args.extend(grad_args(&w, &i, &out));
        let o = run(&args);
        assert_refused(&o, &["--device", &want], "grad");
        assert!(!out.exists(), "{spec}");
    }
    // Adapter 0 by number, and by name over a variable naming none.
    let name = first.split("  ").nth(1).unwrap_or_else(|| panic!("{list}"));
    let env = [("WGPU_ADAPTER_NAME", "no-such-adapter-anywhere")];
    for spec in ["0", name] {
        let o = run_env(&["-v", "--device", spec, "demo", "--steps", "1"], &env);
        assert!(o.status.success(), "{spec}: {:?}", stderr_lines(&o));
        let err = stderr_lines(&o).join("\n");
        assert!(err.contains(&format!("adapter: {name}")), "{spec}: {err}");
    }
}

const DEMO: [&str; 11] = [
    "demo",
    "--steps",
    "40",
    "--hidden",
    "4",
    "--layers",
    "1",
    "--seq-len",
    "4",
    "--batch",
    "2",
];

/// stdout on a full device: exit 2 and only one line, naming stdout, on
/// stderr (println! panicked with exit 101; later the progress lines came
/// first); grad, which prints nothing, still runs.
#[test]
fn stdout_write_errors_are_one_line() {
    let d = TempDir::new("safety-full");
    let with_full_stdout = |args: &[&str]| {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap_or_else(|e| panic!("{e}"));
        Command::new(BIN)
            .args(args)
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let m = d.join("m.jsonl");
    let train = [
        "train",
        "--dataset",
        "sine",
        "--steps",
        "2",
        "--hidden",
        "8",
        "--layers",
        "1",
        "--no-progress",
        "--metrics",
        s(&m),
    ];
    for args in [&DEMO[..], &train] {
        let o = with_full_stdout(args);
        assert_refused(&o, &["stdout: No space left on device"], args[0]);
    }
    assert_eq!(d.names(), Vec::<String>::new(), "no metrics file");
    let (w, i) = grad_files(&d);
    let out = d.join("out.st");
    let o = with_full_stdout(&grad_args(&w, &i, &out));
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    assert!(out.exists());
}

/// stdout closed by its reader (`| head`): quiet exit 0, no panic.
#[test]
fn closed_stdout_ends_quietly() {
    let mut child = Command::new(BIN)
        .args(DEMO)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Close the read end before the first line (the GPU takes a while).
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let lines = stderr_lines(&o);
    assert_eq!(o.status.code(), Some(0), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("panicked") || l.starts_with("error")),
        "{lines:?}"
    );
}

/// The size check with an adapter's buffer limit (no GPU needed): each
/// largest buffer is refused as TooLarge naming its flags.
#[test]
fn size_check_against_buffer_limits() {
    use lstm_wgpu::train::{Head, NetConfig, SizeLimits};
    let net = NetConfig::new(
        Head::Language {
            vocab: 50,
            embed: 16,
        },
        64,
        2,
    );
    let roomy = SizeLimits {
        host_bytes: 1 << 30,
        buffer: Some((1 << 30, "buffer")),
    };
    net.check_size(32, 16, &roomy)
        .unwrap_or_else(|e| panic!("{e}"));
    let tight = |bytes| SizeLimits {
        host_bytes: 1 << 30,
        buffer: Some((bytes, "storage binding")),
    };
    // Parameters: about 55k f32.
    let e = net
        .check_size(1, 1, &tight(100_000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameters") && e.contains("--hidden 64"), "{e}");
    // One layer's pre-gates: 32 × 16 × 256 × 4 bytes = 524288.
    let e = net
        .check_size(32, 16, &tight(400_000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pre-gates") && e.contains("--seq-len 32"), "{e}");
    // The host budget.
    let small = SizeLimits {
        host_bytes: 1 << 20,
        buffer: None,
    };
    let e = net.check_size(1, 1, &small).unwrap_err().to_string();
    assert!(e.contains("host memory") && e.contains("--hidden"), "{e}");
    let huge = NetConfig::new(
        Head::Regression {
            features: 3,
            outputs: 1,
        },
        usize::MAX,
        usize::MAX,
    );
    let e = huge
        .check_size(usize::MAX, usize::MAX, &roomy)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than 2^64"), "{e}");
}

/// Two outputs at one file (also through a link or `dir/..`, and the
/// checkpoint's `.best`) would overwrite each other: refused by name,
/// nothing created.
#[test]
fn outputs_at_one_file_are_refused() {
    let d = TempDir::new("collide");
    std::fs::create_dir(d.join("sub")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("m.jsonl", d.join("link")).unwrap_or_else(|e| panic!("{e}"));
    let (m, ck, link) = (d.join("m.jsonl"), d.join("ck.st"), d.join("link"));
    let best_via_sub = d.join("sub/../ck.st.best");
    let cases: Vec<(Vec<&str>, [&str; 2])> = vec![
        (
            vec!["--metrics", s(&m), "--plot", s(&m)],
            ["--plot", "--metrics"],
        ),
        (
            vec!["--metrics", s(&m), "--checkpoint", s(&m)],
            ["--metrics", "--checkpoint"],
        ),
        (
            vec!["--metrics", s(&m), "--plot", s(&link)],
            ["--plot", "--metrics"],
        ),
        (
            vec!["--checkpoint", s(&ck), "--plot", s(&best_via_sub)],
            ["--plot", ".best"],
        ),
    ];
    let before = d.names();
    for (extra, want) in &cases {
        let mut args = vec![
            "train",
            "--no-progress",
            "--steps",
            "1",
            "--dataset",
            "sine",
        ];
        args.extend(extra);
        let o = run(&args);
        assert_refused(&o, want, &format!("{args:?}"));
        assert_eq!(d.names(), before, "{args:?} left a file");
    }
}
