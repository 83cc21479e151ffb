//! Unit tests of the datasets.

use super::*;

fn letters() -> (Vocab, Vec<u32>) {
    let text: String = ('a'..='z').collect();
    let v = Vocab::from_text(&text).unwrap();
    let ids = v.encode(&text).unwrap();
    (v, ids)
}

fn rows(v: &Vocab, ids: &[u32], b: usize) -> Vec<String> {
    ids.chunks(b).map(|r| v.decode(r)).collect()
}

#[test]
fn batchify_and_get_batch_26_letters() {
    let (v, ids) = letters();
    let s = TextStreams::new(&ids, 4, 3).unwrap();
    assert_eq!(s.stream_len(), 6);
    assert_eq!(s.dropped(), 2); // y, z
    let streams: Vec<String> = (0..4).map(|b| v.decode(s.stream(b))).collect();
    assert_eq!(streams, ["abcdef", "ghijkl", "mnopqr", "stuvwx"]);
    assert_eq!(s.num_windows(), 2); // range(0, 5, 3) = [0, 3]
    assert_eq!(s.num_targets(), 20);

    let b0 = s.get_batch(0);
    assert_eq!((b0.seq_len, b0.batch), (3, 4));
    assert_eq!(rows(&v, &b0.inputs, 4), ["agms", "bhnt", "ciou"]);
    assert_eq!(rows(&v, &b0.targets, 4), ["bhnt", "ciou", "djpv"]);

    // The last window is short: seq_len = min(3, 6 - 1 - 3) = 2.
    let b1 = s.get_batch(1);
    assert_eq!(b1.seq_len, 2);
    assert_eq!(rows(&v, &b1.inputs, 4), ["djpv", "ekqw"]);
    assert_eq!(rows(&v, &b1.targets, 4), ["ekqw", "flrx"]);

    // The next epoch starts again at 0.
    assert_eq!(s.get_batch(2), b0);
    assert!(s.is_epoch_start(2) && !s.is_epoch_start(3));
    assert_eq!(s.epoch_of(5), 2);
}

/// Literal transcription of PyTorch's batchify/get_batch loop.
fn pytorch_windows(tokens: &[u32], bsz: usize, bptt: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let nbatch = tokens.len() / bsz;
    // source[t][b] = tokens[b * nbatch + t]
    let source = |t: usize, b: usize| tokens[b * nbatch + t];
    let mut out = Vec::new();
    let mut i = 0;
    while i < nbatch - 1 {
        let seq_len = bptt.min(nbatch - 1 - i);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for t in i..i + seq_len {
            for b in 0..bsz {
                x.push(source(t, b));
                y.push(source(t + 1, b));
            }
        }
        out.push((x, y));
        i += bptt;
    }
    out
}

#[test]
fn streams_match_pytorch_for_many_shapes() {
    let tokens: Vec<u32> = (0..103).map(|i| (i * 7 % 31) as u32).collect();
    for bsz in [1, 2, 3, 5, 10, 51] {
        for bptt in [1, 2, 4, 7, 35, 200] {
            let s = TextStreams::new(&tokens, bsz, bptt).unwrap();
            let want = pytorch_windows(&tokens, bsz, bptt);
            assert_eq!(s.num_windows(), want.len(), "bsz {bsz} bptt {bptt}");
            for (k, (x, y)) in want.iter().enumerate() {
                let got = s.get_batch(k);
                assert_eq!(&got.inputs, x);
                assert_eq!(&got.targets, y);
                assert_eq!(got.seq_len * bsz, x.len());
            }
        }
    }
}

#[test]
fn streams_reject_too_little_data() {
    let e = TextStreams::new(&[1, 2, 3], 2, 5).unwrap_err().to_string();
    assert!(e.contains("3 tokens") && e.contains("2 streams"), "{e}");
    assert!(TextStreams::new(&[1, 2, 3, 4], 2, 5).is_ok());
    assert!(TextStreams::new(&[1, 2, 3, 4], 0, 5).is_err());
    assert!(TextStreams::new(&[1, 2, 3, 4], 1, 0).is_err());
}

#[test]
fn vocab_sorts_non_ascii_by_code_point() {
    let text = "zébre ☃\naé𝄞A";
    let v = Vocab::from_text(text).unwrap();
    assert_eq!(
        v.chars,
        vec!['\n', ' ', 'A', 'a', 'b', 'e', 'r', 'z', 'é', '☃', '𝄞']
    );
    let ids = v.encode(text).unwrap();
    assert_eq!(v.decode(&ids), text);
    assert_eq!(v.id('é'), Some(8));
    assert_eq!(v.decode(&[99]), "\u{FFFD}");

    let saved = v.save();
    assert_eq!(Vocab::load(&saved).unwrap(), v);
    let e = Vocab::load("ba").unwrap_err().to_string();
    assert!(e.contains("not strictly sorted"), "{e}");
    assert!(Vocab::load("aa").is_err());
    assert!(Vocab::load("").is_err());
    assert!(Vocab::from_text("").is_err());

    let e = v.encode("abz\nzeß").unwrap_err().to_string();
    assert!(e.contains("'ß'") && e.contains("U+00DF"), "{e}");
    assert!(e.contains("line 2, column 3"), "{e}");
}

#[test]
fn text_validation_split_sizes() {
    let text: String = (0..1000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let cfg = TextConfig {
        batch: 4,
        eval_batch: 2,
        bptt: 10,
        val_fraction: 0.1,
    };
    let d = TextData::new(&text, &cfg).unwrap();
    assert_eq!((d.train_tokens, d.val_tokens), (900, 100));
    assert_eq!(d.train.stream_len(), 225);
    let val = d.val.as_ref().unwrap();
    assert_eq!(val.stream_len(), 50);
    assert_eq!(val.batch(), 2);
    // The validation streams are the last 100 tokens.
    assert_eq!(d.vocab.decode(val.stream(0)), text[900..950]);
    assert_eq!(d.vocab.decode(val.stream(1)), text[950..1000]);
    assert_eq!(d.train.num_windows(), 23); // ceil(224 / 10)

    let none = TextData::new(
        &text,
        &TextConfig {
            val_fraction: 0.0,
            ..cfg.clone()
        },
    )
    .unwrap();
    assert!(none.val.is_none() && none.train_tokens == 1000);
    assert!(
        TextData::new(
            &text,
            &TextConfig {
                val_fraction: 1.0,
                ..cfg.clone()
            }
        )
        .is_err()
    );
    assert_eq!(val_count(1005, 0.1).unwrap(), 101); // round(100.5)
    assert_eq!(val_count(10, 0.25).unwrap(), 3); // round(2.5) rounds half away from zero
    let e = TextData::new(
        "abcdefgh",
        &TextConfig {
            val_fraction: 0.1,
            ..cfg
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("training split"), "{e}");

    // A checkpoint's vocabulary that lacks a character of the text.
    let v = Vocab::load("abc").unwrap();
    let e = TextData::with_vocab("abcd", v, &TextConfig::default()).unwrap_err();
    assert!(e.to_string().contains("'d'"), "{e}");
}

#[test]
fn one_hot_and_padding() {
    assert_eq!(one_hot(&[2, 0], 3).unwrap(), vec![0., 0., 1., 1., 0., 0.]);
    assert!(one_hot(&[3], 3).is_err());

    let p = pad_sequences(&[vec![1., 2., 3., 4.], vec![5., 6.]], 2).unwrap();
    assert_eq!((p.max_len, p.batch, p.num_features), (2, 2, 2));
    assert_eq!(p.lengths, vec![2, 1]);
    assert_eq!(p.data, vec![1., 2., 5., 6., 3., 4., 0., 0.]);
    assert!(pad_sequences(&[vec![1., 2., 3.]], 2).is_err());
    assert!(pad_sequences::<Vec<f32>>(&[vec![]], 2).is_err());
    assert!(pad_sequences::<Vec<f32>>(&[], 2).is_err());

    let (ids, lens) = pad_tokens(&[vec![1, 2, 3], vec![4]], 9).unwrap();
    assert_eq!(ids, vec![1, 4, 2, 9, 3, 9]);
    assert_eq!(lens, vec![3, 1]);
    assert!(pad_tokens::<Vec<u32>>(&[vec![]], 0).is_err());
}

const CSV: &str = "\u{feff}date, temp ,\"load\",humidity\r\n\
                   2024-01-01,1.5,10,0.5\r\n\
                   \r\n\
                   2024-01-02,2.5,30,0.25\r\n\
                   2024-01-03,-3e0,20,1\r\n";

#[test]
fn csv_parses_and_selects_columns() {
    let t = CsvTable::parse(CSV, "x.csv").unwrap();
    assert_eq!(t.header, ["date", "temp", "load", "humidity"]);
    assert_eq!(t.num_rows(), 3);
    assert_eq!(t.line_of_row(1), 4); // the blank line 3 is skipped
    assert_eq!(t.cell(0, 0), "2024-01-01");
    assert_eq!(t.numeric_column_indices(), vec![1, 2, 3]);

    // Default: all numeric columns as features, the last as target.
    let s = t.select(None, None).unwrap();
    assert_eq!(s.feature_names, ["temp", "load", "humidity"]);
    assert_eq!(s.target_name, "humidity");
    assert_eq!(s.features[0], vec![1.5, 2.5, -3.0]);
    assert_eq!(s.target, vec![0.5, 0.25, 1.0]);

    let f = vec!["load".to_string()];
    let s = t.select(Some(&f), Some("temp")).unwrap();
    assert_eq!(s.feature_names, ["load"]);
    assert_eq!(s.features, vec![vec![10., 30., 20.]]);
    assert_eq!(
        (s.target_name.as_str(), s.target.clone()),
        ("temp", vec![1.5, 2.5, -3.0])
    );

    let e = t.select(None, Some("pressure")).unwrap_err().to_string();
    assert!(
        e.contains("x.csv") && e.contains("`pressure`") && e.contains("date, temp"),
        "{e}"
    );
    let e = t.select(None, Some("date")).unwrap_err().to_string();
    assert!(
        e.contains("line 2, column 1 (`date`)") && e.contains("not a number"),
        "{e}"
    );
    let dup = vec!["load".to_string(), "load".to_string()];
    assert!(t.select(Some(&dup), None).is_err());
}

#[test]
fn csv_rejects_bad_input_with_line_numbers() {
    let e = CsvTable::parse("a,b\n1,2\n3\n", "r.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("r.csv: line 3: 1 fields") && e.contains("2 columns"),
        "{e}"
    );
    let e = CsvTable::parse("a,b\n1,2\n3,4,5\n", "r.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3: 3 fields"), "{e}");

    let t = CsvTable::parse("a,b\n1,2\n3,x\n2,6\n", "n.csv").unwrap();
    // `b` is not numeric (decided on all rows): name it to see why.
    let e = t.select(None, Some("b")).unwrap_err().to_string();
    assert!(
        e.contains("n.csv") && e.contains("line 3, column 2 (`b`): `x` is not a number"),
        "{e}"
    );
    let t = CsvTable::parse("a,b\n1,2\n3,\n", "n.csv").unwrap();
    let e = t.select(None, None).unwrap_err().to_string();
    assert!(
        e.contains("line 3, column 2") && e.contains("missing value"),
        "{e}"
    );
    let t = CsvTable::parse("a,b\n1,2\n3,NaN\n", "n.csv").unwrap();
    let e = t.select(None, None).unwrap_err().to_string();
    assert!(e.contains("missing value `NaN`"), "{e}");
    let t = CsvTable::parse("a,b\n1,2\n3,inf\n", "n.csv").unwrap();
    let e = t.select(None, None).unwrap_err().to_string();
    assert!(e.contains("`inf` is not a finite number"), "{e}");

    assert!(
        CsvTable::parse("", "e.csv")
            .unwrap_err()
            .to_string()
            .contains("empty file")
    );
    assert!(
        CsvTable::parse("a,b\n\n", "e.csv")
            .unwrap_err()
            .to_string()
            .contains("no data rows")
    );
    let e = CsvTable::parse("a,a\n1,2\n", "d.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("both named `a`"), "{e}");
    let e = CsvTable::parse("a,,c\n1,2,3\n", "d.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("column 2 of the header has no name"), "{e}");
    let t = CsvTable::parse("name\nfoo\n", "s.csv").unwrap();
    assert!(
        t.select(None, None)
            .unwrap_err()
            .to_string()
            .contains("no numeric column")
    );
}

#[test]
fn csv_quoted_fields_follow_rfc_4180() {
    let t = CsvTable::parse(
        "when,\"level, in m\",note\n\
         \"Jan 1, 2020\", \"1.5\" ,\"say \"\"hi\"\"\"\n\
         \"Jan 2,\n2020\",2,\"\"\n\
         Jan 3,3,x\r\n",
        "q.csv",
    )
    .unwrap();
    assert_eq!(t.header, ["when", "level, in m", "note"]);
    assert_eq!(t.num_rows(), 3);
    assert_eq!(t.cell(0, 0), "Jan 1, 2020");
    assert_eq!(t.cell(0, 2), "say \"hi\"");
    assert_eq!(t.cell(1, 0), "Jan 2,\n2020");
    assert_eq!(t.cell(1, 2), "");
    // A row starts on its first line; line breaks in quotes count.
    assert_eq!((t.line_of_row(1), t.line_of_row(2)), (3, 5));
    assert_eq!(t.numeric_column_indices(), vec![1]);
    let s = t.select(None, None).unwrap();
    assert_eq!(s.target, vec![1.5, 2.0, 3.0]);

    let e = CsvTable::parse("a,b\n1,2\n\"3,4\n5,6\n", "u.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("u.csv: line 3: a quoted field is never closed"),
        "{e}"
    );
    let e = CsvTable::parse("a,b\n1,\"2\"x\n", "u.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2: field 2 has text after its closing quote"),
        "{e}"
    );
    // A quoted empty line is a record, an empty one is not.
    let t = CsvTable::parse("a\n1\n\n  \n2\n", "b.csv").unwrap();
    assert_eq!(t.num_rows(), 2);
    let e = CsvTable::parse("a,b\n\"\"\n", "b.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2: 1 fields"), "{e}");
}

#[test]
fn csv_numeric_and_time_like_columns() {
    // `code` is numeric in the first row only; `t` counts up; `year`
    // is named like time; `x` holds a missing cell.
    let t = CsvTable::parse(
        "year,code,t,x,y\n2000,1,10,0.5,3\n2001,B,11,,1\n2002,3,12,0.2,2\n",
        "c.csv",
    )
    .unwrap();
    assert_eq!(t.numeric_column_indices(), vec![0, 2, 3, 4]);
    assert_eq!(t.time_like(0), Some("named like a time index"));
    assert_eq!(t.time_like(2), Some("integers increasing row by row"));
    assert_eq!(t.time_like(3), None);
    assert_eq!(t.time_like(4), None);
    let o = SelectOptions {
        missing: Missing::Interpolate,
        ..Default::default()
    };
    let s = t.select_with(&o).unwrap();
    assert_eq!(s.table.feature_names, ["x", "y"]);
    assert_eq!(s.table.features[0], vec![0.5, 0.35, 0.2]);
    assert_eq!(s.time.as_ref().map(|c| c.name.as_str()), Some("year"));
    assert_eq!(s.unused_time.len(), 2);
    assert_eq!(s.rows, vec![2, 3, 4]);
    // Named, a time-like column is a feature.
    let o = SelectOptions {
        features: Some(vec!["t".into(), "y".into()]),
        time: Some("code".into()),
        ..Default::default()
    };
    let s = t.select_with(&o).unwrap();
    assert_eq!(s.table.feature_names, ["t", "y"]);
    assert_eq!(s.time.unwrap().values, ["1", "B", "3"]);
}

#[test]
fn csv_missing_cells() {
    let t = CsvTable::parse("a,y\n1,NA\n2,4\n,6\n3,\n5,10\n", "m.csv").unwrap();
    let sel = |m| {
        t.select_with(&SelectOptions {
            missing: m,
            ..Default::default()
        })
    };
    let e = sel(Missing::Error).unwrap_err().to_string();
    assert!(
        e.contains("m.csv: line 2, column 2 (`y`): missing value `NA`") && e.contains("--missing"),
        "{e}"
    );
    let d = sel(Missing::Drop).unwrap();
    assert_eq!(d.table.features, vec![vec![2.0, 5.0], vec![4.0, 10.0]]);
    assert_eq!(d.rows, vec![3, 6]);
    let e = sel(Missing::Ffill).unwrap_err().to_string();
    assert!(
        e.contains("line 2, column 2") && e.contains("no value above"),
        "{e}"
    );
    let i = sel(Missing::Interpolate).unwrap();
    assert_eq!(i.table.features[0], vec![1.0, 2.0, 2.5, 3.0, 5.0]);
    assert_eq!(i.table.target, vec![4.0, 4.0, 6.0, 8.0, 10.0]);
    let t = CsvTable::parse("a,y\n1,1\n2,\n,6\n", "m.csv").unwrap();
    let f = t
        .select_with(&SelectOptions {
            missing: Missing::Ffill,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        f.table.features,
        vec![vec![1.0, 2.0, 2.0], vec![1.0, 1.0, 6.0]]
    );
    assert!(Missing::parse("zero").is_err());
}

#[test]
fn unnormalisable_columns_are_refused_by_name() {
    let e = ColumnStats::fit("c", &[5.0, 5.0, 5.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`c` is constant"), "{e}");
    // Finite values of any size fit (a naive sum of squares overflowed).
    let st = ColumnStats::fit("big", &[1e308, -1e308, 1e308]).unwrap();
    assert!(st.mean.is_finite() && st.std.is_finite(), "{st:?}");
    assert!(ColumnStats::fit("ok", &[1.0, 2.0]).is_ok());
}

#[test]
fn csv_reads_files() {
    let dir = std::env::temp_dir().join(format!("lstm_wgpu_data_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.csv");
    std::fs::write(&p, "x,y\n1,2\n3,4\n").unwrap();
    let t = CsvTable::read(&p).unwrap();
    assert_eq!(t.select(None, None).unwrap().target, vec![2.0, 4.0]);
    std::fs::write(&p, b"x,y\n1,\xff\n").unwrap();
    let e = CsvTable::read(&p).unwrap_err().to_string();
    assert!(e.contains("not valid UTF-8 at byte 6 (line 2)"), "{e}");
    let e = CsvTable::read(dir.join("missing.csv"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.csv") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn normalization_is_fitted_on_the_training_rows_only() {
    // 10 rows: 8 training rows 0..8, 2 validation rows far away.
    let mut v: Vec<f64> = (0..8).map(|i| i as f64).collect();
    v.extend([1000.0, 2000.0]);
    let other: Vec<f64> = (0..10).map(|i| 5.0 + (i % 2) as f64).collect();
    let table = SeriesTable::new(
        vec!["x".into(), "c".into()],
        vec![v.clone(), other],
        "x".into(),
        v.clone(),
    )
    .unwrap();
    let cfg = SeriesConfig {
        seq_len: 3,
        horizon: 1,
        val_fraction: 0.2,
    };
    let d = SeriesDataset::new(&table, &cfg).unwrap();
    assert_eq!((d.train_rows, d.val_rows), (8, 2));
    let var = (0..8).map(|i| (i as f64 - 3.5).powi(2)).sum::<f64>() / 8.0;
    assert_eq!(d.norm.target.mean, 3.5);
    assert!((d.norm.target.std - var.sqrt()).abs() < 1e-12);
    assert_eq!(d.norm.features[0], d.norm.target);
    assert_eq!(
        (d.norm.features[1].mean, d.norm.features[1].std),
        (5.5, 0.5)
    );

    // Round trips.
    let z = d.norm.normalize_target(&[0.0, 1000.0]);
    let back = d.norm.denormalize(&z);
    assert!((back[0] - 0.0).abs() < 1e-4 && (back[1] - 1000.0).abs() < 1e-3);
    let meta = d.norm.to_metadata();
    assert_eq!(Normalizer::from_metadata(&meta).unwrap(), d.norm);
    assert!(Normalizer::from_metadata("feature\t1\t0\tx\ntarget\t1\t1\tx\n").is_err());
    assert!(Normalizer::from_metadata("feature\t1\t1\tx\n").is_err());

    // A stored normalization is reused as is.
    let again = SeriesDataset::with_normalizer(&table, &cfg, d.norm.clone()).unwrap();
    assert_eq!(again.norm, d.norm);
    let uni = SeriesTable::univariate("x", v).unwrap();
    assert!(SeriesDataset::with_normalizer(&uni, &cfg, d.norm.clone()).is_err());
}

#[test]
fn huge_and_tiny_columns_normalise() {
    for scale in [1e300, 1e-300, 1.0] {
        let v: Vec<f64> = [1.0, 2.0, 3.0].iter().map(|x| x * scale).collect();
        let st = ColumnStats::fit("x", &v).unwrap();
        let want = (2f64 / 3.0).sqrt() * scale;
        assert!((st.std - want).abs() <= 1e-12 * want, "{scale}: {}", st.std);
        assert!((st.mean - 2.0 * scale).abs() <= 1e-12 * scale, "{scale}");
        assert!(
            (st.normalize(v[2]) - 1.5f64.sqrt()).abs() < 1e-12,
            "{scale}"
        );
    }
    // x − mean overflows here, the z-score does not.
    let v = [-1.7e308, 1.7e308, 1.7e308];
    let st = ColumnStats::fit("x", &v).unwrap();
    assert!(v.iter().all(|&x| st.normalize(x).is_finite()), "{st:?}");
    let e = ColumnStats::fit("k", &[1e300; 4]).unwrap_err().to_string();
    assert!(e.contains("`k` is constant (1e300)"), "{e}");
    // A value far outside the training rows is refused by name.
    let mut y: Vec<f64> = (0..10).map(|i| (i % 3) as f64).collect();
    y.push(1e300);
    let t = SeriesTable::univariate("y", y).unwrap();
    let cfg = SeriesConfig {
        seq_len: 2,
        horizon: 1,
        val_fraction: 0.1,
    };
    let e = SeriesDataset::new(&t, &cfg).unwrap_err().to_string();
    assert!(
        e.contains("column `y` row 11: 1e300 lies") && e.contains("beyond f32"),
        "{e}"
    );
}

#[test]
fn windows_hold_the_right_rows() {
    // x = row index, target = 100 + row index; stats make z easy to undo.
    let n = 20;
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let y: Vec<f64> = (0..n).map(|i| 100.0 + i as f64).collect();
    let table = SeriesTable::new(vec!["x".into()], vec![x], "y".into(), y).unwrap();
    let cfg = SeriesConfig {
        seq_len: 3,
        horizon: 2,
        val_fraction: 0.25,
    };
    let d = SeriesDataset::new(&table, &cfg).unwrap();
    assert_eq!((d.train_rows, d.val_rows), (15, 5));
    // Training windows: targets below row 15: starts 0..=10.
    assert_eq!(d.train.len(), 11);
    let val = d.val.as_ref().unwrap();
    // Validation windows: first target in 15..=18: 5 - 2 + 1 = 4.
    assert_eq!(val.len(), 4);
    assert_eq!(val.first_target_row(0), 15);

    let fx = &d.norm.features[0];
    let undo_x = |v: f32| fx.denormalize(v as f64).round();
    let undo_y = |v: f32| d.norm.target.denormalize(v as f64).round();

    let b = d.train.batch(&[0, 10]).unwrap();
    assert_eq!(
        (b.seq_len, b.batch, b.num_features, b.horizon),
        (3, 2, 1, 2)
    );
    let xs: Vec<f64> = b.inputs.iter().map(|&v| undo_x(v)).collect();
    assert_eq!(xs, vec![0., 10., 1., 11., 2., 12.]); // [T, B, F]
    let ys: Vec<f64> = b.targets.iter().map(|&v| undo_y(v)).collect();
    assert_eq!(ys, vec![103., 104., 113., 114.]); // [B, k]

    let b = val.batch(&[0, 3]).unwrap();
    let xs: Vec<f64> = b.inputs.iter().map(|&v| undo_x(v)).collect();
    assert_eq!(xs, vec![12., 15., 13., 16., 14., 17.]);
    let ys: Vec<f64> = b.targets.iter().map(|&v| undo_y(v)).collect();
    assert_eq!(ys, vec![115., 116., 118., 119.]);
    assert!(val.batch(&[4]).is_err());
    assert!(val.batch(&[]).is_err());

    // Too short for one window.
    let short = SeriesConfig {
        seq_len: 15,
        ..cfg.clone()
    };
    let e = SeriesDataset::new(&table, &short).unwrap_err().to_string();
    assert!(
        e.contains("training split has 15 rows (the last 5 of the 20") && e.contains("= 17 rows"),
        "{e}"
    );
    let e = SeriesDataset::new(
        &table,
        &SeriesConfig {
            seq_len: 19,
            val_fraction: 0.0,
            ..short.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the series has 20 rows") && e.contains("= 21"),
        "{e}"
    );
    let noval = SeriesDataset::new(
        &table,
        &SeriesConfig {
            val_fraction: 0.0,
            ..cfg
        },
    )
    .unwrap();
    assert!(noval.val.is_none());
    assert_eq!(noval.train.len(), 16);
}

#[test]
fn epochs_shuffle_with_a_seed_or_keep_order() {
    let table = SeriesTable::univariate("s", (0..40).map(|i| i as f64).collect()).unwrap();
    let cfg = SeriesConfig {
        seq_len: 4,
        horizon: 1,
        val_fraction: 0.0,
    };
    let d = SeriesDataset::new(&table, &cfg).unwrap();
    let w = &d.train;
    assert_eq!(w.len(), 36);
    assert_eq!(w.order(None, 3), (0..36).collect::<Vec<_>>());
    let a = w.order(Some(7), 0);
    assert_eq!(a, w.order(Some(7), 0));
    assert_ne!(a, w.order(Some(7), 1));
    assert_ne!(a, w.order(Some(8), 0));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..36).collect::<Vec<_>>());

    let batches: Vec<SeriesBatch> = w.epoch(10, Some(7), 0, false).unwrap().collect();
    assert_eq!(batches.len(), 4);
    assert_eq!(batches[3].batch, 6);
    assert_eq!(batches[0], w.batch(&a[..10]).unwrap());
    assert_eq!(w.epoch(10, None, 0, true).unwrap().len(), 3);
    assert_eq!(w.num_batches(10, true), 3);
    assert!(w.epoch(37, None, 0, true).is_err());
    assert!(w.epoch(0, None, 0, false).is_err());
    let seq: Vec<SeriesBatch> = w.epoch(36, None, 0, false).unwrap().collect();
    assert_eq!(seq[0], w.batch(&(0..36).collect::<Vec<_>>()).unwrap());
}

#[test]
fn rng_samplers() {
    let mut r = Rng::new(1);
    let n = 200_000;
    let z: Vec<f64> = (0..n).map(|_| r.normal()).collect();
    let mean = z.iter().sum::<f64>() / n as f64;
    let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    assert!(
        mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
        "{mean} {var}"
    );
    let mut counts = [0usize; 5];
    for _ in 0..50_000 {
        counts[r.below(5)] += 1;
    }
    assert!(
        counts.iter().all(|&c| (9_500..10_500).contains(&c)),
        "{counts:?}"
    );
    // The raw SplitMix64 stream for a seed.
    assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
}

#[test]
fn sine_is_deterministic_with_the_right_noise() {
    let a = sine_mixture(5000, 0.1, 3);
    assert_eq!(a, sine_mixture(5000, 0.1, 3));
    assert_ne!(a, sine_mixture(5000, 0.1, 4));
    let (clean, noisy) = sine_parts(20_000, 0.1, 3);
    let r: Vec<f64> = noisy.iter().zip(&clean).map(|(n, c)| n - c).collect();
    let m = r.iter().sum::<f64>() / r.len() as f64;
    let sd = (r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / r.len() as f64).sqrt();
    assert!(m.abs() < 0.005 && (sd - 0.1).abs() < 0.005, "{m} {sd}");
    let amp = clean.iter().fold(0f64, |a, v| a.max(v.abs()));
    assert!(amp > 0.4 && amp <= 3.0, "{amp}");
    let (clean0, noisy0) = sine_parts(100, 0.0, 3);
    assert_eq!(clean0, noisy0);
    let t = builtin_series(Builtin::Sine, 300, 1).unwrap();
    assert_eq!(
        (t.len(), t.num_features(), t.target_name.as_str()),
        (300, 1, "sine")
    );
}

#[test]
fn mackey_glass_is_bounded_chaotic_and_deterministic() {
    let a = mackey_glass(3000, 0);
    assert_eq!(a, mackey_glass(3000, 0));
    assert_ne!(a, mackey_glass(3000, 1));
    let (lo, hi) = a
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo > 0.2 && hi < 1.5, "{lo} {hi}");
    let m = a.iter().sum::<f64>() / a.len() as f64;
    let sd = (a.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / a.len() as f64).sqrt();
    assert!(sd > 0.1, "{sd}");
    assert!(hi - lo > 0.6, "{lo} {hi}");
    // Not periodic with a short period: values 50 apart differ.
    let d50 = a.windows(51).map(|w| (w[0] - w[50]).abs()).sum::<f64>() / (a.len() - 50) as f64;
    assert!(d50 > 0.05, "{d50}");
    let t = builtin_series(Builtin::MackeyGlass, 500, 2).unwrap();
    let d = SeriesDataset::new(&t, &SeriesConfig::default()).unwrap();
    assert_eq!((d.train_rows, d.val_rows), (450, 50));
    assert!(builtin_series(Builtin::Copy, 10, 0).is_err());
}

#[test]
fn adding_task_with_lengths() {
    let task = AddingTask::new(20, 4).unwrap();
    let (b, lens) = task.batch_lengths(Split::Train, 3, 32, 6).unwrap();
    assert_eq!(lens.len(), 32);
    assert!(lens.iter().all(|&l| (6..=20).contains(&l)));
    assert!(lens.iter().any(|&l| l < 20) && lens.iter().any(|&l| l != lens[0]));
    for (j, &l) in lens.iter().enumerate() {
        let mut marked = Vec::new();
        for t in 0..20 {
            let o = (t * 32 + j) * 2;
            if t >= l {
                assert_eq!((b.inputs[o], b.inputs[o + 1]), (0.0, 0.0), "padding");
            } else if b.inputs[o + 1] == 1.0 {
                marked.push((t, b.inputs[o]));
            }
        }
        assert_eq!(marked.len(), 2);
        assert!(marked[0].0 < l / 2 && marked[1].0 >= l / 2);
        assert_eq!(b.targets[j], marked[0].1 + marked[1].1);
    }
    // The full length is the plain batch; bad minimums are refused.
    let (full, l) = task.batch_lengths(Split::Val, 1, 8, 20).unwrap();
    assert_eq!(full, task.batch(Split::Val, 1, 8).unwrap());
    assert_eq!(l, vec![20; 8]);
    for m in [1, 21] {
        let e = task.batch_lengths(Split::Train, 0, 8, m).unwrap_err();
        assert!(e.to_string().contains("2..=20"), "{e}");
    }
}

#[test]
fn adding_task() {
    let task = AddingTask::new(50, 9).unwrap();
    let b = task.batch(Split::Train, 0, 64).unwrap();
    assert_eq!(b, task.batch(Split::Train, 0, 64).unwrap());
    assert_ne!(b, task.batch(Split::Train, 1, 64).unwrap());
    assert_ne!(b, task.batch(Split::Val, 0, 64).unwrap());
    assert_eq!(
        (b.seq_len, b.batch, b.num_features, b.horizon),
        (50, 64, 2, 1)
    );
    assert_eq!(b.targets.len(), 64);
    let mut total = 0f64;
    for j in 0..64 {
        let mut marked = Vec::new();
        for t in 0..50 {
            let o = (t * 64 + j) * 2;
            assert!((0.0..1.0).contains(&b.inputs[o]));
            match b.inputs[o + 1] {
                1.0 => marked.push((t, b.inputs[o])),
                0.0 => {}
                m => panic!("marker {m}"),
            }
        }
        assert_eq!(marked.len(), 2);
        assert!(marked[0].0 < 25 && marked[1].0 >= 25);
        let sum = marked[0].1 + marked[1].1;
        assert_eq!(b.targets[j], sum);
        assert!((0.0..=2.0).contains(&b.targets[j]));
        total += sum as f64;
    }
    let mean = total / 64.0;
    assert!((mean - 1.0).abs() < 0.2, "{mean}");
    let b2 = AddingTask::new(2, 0)
        .unwrap()
        .batch(Split::Train, 0, 8)
        .unwrap();
    assert!(b2.inputs.chunks(2).all(|p| p[1] == 1.0)); // both steps marked
    assert!(AddingTask::new(1, 0).is_err());
    assert!(task.batch(Split::Train, 0, 0).is_err());
}

#[test]
fn copy_task() {
    let task = CopyTask::new(3, 5, 4, 1).unwrap();
    assert_eq!(
        (task.seq_len(), task.vocab_size(), task.delimiter()),
        (11, 6, 5)
    );
    let b = task.batch(Split::Train, 2, 7).unwrap();
    assert_eq!(b, task.batch(Split::Train, 2, 7).unwrap());
    assert_ne!(b, task.batch(Split::Val, 2, 7).unwrap());
    assert_eq!((b.seq_len, b.batch), (11, 7));
    for j in 0..7 {
        let x: Vec<u32> = (0..11).map(|t| b.inputs[t * 7 + j]).collect();
        let y: Vec<u32> = (0..11).map(|t| b.targets[t * 7 + j]).collect();
        assert!(x[..3].iter().all(|&s| (1..=4).contains(&s)));
        assert_eq!(&x[3..7], &[0, 0, 0, 0]);
        assert_eq!(x[7], 5);
        assert_eq!(&x[8..], &[0, 0, 0]);
        assert_eq!(&y[..8], &[0; 8]);
        assert_eq!(&y[8..], &x[..3]);
    }
    assert!((task.baseline_cross_entropy() - 3.0 * 4f64.ln() / 11.0).abs() < 1e-12);
    assert!(CopyTask::new(0, 5, 4, 1).is_err());
}

#[test]
fn generated_text_is_english_like_and_deterministic() {
    let t = generated_text(DEFAULT_TEXT_BYTES, 0);
    assert_eq!(t, generated_text(DEFAULT_TEXT_BYTES, 0));
    assert_ne!(t, generated_text(DEFAULT_TEXT_BYTES, 1));
    assert!(t.len() >= DEFAULT_TEXT_BYTES && t.len() < DEFAULT_TEXT_BYTES + 2000);
    assert!(t.is_ascii());
    let v = Vocab::from_text(&t).unwrap();
    assert!((30..70).contains(&v.len()), "{}", v.len());
    assert!(
        t.lines()
            .all(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
    );
    assert!(t.contains(". ") && t.contains(", ") && t.contains("an "));
    assert!(!t.contains(" a o") && !t.contains("  "));
    let d = TextData::new(&t, &TextConfig::default()).unwrap();
    assert!(d.train.num_windows() > 50 && d.val.is_some());
}

#[test]
fn builtin_names() {
    for n in Builtin::NAMES {
        let b: Builtin = n.parse().unwrap();
        assert_eq!(b.to_string(), n);
    }
    assert_eq!(Builtin::from_name("MG").unwrap(), Builtin::MackeyGlass);
    let e = Builtin::from_name("lorenz").unwrap_err().to_string();
    assert!(e.contains("lorenz") && e.contains("mackey-glass"), "{e}");
    assert!(Builtin::Sine.is_series() && !Builtin::Text.is_series());
}
