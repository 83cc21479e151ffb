//! `lstm-wgpu bench` through the binary: the JSON row of a short `ts` run
//! has every field of issue #5 with sane values, the table aligns, and bad
//! arguments exit 2. Also the GPU memory counter behind `peak_mem_mb`.

use lstm_wgpu::GpuContext;
use std::collections::BTreeMap;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

/// A short `ts` run's JSON row.
const TS_ROW: &str = "bench --workload ts --steps 2 --warmup 1 --json";

/// `TS_ROW` and `extra` as arguments.
fn ts_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    TS_ROW.split(' ').chain(extra.iter().copied()).collect()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// A JSON value of a flat object.
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// Parses one flat JSON object (string, number, boolean and null values), the shape
/// `bench --json` prints. Panics on anything else.
fn parse_object(line: &str) -> BTreeMap<String, Value> {
    let mut chars = line.trim().chars().peekable();
    let mut out = BTreeMap::new();
    let next = |c: &mut std::iter::Peekable<std::str::Chars>| {
        c.next().unwrap_or_else(|| panic!("truncated JSON: {line}"))
    };
    let string = |c: &mut std::iter::Peekable<std::str::Chars>| {
        let mut s = String::new();
        loop {
            match c
                .next()
                .unwrap_or_else(|| panic!("unterminated string: {line}"))
            {
                '"' => return s,
                '\\' => match c.next() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('u') => {
                        let hex: String = c.by_ref().take(4).collect();
                        let v = u32::from_str_radix(&hex, 16)
                            .unwrap_or_else(|e| panic!("bad \\u escape {hex}: {e}"));
                        s.push(char::from_u32(v).unwrap_or_else(|| panic!("bad char {v}")));
                    }
                    other => panic!("unexpected escape {other:?} in {line}"),
                },
                ch => s.push(ch),
            }
        }
    };
    assert_eq!(next(&mut chars), '{', "not an object: {line}");
    loop {
        assert_eq!(next(&mut chars), '"', "expected a key: {line}");
        let key = string(&mut chars);
        assert_eq!(next(&mut chars), ':', "expected ':' after {key}: {line}");
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            Value::Str(string(&mut chars))
        } else {
            let mut raw = String::new();
            while let Some(&ch) = chars.peek() {
                if ch == ',' || ch == '}' {
                    break;
                }
                raw.push(ch);
                chars.next();
            }
            if raw == "null" {
                Value::Null
            } else if raw == "true" || raw == "false" {
                Value::Bool(raw == "true")
            } else {
                Value::Num(
                    raw.parse()
                        .unwrap_or_else(|e| panic!("{key}: {raw:?} is not a number: {e}")),
                )
            }
        };
        assert!(out.insert(key.clone(), value).is_none(), "duplicate {key}");
        match next(&mut chars) {
            ',' => continue,
            '}' => break,
            ch => panic!("unexpected {ch:?} after {key}: {line}"),
        }
    }
    assert!(chars.next().is_none(), "trailing text: {line}");
    out
}

fn num(o: &BTreeMap<String, Value>, k: &str) -> f64 {
    match o.get(k) {
        Some(Value::Num(v)) => *v,
        other => panic!("{k}: expected a number, got {other:?}"),
    }
}

fn text<'a>(o: &'a BTreeMap<String, Value>, k: &str) -> &'a str {
    match o.get(k) {
        Some(Value::Str(s)) => s,
        other => panic!("{k}: expected a string, got {other:?}"),
    }
}

#[test]
fn json_row_of_ts_has_every_field() {
    let o = run(&ts_args(&[]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per workload: {stdout}");
    let row = parse_object(lines[0]);
    assert_eq!(text(&row, "workload"), "ts");
    assert!(!text(&row, "adapter").is_empty());
    assert!(!text(&row, "path").is_empty());
    for k in [
        "ms_per_step",
        "tokens_per_s",
        "dispatches_per_step",
        "submits_per_step",
        "gflops",
        "peak_mem_mb",
    ] {
        let v = num(&row, k);
        assert!(v.is_finite() && v > 0.0, "{k} = {v}");
    }
    for k in ["dispatches_per_step", "submits_per_step"] {
        assert_eq!(num(&row, k).fract(), 0.0, "{k} is a count");
    }
    // The derived columns agree with ms/step: B·T = 32·20 tokens per step.
    let s = num(&row, "ms_per_step") * 1e-3;
    let rel = |a: f64, b: f64| (a - b).abs() / b;
    assert!(rel(num(&row, "tokens_per_s"), 640.0 / s) < 1e-3);
    assert!(rel(num(&row, "gflops"), num(&row, "gflop_per_step") / s) < 1e-3);
    // Every step really trained: a finite loss, two timed + one warm-up.
    assert!(num(&row, "last_loss").is_finite());
    assert_eq!(num(&row, "steps"), 2.0);
    assert_eq!(num(&row, "warmup"), 1.0);
    assert!(matches!(row.get("pipelined"), Some(Value::Bool(true))));
    // Progress goes to stderr, one line per step.
    assert_eq!(stderr.matches("ts: step ").count(), 3, "{stderr}");
}

#[test]
fn table_columns_align() {
    let o = run(&["bench", "--workload", "ts", "--steps", "1", "--warmup", "0"]);
    assert!(
        o.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "header and one row: {stdout}");
    assert!(lines[0].starts_with("workload") && lines[1].starts_with("ts "));
    // Right-aligned numeric columns end where their headers end.
    for h in ["ms/step", "tokens/s", "disp/step", "GFLOP/s", "peak MiB"] {
        let end = lines[0].find(h).unwrap_or_else(|| panic!("no {h}")) + h.len();
        let cell = lines[1][..end].rsplit(' ').next().unwrap_or("");
        assert!(
            !cell.is_empty() && cell.parse::<f64>().is_ok(),
            "{h}: {cell:?} does not end under its header\n{stdout}"
        );
    }
}

/// `bench --mpi` outside mpirun: one rank runs the data-parallel step
/// (readback, sum, upload between two submits) and its row adds the split;
/// with `--bucket-mb 0`, one submit per bucket (the head's, each layer's,
/// the rest) and one more.
#[test]
fn data_parallel_row_splits_the_step() {
    let o = run(&ts_args(&["--mpi", "--bucket-mb", "0"]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench failed: {stderr}");
    let row = parse_object(String::from_utf8_lossy(&o.stdout).trim());
    let buckets = num(&row, "buckets");
    assert!(buckets >= 3.0, "{row:?}");
    assert_eq!(num(&row, "submits_per_step"), buckets + 1.0);
    let o = run(&ts_args(&["--mpi"]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let row = parse_object(stdout.trim());
    assert_eq!(num(&row, "ranks"), 1.0);
    // Fewer gradients than a bucket of the default 1 MiB: one sum.
    assert_eq!(num(&row, "buckets"), 1.0);
    assert_eq!(num(&row, "submits_per_step"), 2.0);
    assert!(num(&row, "last_loss").is_finite());
    let part = |k: &str| {
        let v = num(&row, k);
        assert!(v.is_finite() && v >= 0.0, "{k} = {v}");
        v
    };
    let parts = ["compute_ms", "readback_ms", "allreduce_ms", "upload_ms"].map(part);
    assert!(parts[0] > 0.0 && parts[1] > 0.0, "{parts:?}");
    // The phases are inside the step (the optimizer's submit comes after).
    assert!(
        parts.iter().sum::<f64>() <= 1.5 * num(&row, "ms_per_step"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    for (args, want) in [
        (
            &["bench", "--workload", "huge"][..],
            "unknown workload \"huge\"; known: ts, char, big, deep, all",
        ),
        (
            &["bench", "--workload", "ts", "--steps", "0"][..],
            "--steps must be at least 1",
        ),
        (
            &[
                "bench",
                "--workload",
                "ts",
                "--profile",
                "--hist-every",
                "1",
            ][..],
            "--hist-every with --profile",
        ),
        (
            &["bench", "--workload", "ts", "--mpi", "--profile"][..],
            "--profile with --mpi",
        ),
        (
            &["bench", "--workload", "ts", "--mpi-timeout", "5"][..],
            "--mpi-timeout is for --mpi",
        ),
        (
            &["bench", "--workload", "ts", "--bucket-mb", "0"][..],
            "--bucket-mb is for --mpi",
        ),
        (
            &["bench", "--workload", "ts", "--mpi", "--bucket-mb", "inf"][..],
            "--bucket-mb inf: a bucket's size must be",
        ),
    ] {
        let o = run(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(o.stdout.is_empty(), "{args:?} printed a table");
    }
}

#[test]
fn memory_counter_tracks_buffers_and_readbacks() {
    let ctx = GpuContext::new().unwrap_or_else(|e| panic!("{e}"));
    let (live, peak) = (ctx.mem.live(), ctx.mem.peak());
    let buf = ctx
        .storage("counted", 1000)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ctx.mem.live(), live + 4000);
    assert_eq!(ctx.mem.peak(), peak.max(live + 4000));
    ctx.storage_init("counted", &[1.0f32; 10])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ctx.mem.live(), live + 4040);
    // A readback's staging buffer counts while it lives, then is freed.
    ctx.mem.reset_peak();
    let v = ctx.read_f32(&buf, 0, 500).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.len(), 500);
    assert_eq!(ctx.mem.live(), live + 4040);
    assert_eq!(ctx.mem.peak(), live + 4040 + 2000);
}

#[test]
fn sync_rows_say_so() {
    let o = run(&[
        "bench",
        "--workload",
        "ts",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--json",
        "--sync",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row = parse_object(String::from_utf8_lossy(&o.stdout).trim());
    assert!(matches!(row.get("pipelined"), Some(Value::Bool(false))));
    assert!(num(&row, "last_loss").is_finite());
}

/// `--hist-every 1`: every step takes histograms and still trains; the
/// row reports the plain step's dispatches.
#[test]
fn histogram_steps_run() {
    let args = [
        "bench",
        "--workload",
        "ts",
        "--steps",
        "2",
        "--warmup",
        "0",
        "--json",
    ];
    let rows: Vec<_> = ["0", "1"]
        .iter()
        .map(|n| {
            let o = run(&[&args[..], &["--hist-every", n]].concat());
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            parse_object(String::from_utf8_lossy(&o.stdout).trim())
        })
        .collect();
    assert!(num(&rows[1], "last_loss").is_finite());
    let d = |r| num(r, "dispatches_per_step");
    assert_eq!(d(&rows[0]), d(&rows[1]));
}
