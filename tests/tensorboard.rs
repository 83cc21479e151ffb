//! `train --tensorboard DIR`: the event files are read back by a reader of
//! this test's own (CRC32C, the record framing and a protocol buffer
//! decoder written here, sharing no code with the writer), and their tags,
//! steps and values equal the metrics file of the same run, across
//! `--resume` too; corrupt records are caught; bad directories are
//! refused before anything is written.

use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

#[path = "common/tempdir.rs"]
mod tempdir;

use tempdir::TempDir;

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn ok(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The stderr lines of a refusal: exit 2, one line (the driver's
/// XDG_RUNTIME_DIR notice left out).
fn refusal(o: &Output) -> Vec<String> {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<String> = err
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(String::from)
        .collect();
    assert_eq!(o.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines
}

// ---- The reader: CRC32C, records, protocol buffers ----

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TensorFlow's mask, as its record writer spells it.
#[allow(clippy::manual_rotate)]
fn masked(data: &[u8]) -> u32 {
    let c = crc32c(data);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The records of an event file, both masked CRCs of each checked.
fn records(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = bytes.len() - at;
        if n < 12 {
            return Err(format!(
                "record {}: header cut short at byte {at}",
                out.len()
            ));
        }
        let len_bytes = &bytes[at..at + 8];
        if masked(len_bytes) != le32(&bytes[at + 8..at + 12]) {
            return Err(format!("record {}: length CRC mismatch", out.len()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| "length")?) as usize;
        if n < 12 + len + 4 {
            return Err(format!("record {}: data cut short", out.len()));
        }
        let data = &bytes[at + 12..at + 12 + len];
        if masked(data) != le32(&bytes[at + 12 + len..at + 16 + len]) {
            return Err(format!("record {}: data CRC mismatch", out.len()));
        }
        out.push(data);
        at += 16 + len;
    }
    Ok(out)
}

/// A protocol buffer field's value by wire type.
#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("varint cut short")?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// The (field number, value) pairs of one message.
fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
            let s = b.get(*at..*at + n).ok_or("field cut short")?;
            *at += n;
            Ok(s)
        };
        let f = match key & 7 {
            0 => Field::Varint(varint(b, &mut at)?),
            1 => Field::Fixed64(take(&mut at, 8)?.try_into().map_err(|_| "f64")?),
            2 => {
                let n = varint(b, &mut at)? as usize;
                Field::Bytes(take(&mut at, n)?)
            }
            5 => Field::Fixed32(take(&mut at, 4)?.try_into().map_err(|_| "f32")?),
            w => return Err(format!("wire type {w}")),
        };
        out.push((key >> 3, f));
    }
    Ok(out)
}

/// A histogram as read.
#[derive(Debug, Default, PartialEq)]
struct Histo {
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
    limits: Vec<f64>,
    counts: Vec<f64>,
}

#[derive(Debug, PartialEq)]
enum Val {
    Scalar(f32),
    Histo(Histo),
}

/// One event as read.
#[derive(Debug, Default)]
struct Event {
    wall_time: f64,
    step: i64,
    file_version: Option<String>,
    session_start: bool,
    values: Vec<(String, Val)>,
}

fn f64s(f: &Field<'_>) -> Result<Vec<f64>, String> {
    match f {
        Field::Fixed64(b) => Ok(vec![f64::from_le_bytes(*b)]),
        Field::Bytes(b) if b.len() % 8 == 0 => Ok(b
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()),
        f => Err(format!("not doubles: {f:?}")),
    }
}

fn histo(b: &[u8]) -> Result<Histo, String> {
    let mut h = Histo::default();
    for (n, f) in fields(b)? {
        let v = f64s(&f)?;
        match n {
            1 => h.min = v[0],
            2 => h.max = v[0],
            3 => h.num = v[0],
            4 => h.sum = v[0],
            5 => h.sum_squares = v[0],
            6 => h.limits.extend(v),
            7 => h.counts.extend(v),
            _ => return Err(format!("histogram field {n}")),
        }
    }
    Ok(h)
}

fn event(b: &[u8]) -> Result<Event, String> {
    let mut e = Event::default();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Fixed64(x)) => e.wall_time = f64::from_le_bytes(x),
            (2, Field::Varint(x)) => e.step = x as i64,
            (3, Field::Bytes(x)) => {
                e.file_version = Some(String::from_utf8(x.to_vec()).map_err(|e| e.to_string())?)
            }
            (5, Field::Bytes(summary)) => {
                for (n, f) in fields(summary)? {
                    let (1, Field::Bytes(value)) = (n, f) else {
                        return Err(format!("summary field {n}"));
                    };
                    let (mut tag, mut val) = (None, None);
                    for (n, f) in fields(value)? {
                        match (n, f) {
                            (1, Field::Bytes(t)) => {
                                tag = Some(String::from_utf8_lossy(t).into_owned())
                            }
                            (2, Field::Fixed32(x)) => {
                                val = Some(Val::Scalar(f32::from_le_bytes(x)))
                            }
                            (5, Field::Bytes(h)) => val = Some(Val::Histo(histo(h)?)),
                            (n, f) => return Err(format!("value field {n}: {f:?}")),
                        }
                    }
                    e.values.push((
                        tag.ok_or("value without a tag")?,
                        val.ok_or("value without a value")?,
                    ));
                }
            }
            (7, Field::Bytes(log)) => {
                e.session_start = fields(log)?
                    .iter()
                    .any(|(n, f)| *n == 1 && matches!(f, Field::Varint(1)));
            }
            (n, f) => return Err(format!("event field {n}: {f:?}")),
        }
    }
    Ok(e)
}

fn read_file(p: &Path) -> Result<Vec<Event>, String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    records(&bytes)?.into_iter().map(event).collect()
}

/// The event files in `dir`, in name order (as TensorBoard reads them).
fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    v.sort();
    for p in &v {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        assert!(
            name.as_deref()
                .is_some_and(|n| n.starts_with("events.out.tfevents.")),
            "{}",
            p.display()
        );
    }
    v
}

/// (tag, step) → value over the files of `dir`, read as TensorBoard
/// does: each file starts with `file_version`; a session start at step
/// S drops the values of steps ≥ S read before it.
fn scalars(dir: &Path) -> BTreeMap<(String, i64), f32> {
    let mut out = BTreeMap::new();
    for f in event_files(dir) {
        let evs = read_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(
            evs.first().and_then(|e| e.file_version.as_deref()),
            Some("brain.Event:2"),
            "{}",
            f.display()
        );
        assert!(evs[0].wall_time > 1.5e9, "{}", evs[0].wall_time);
        for e in &evs[1..] {
            assert!(e.file_version.is_none());
            if e.session_start {
                out.retain(|(_, step), _| *step < e.step);
            }
            for (tag, v) in &e.values {
                let Val::Scalar(x) = v else {
                    panic!("{tag}: not a scalar")
                };
                assert!(
                    out.insert((tag.clone(), e.step), *x).is_none(),
                    "{tag} twice at step {}",
                    e.step
                );
            }
        }
    }
    out
}

/// The metrics file's records, as (tag, step) → value with the tags the
/// event files use.
fn metrics(path: &Path) -> BTreeMap<(String, i64), Option<f64>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let j: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let step = j["step"].as_i64().unwrap_or_else(|| panic!("{line}"));
        if j.get("loss").is_some() {
            // Gradient norms: per tensor by name, per layer by index.
            let tensors = j["grad_norms"]
                .as_object()
                .unwrap_or_else(|| panic!("{line}"));
            for (name, v) in tensors {
                out.insert((format!("grad_norm/{name}"), step), v.as_f64());
            }
            let layers = j["layer_grad_norms"]
                .as_array()
                .unwrap_or_else(|| panic!("{line}"));
            for (k, v) in layers.iter().enumerate() {
                out.insert((format!("grad_norm/layer_{k}"), step), v.as_f64());
            }
        }
        let names: &[(&str, &str)] = if j.get("epoch").is_some() {
            &[
                ("explosions", "health/explosions"),
                ("vanishing", "health/vanishing"),
            ]
        } else if j.get("loss").is_some() {
            &[
                ("loss", "train/loss"),
                ("lr", "train/lr"),
                ("grad_norm", "train/grad_norm"),
                ("skipped_total", "train/skipped_total"),
                ("loss_scale", "train/loss_scale"),
                ("tokens_per_s", "train/tokens_per_s"),
            ]
        } else {
            &[
                ("val_loss", "val/loss"),
                ("naive_val_loss", "val/naive_loss"),
                ("val_mae", "val/mae"),
                ("val_rmse", "val/rmse"),
                ("naive_mae", "val/naive_mae"),
                ("naive_rmse", "val/naive_rmse"),
            ]
        };
        for (key, tag) in names {
            if let Some(v) = j.get(*key) {
                out.insert((tag.to_string(), step), v.as_f64());
            }
        }
    }
    out
}

/// The event files hold exactly the metrics file's tags, steps and values
/// (as f32; `null`, a non-finite value, as a non-finite one).
fn assert_same(tb: &BTreeMap<(String, i64), f32>, m: &BTreeMap<(String, i64), Option<f64>>) {
    let keys = |it: Vec<&(String, i64)>| it.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(keys(tb.keys().collect()), keys(m.keys().collect()));
    for (k, v) in tb {
        match m[k] {
            Some(want) => assert_eq!(v.to_bits(), (want as f32).to_bits(), "{k:?}"),
            None => assert!(!v.is_finite(), "{k:?}: {v}"),
        }
    }
}

const SMALL: [&str; 14] = [
    "--hidden",
    "8",
    "--layers",
    "1",
    "--batch",
    "4",
    "--seq-len",
    "6",
    "--no-progress",
    "--seed",
    "3",
    "--val-every",
    "3",
    "--deterministic-order",
];

// ---- The tests ----

#[test]
fn reader_checks_against_known_values() {
    // CRC32C's check value (RFC 3720, B.4) and a hand-made record.
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    let mut r = 1u64.to_le_bytes().to_vec();
    r.extend(masked(&r).to_le_bytes());
    r.push(0x10);
    r.extend(masked(&[0x10]).to_le_bytes());
    assert_eq!(records(&r), Ok(vec![&[0x10u8][..]]));
    // The writer's framing and CRC crate agree with this reader's.
    assert_eq!(lstm_wgpu::train::tensorboard::record(&[0x10]), r);
    assert_eq!(
        lstm_wgpu::train::tensorboard::masked_crc(b"123456789"),
        masked(b"123456789")
    );
}

/// Every scalar of a series run (training and validation) equals the
/// metrics file's, at the same steps, under the same tags.
#[test]
fn series_run_events_equal_its_metrics() {
    let d = TempDir::new("tb-series");
    let (m, tb) = (d.join("m.jsonl"), d.join("runs/a"));
    let mut args = vec!["train", "--dataset", "sine", "--steps", "7"];
    args.extend(SMALL);
    ok(&[&args[..], &["--metrics", s(&m), "--tensorboard", s(&tb)]].concat());
    let files = event_files(&tb);
    assert_eq!(files.len(), 1, "{files:?}");
    let host = files[0]
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    assert!(host.is_some_and(|n| n.split('.').count() >= 5), "{files:?}");
    let got = scalars(&tb);
    let want = metrics(&m);
    assert_same(&got, &want);
    // 6 training tags and 7 gradient norms (4 LSTM tensors, the head's 2,
    // 1 layer) × 7 steps, 6 validation tags × 3 validations, 2 health
    // tags at the end of the (only, partial) epoch.
    assert_eq!(got.len(), (6 + 7) * 7 + 6 * 3 + 2, "{:?}", got.keys());
    assert!(got.contains_key(&("val/naive_rmse".into(), 7)));
    for tag in [
        "grad_norm/weight_hh_l0",
        "grad_norm/head.bias",
        "grad_norm/layer_0",
    ] {
        assert!(got.contains_key(&(tag.into(), 7)), "{tag}");
    }
    assert_eq!(got[&("health/explosions".into(), 7)], 0.0);
}

/// A text run has `val/loss` and no series figures; a corrupt CRC or a
/// cut-short file is caught by the reader.
#[test]
fn text_run_events_and_corruption() {
    let d = TempDir::new("tb-text");
    let (m, tb) = (d.join("m.jsonl"), d.join("tb"));
    let mut args = vec!["train", "--steps", "4"];
    args.extend(SMALL);
    ok(&[&args[..], &["--metrics", s(&m), "--tensorboard", s(&tb)]].concat());
    let got = scalars(&tb);
    assert_same(&got, &metrics(&m));
    let tags: std::collections::BTreeSet<&str> = got.keys().map(|(t, _)| t.as_str()).collect();
    assert!(
        tags.contains("val/loss") && !tags.contains("val/mae"),
        "{tags:?}"
    );

    let f = &event_files(&tb)[0];
    let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{e}"));
    assert!(records(&bytes).is_ok());
    // The second record's data, its length, its CRC; then a cut file.
    let second = 16 + u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
    let last = records(&bytes).map_or(0, |r| r.len() - 1);
    for (at, what, rec) in [
        (second + 14, "data CRC", 1),
        (second + 2, "length CRC", 1),
        (second + 9, "length CRC", 1),
        (bytes.len() - 1, "data CRC", last),
    ] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        let e = records(&bad).expect_err(what);
        assert!(
            e.contains(what) && e.contains(&format!("record {rec}:")),
            "{at}: {e}"
        );
    }
    let e = records(&bytes[..bytes.len() - 3]).expect_err("cut");
    assert!(e.contains("cut short"), "{e}");
}

/// Stopped and resumed, a run writes a second file whose events continue
/// at the resumed step; read as TensorBoard does (a session start drops
/// the first file's events from there on), both files equal the metrics
/// file the two runs wrote.
#[test]
fn resumed_run_continues_in_a_new_file() {
    let d = TempDir::new("tb-resume");
    let (m, tb, ck) = (d.join("m.jsonl"), d.join("tb"), d.join("ck.st"));
    let mut args = vec!["train", "--dataset", "sine", "--steps", "8"];
    args.extend(SMALL);
    let out = ["--metrics", s(&m), "--tensorboard", s(&tb)];
    ok(&[
        &args[..],
        &out,
        &["--stop-after", "5", "--checkpoint", s(&ck)],
    ]
    .concat());
    let first = event_files(&tb);
    assert_eq!(first.len(), 1);
    // Events the first run wrote past its checkpoint, as if it had gone on
    // (only a crash between checkpoints leaves those, or a resume from
    // an older checkpoint).
    use lstm_wgpu::train::tensorboard::{proto, record};
    let mut bytes = std::fs::read(&first[0]).unwrap_or_else(|e| panic!("{e}"));
    for step in 6..=7 {
        let e = proto::Event {
            wall_time: 1.8e9,
            step,
            what: Some(proto::What::Summary(proto::Summary {
                value: vec![proto::Value {
                    tag: "train/loss".into(),
                    value: Some(proto::Kind::SimpleValue(99.0)),
                }],
            })),
        };
        bytes.extend(record(&prost::Message::encode_to_vec(&e)));
    }
    std::fs::write(&first[0], bytes).unwrap_or_else(|e| panic!("{e}"));
    ok(&[
        "train",
        "--resume",
        s(&ck),
        "--no-progress",
        out[0],
        out[1],
        out[2],
        out[3],
    ]);
    let files = event_files(&tb);
    assert_eq!(files.len(), 2, "{files:?}");
    // Ordered by name the resumed file comes last (a later second, or
    // the same second with a suffix).
    assert_eq!(files[0], first[0]);
    let evs = read_file(&files[1]).unwrap_or_else(|e| panic!("{e}"));
    assert!(evs[1].session_start && evs[1].step == 6, "{:?}", evs[1]);
    assert_eq!(evs[2].step, 6);
    let got = scalars(&tb);
    assert_same(&got, &metrics(&m));
    assert_ne!(got[&("train/loss".into(), 7)], 99.0);
    assert_eq!(got.keys().filter(|(t, _)| t == "train/loss").count(), 8);
}

/// A directory that is a file, under a file, or unwritable: exit 2 with
/// one line naming the flag, nothing created. A missing one is created
/// with its parents.
#[test]
fn bad_directories_are_refused_before_the_run() {
    let d = TempDir::new("tb-bad");
    let file = d.join("file");
    std::fs::write(&file, "x").unwrap_or_else(|e| panic!("{e}"));
    let m = d.join("m.jsonl");
    let before = d.names();
    for (dir, why) in [
        (file.clone(), "is not a directory"),
        (file.join("sub"), "is not a directory"),
        (PathBuf::from("/proc/self/tb"), "not writable"),
        (m.clone(), "give each output its own file"),
    ] {
        let o = run(&[
            "train",
            "--steps",
            "1",
            "--no-progress",
            "--metrics",
            s(&m),
            "--tensorboard",
            s(&dir),
        ]);
        let lines = refusal(&o);
        for w in ["--tensorboard", why] {
            assert!(lines[0].contains(w), "{dir:?}: `{w}` missing: {lines:?}");
        }
        assert_eq!(d.names(), before, "{dir:?} left a file");
    }
    // The same through --config.
    let cfg = d.join("run.toml");
    std::fs::write(&cfg, format!("tensorboard = {:?}\n", s(&file)))
        .unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["train", "--config", s(&cfg), "--steps", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tensorboard"));
    let nested = d.join("a/b/c");
    let mut args = vec!["train", "--steps", "1"];
    args.extend(SMALL);
    ok(&[&args[..], &["--tensorboard", s(&nested)]].concat());
    assert_eq!(event_files(&nested).len(), 1);
}

/// The library's writer: histograms from bin counts round-trip through
/// this reader and through prost; two writers in one second and one
/// directory write two files; nothing exists before the first flush.
#[test]
fn writer_histograms_and_unique_files() {
    use lstm_wgpu::train::tensorboard::{EventWriter, Histogram, proto};
    let d = TempDir::new("tb-writer");
    let dir = d.join("h");
    let h = Histogram {
        limits: vec![-1.0, 0.0, 1.0, f64::MAX],
        counts: vec![1.0, 3.0, 2.0, 0.0],
        min: -1.5,
        max: 0.75,
        sum: 0.5,
        sum_squares: 4.25,
    };
    let mut a = EventWriter::new(&dir);
    let mut b = EventWriter::new(&dir);
    a.histogram(4, "weights/w", &h)
        .unwrap_or_else(|e| panic!("{e}"));
    a.scalar(4, "x", 1.25);
    assert!(!dir.exists(), "nothing before the first flush");
    a.flush().unwrap_or_else(|e| panic!("{e}"));
    b.flush().unwrap_or_else(|e| panic!("{e}"));
    a.scalar(5, "x", 2.5);
    a.flush().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a.path(), b.path());
    assert_eq!(event_files(&dir).len(), 2);
    let pa = a.path().unwrap_or_else(|| panic!("no path"));
    let evs = read_file(pa).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(evs.len(), 4);
    assert_eq!(
        evs[1].values,
        [(
            "weights/w".to_string(),
            Val::Histo(Histo {
                min: -1.5,
                max: 0.75,
                num: 6.0,
                sum: 0.5,
                sum_squares: 4.25,
                // The empty last bin is left out.
                limits: vec![-1.0, 0.0, 1.0],
                counts: vec![1.0, 3.0, 2.0],
            })
        )]
    );
    assert_eq!((evs[1].step, evs[3].step), (4, 5));
    assert_eq!(evs[3].values, [("x".to_string(), Val::Scalar(2.5))]);
    // prost reads back what it wrote.
    let bytes = std::fs::read(pa).unwrap_or_else(|e| panic!("{e}"));
    let recs = records(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let e: proto::Event = prost::Message::decode(recs[1]).unwrap_or_else(|e| panic!("{e}"));
    let Some(proto::What::Summary(sm)) = e.what else {
        panic!("{e:?}")
    };
    assert_eq!(
        sm.value[0].value,
        Some(proto::Kind::Histo(
            h.to_proto().unwrap_or_else(|e| panic!("{e}"))
        ))
    );
    // A directory that cannot be made is the crate's error, with the path.
    let blocked = d.join("file");
    std::fs::write(&blocked, "x").unwrap_or_else(|e| panic!("{e}"));
    let err = EventWriter::new(&blocked.join("tb"))
        .flush()
        .err()
        .unwrap_or_else(|| panic!("wrote under a file"));
    assert!(err.to_string().contains(s(&blocked)), "{err}");
}

/// Histogram steps (`--hist-every`): histogram events at the metrics
/// file's histogram steps, with its tags, counts, min and max; counts sum
/// to each tensor's element count (every position valid), and the
/// parameters' min and max at the last step are the checkpoint's.
#[test]
fn histograms_in_events_and_metrics() {
    histogram_run(&[], 8);
}

/// The same in f16-mixed, with the normalized cells and with projections
/// (h then P wide).
#[test]
fn histograms_of_f16_norm_cells_and_projections() {
    for (extra, h_width) in [
        (&["--precision", "f16-mixed"][..], 8),
        (&["--norm", "layer-cell"][..], 8),
        (&["--norm", "recurrent-batch"][..], 8),
        (&["--proj-size", "3"][..], 3),
    ] {
        histogram_run(extra, h_width);
    }
}

/// A 4-step run of `extra` with histograms every 2 steps, checked as
/// [`histograms_in_events_and_metrics`] says; the layer output h is
/// `h_width` wide.
fn histogram_run(extra: &[&str], h_width: usize) {
    let d = TempDir::new("tb-hist");
    let (m, tb, ck) = (d.join("m.jsonl"), d.join("tb"), d.join("ck.safetensors"));
    let mut args = vec!["train", "--steps", "4", "--hist-every", "2"];
    args.extend(SMALL);
    args.extend(extra);
    let outs = [
        "--metrics",
        s(&m),
        "--tensorboard",
        s(&tb),
        "--checkpoint",
        s(&ck),
    ];
    ok(&[&args[..], &outs].concat());
    let text = std::fs::read_to_string(&m).unwrap_or_else(|e| panic!("{e}"));
    let mut want: BTreeMap<(String, i64), Json> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("\"histograms\"")) {
        let j: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let step = j["step"].as_i64().unwrap_or_else(|| panic!("{line}"));
        let all = j["histograms"]
            .as_object()
            .unwrap_or_else(|| panic!("{line}"));
        for (tag, h) in all {
            want.insert((tag.clone(), step), h.clone());
        }
    }
    let mut got: BTreeMap<(String, i64), Histo> = BTreeMap::new();
    for f in event_files(&tb) {
        for e in read_file(&f).unwrap_or_else(|e| panic!("{e}")) {
            for (tag, v) in e.values {
                if let Val::Histo(h) = v {
                    assert!(got.insert((tag, e.step), h).is_none());
                }
            }
        }
    }
    let keys = |m: Vec<&(String, i64)>| m.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(keys(got.keys().collect()), keys(want.keys().collect()));
    let steps: std::collections::BTreeSet<i64> = want.keys().map(|k| k.1).collect();
    assert_eq!(steps.into_iter().collect::<Vec<_>>(), [2, 4]);
    let f = lstm_wgpu::io::TensorFile::read(&ck).unwrap_or_else(|e| panic!("{e}"));
    // seq-len 6 × batch 4 positions of hidden 8 (h: of h_width).
    let positions = 6 * 4 * 8;
    for ((tag, step), j) in &want {
        let counts: Vec<u64> = j["counts"]
            .as_array()
            .unwrap_or_else(|| panic!("{tag}"))
            .iter()
            .map(|c| c.as_u64().unwrap_or_else(|| panic!("{tag}")))
            .collect();
        assert_eq!(counts.len(), 30, "{tag}");
        let (n, lo, hi) = (
            counts.iter().sum::<u64>(),
            j["min"].as_f64().unwrap_or(f64::NAN),
            j["max"].as_f64().unwrap_or(f64::NAN),
        );
        // The metrics file's numbers are f32 values; serde_json's parse
        // may be an ulp off in f64.
        let (lo, hi) = (lo as f32, hi as f32);
        let h = &got[&(tag.clone(), *step)];
        assert_eq!(
            (h.num, h.min as f32, h.max as f32),
            (n as f64, lo, hi),
            "{tag} {step}"
        );
        assert_eq!((j["nan"].as_u64(), j["inf"].as_u64()), (Some(0), Some(0)));
        let name = tag.split_once('/').map_or("", |(_, n)| n);
        let len = match tag.starts_with("activations/") {
            true if tag.ends_with("/h") => positions / 8 * h_width,
            true => positions,
            false => {
                // LSTM tensors are saved as `lstm.<name>`.
                let t = match f.f32(name).unwrap_or_else(|e| panic!("{e}")) {
                    Some(t) => Ok(t),
                    None => f.require_f32(&format!("lstm.{name}")),
                }
                .unwrap_or_else(|e| panic!("{e}"));
                if tag.starts_with("params/") && *step == 4 {
                    let lo32 = t.data.iter().cloned().fold(f32::INFINITY, f32::min);
                    let hi32 = t.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!((lo, hi), (lo32, hi32), "{tag}");
                }
                t.data.len()
            }
        };
        assert_eq!(n, len as u64, "{extra:?} {tag} {step}");
    }
    for tag in [
        "activations/layer_0/h",
        "activations/layer_0/c",
        "activations/layer_0/gate_i",
        "activations/layer_0/gate_f",
        "grads/head.weight",
        "params/embedding.weight",
    ] {
        assert!(want.contains_key(&(tag.into(), 4)), "{tag}");
    }
}

/// `--hist-every` is refused, one line, exit 2, before any file: without
/// an output to write to, and when not a number.
#[test]
fn bad_hist_every_is_refused_before_the_run() {
    let d = TempDir::new("tb-hist-bad");
    let m = d.join("m.jsonl");
    let before = d.names();
    for (extra, why) in [
        (vec!["--hist-every", "5"], "--metrics or --tensorboard"),
        (vec!["--hist-every", "x"], "--hist-every"),
    ] {
        let o = run(&[&["train", "--steps", "1", "--no-progress"][..], &extra].concat());
        let lines = refusal(&o);
        assert!(lines[0].contains(why), "{extra:?}: {lines:?}");
        assert!(lines[0].contains("--hist-every"), "{extra:?}: {lines:?}");
        assert_eq!(d.names(), before, "{extra:?} left a file");
    }
    // Off: runs.
    let mut args = vec!["train", "--steps", "1"];
    args.extend(SMALL);
    ok(&[&args[..], &["--hist-every", "0", "--metrics", s(&m)]].concat());
}

/// (tag, step) → value as JSON rows `[tag, step, ...]`: scalars as f64,
/// histograms as min, max, num, sum, sum_squares, limits, counts (the
/// layout of `fixtures/tensorboard/make.sh`), sorted by tag then step.
fn rows(evs: &[Event]) -> (Vec<Json>, Vec<Json>) {
    let (mut scalars, mut histos) = (Vec::new(), Vec::new());
    for e in evs {
        for (tag, v) in &e.values {
            match v {
                Val::Scalar(x) => scalars.push(serde_json::json!([tag, e.step, *x as f64])),
                Val::Histo(h) => histos.push(serde_json::json!([
                    tag,
                    e.step,
                    h.min,
                    h.max,
                    h.num,
                    h.sum,
                    h.sum_squares,
                    h.limits,
                    h.counts
                ])),
            }
        }
    }
    let key = |r: &Json| (r[0].as_str().unwrap_or("").to_string(), r[1].as_i64());
    scalars.sort_by_key(key);
    histos.sort_by_key(key);
    (scalars, histos)
}

/// `a` and `b` equal, numbers to 1e-15 relative: serde_json's float
/// parsing is within an ulp or so, not exact.
fn same_json(a: &Json, b: &Json, at: &str) {
    match (a, b) {
        (Json::Array(x), Json::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same_json(p, q, &format!("{at}[{i}]"));
            }
        }
        (Json::Number(x), Json::Number(y)) => {
            let (p, q) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            assert!(
                (p - q).abs() <= 1e-15 * p.abs().max(q.abs()),
                "{at}: {p} vs {q}"
            );
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// TensorBoard's own reader (EventAccumulator, run by
/// `fixtures/tensorboard/make.sh`) read the committed event file of a run
/// with histograms as `read_by_tensorboard.json` records; this test's
/// reader reads exactly the same from it. And a fresh run of the same
/// command writes the same tags at the same steps, so the writer still
/// writes what TensorBoard was seen to read.
#[test]
fn tensorboard_itself_reads_what_this_reader_reads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard");
    let text = std::fs::read_to_string(dir.join("read_by_tensorboard.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let tb: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let evs = read_file(&dir.join("run.tfevents")).unwrap_or_else(|e| panic!("{e}"));
    let (scalars, histos) = rows(&evs);
    same_json(&Json::Array(scalars.clone()), &tb["scalars"], "scalars");
    same_json(
        &Json::Array(histos.clone()),
        &tb["histograms"],
        "histograms",
    );
    assert!(
        scalars.len() > 100 && histos.len() > 30,
        "{} {}",
        scalars.len(),
        histos.len()
    );

    let d = TempDir::new("tb-fixture");
    let (m, out) = (d.join("m.jsonl"), d.join("tb"));
    ok(&[
        "train",
        "--task",
        "series",
        "--steps",
        "10",
        "--val-every",
        "5",
        "--hist-every",
        "5",
        "--no-progress",
        "--tensorboard",
        s(&out),
        "--metrics",
        s(&m),
    ]);
    let files = event_files(&out);
    assert_eq!(files.len(), 1);
    let fresh = read_file(&files[0]).unwrap_or_else(|e| panic!("{e}"));
    let (fs, fh) = rows(&fresh);
    let keys = |v: &[Json]| -> Vec<(Json, Json)> {
        v.iter().map(|r| (r[0].clone(), r[1].clone())).collect()
    };
    assert_eq!(keys(&fs), keys(&scalars));
    assert_eq!(keys(&fh), keys(&histos));
}
