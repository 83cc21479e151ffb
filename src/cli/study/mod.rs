//! `lstm-wgpu study`: a base configuration, named variants and seeds;
//! every variant × seed trained in-process as `train` trains, tabulated
//! as mean ± std over the seeds. Finished runs are kept in the output
//! directory, so an interrupted study resumes where it stood.

mod grads;
mod svg;
mod table;

use crate::cli::train::settings::TrainArgs;
use crate::cli::train::{Run, prepare, settings};
use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::io;
use lstm_wgpu::run::RunConfig;
use lstm_wgpu::run::choice::{Dataset, Task};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The studies that come with the program, by name.
const BUILTINS: [(&str, &str); 3] = [
    ("depth-norm", include_str!("builtin/depth-norm.toml")),
    ("regularizers", include_str!("builtin/regularizers.toml")),
    ("long-memory", include_str!("builtin/long-memory.toml")),
];

/// The data files the built-in studies name (relative to the directory
/// their paths start from), embedded so that the program runs them
/// wherever it is, without its source tree.
const BUILTIN_DATA: [(&str, &str); 1] = [(
    "examples/data/sunspots.csv",
    include_str!("../../../examples/data/sunspots.csv"),
)];

/// The directory a built-in study's paths start from: one under the
/// temporary directory, named by the program's version, holding
/// [`BUILTIN_DATA`] (written when missing or different).
fn builtin_dir() -> Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(concat!("lstm-wgpu-", env!("CARGO_PKG_VERSION"), "-builtin"));
    for (rel, text) in BUILTIN_DATA {
        let p = dir.join(rel);
        if std::fs::read_to_string(&p).ok().as_deref() == Some(text) {
            continue;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, io::io_msg(&e)))?;
        }
        io::write_atomic(&p, text.as_bytes())?;
    }
    Ok(dir)
}

/// `study` arguments.
#[derive(clap::Args, Debug)]
pub struct StudyArgs {
    /// The study file (TOML): `seeds = [..]`, a `[base]` table of `train`
    /// settings (kebab-case, as in `train --config`) and `[[variant]]`
    /// tables, each a `name` and the settings it overrides.
    #[arg(required_unless_present = "builtin", conflicts_with = "builtin")]
    pub file: Option<PathBuf>,
    /// A built-in study instead of a file: depth-norm | regularizers |
    /// long-memory.
    #[arg(long, value_name = "NAME")]
    pub builtin: Option<String>,
    /// Output directory (created; a directory of the same study resumes
    /// it). [default: study-<name of the file or built-in>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Stop after this many runs, as if interrupted; the same command
    /// then resumes the study.
    #[arg(long, value_name = "N")]
    pub stop_after_runs: Option<usize>,
}

/// A study file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyFile {
    seeds: Vec<u64>,
    #[serde(default)]
    base: toml::Table,
    #[serde(default)]
    variant: Vec<toml::Table>,
}

/// Settings a study sets for each run itself.
const CONTROLLED: [(&str, &str); 5] = [
    ("seed", "the study runs every seed of `seeds`"),
    ("checkpoint", "the study writes each run's under its --out"),
    ("metrics", "the study writes each run's under its --out"),
    ("plot", "the study draws curves.svg"),
    ("tensorboard", "the study writes no event files"),
];

/// One variant × seed: its settings and where its files go.
struct Planned {
    variant: String,
    seed: u64,
    args: TrainArgs,
    /// `<out>/runs/<variant>.seed<seed>`, to which the extensions are added.
    stem: PathBuf,
}

impl Planned {
    /// The run's file of extension `ext`.
    fn file(&self, ext: &str) -> PathBuf {
        let mut s = self.stem.as_os_str().to_os_string();
        s.push(format!(".{ext}"));
        PathBuf::from(s)
    }
}

/// What a finished run left: the figures the table needs. Written
/// atomically when the run ends, so its presence marks the run done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) variant: String,
    pub(crate) seed: u64,
    pub(crate) final_line: String,
    pub(crate) text: bool,
    pub(crate) train_loss: Option<f64>,
    pub(crate) val_loss: Option<f64>,
    pub(crate) best_val: Option<f64>,
    pub(crate) naive_val_loss: Option<f64>,
    pub(crate) test_mae: Option<f64>,
    pub(crate) test_rmse: Option<f64>,
    pub(crate) best_test_mae: Option<f64>,
    pub(crate) best_test_rmse: Option<f64>,
    pub(crate) naive_test_mae: Option<f64>,
    pub(crate) naive_test_rmse: Option<f64>,
    /// The copy task's recall accuracy at the last and the best
    /// validation (absent from records of other tasks and older records).
    #[serde(default)]
    pub(crate) recall_acc: Option<f64>,
    #[serde(default)]
    pub(crate) best_recall_acc: Option<f64>,
    pub(crate) explosions: u64,
    pub(crate) epochs: usize,
    pub(crate) params: usize,
    pub(crate) secs: f64,
    pub(crate) val_curve: Vec<(f64, f64)>,
}

/// Runs `study`.
pub fn run(a: &StudyArgs, verbose: bool) -> Result<()> {
    let (name, text, dir) = source(a)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("study-{name}")));
    let plan = plan(&text, &name, &dir, &out)?;
    let state = out.join("study.toml");
    open_out(&out, &state, &text)?;
    let mut records = Vec::new();
    let mut ran = 0;
    let start = std::time::Instant::now();
    for (k, p) in plan.iter().enumerate() {
        let rec_path = p.file("toml");
        let label = format!("[{}/{}] {} seed {}", k + 1, plan.len(), p.variant, p.seed);
        if let Ok(t) = std::fs::read_to_string(&rec_path) {
            let r: Record = toml::from_str(&t)
                .map_err(|e| Error::file(&rec_path, format!("bad run record: {e}")))?;
            eprintln!("study: {label}: done before, kept");
            records.push(r);
            continue;
        }
        if a.stop_after_runs.is_some_and(|n| ran >= n) {
            eprintln!(
                "study: stopped after {ran} runs (--stop-after-runs); the same command resumes"
            );
            return Ok(());
        }
        eprintln!("study: {label}");
        let r = train_one(p, verbose)?;
        eprintln!("{}", r.final_line);
        let t = toml::to_string(&r).map_err(|e| Error::Invalid(e.to_string()))?;
        io::write_atomic(&rec_path, t.as_bytes())?;
        ran += 1;
        let left = plan.len() - k - 1;
        eprintln!(
            "study: {label} done in {:.1} s; runs left: {left} (about {:.0} s)",
            r.secs,
            start.elapsed().as_secs_f64() / ran as f64 * left as f64
        );
        records.push(r);
    }
    let variants: Vec<String> = dedup(plan.iter().map(|p| p.variant.clone()));
    let t = table::Table::of(&variants, &records);
    let md = t.markdown();
    io::write_atomic(&out.join("results.md"), md.as_bytes())?;
    io::write_atomic(&out.join("results.csv"), t.csv().as_bytes())?;
    io::write_atomic(
        &out.join("curves.svg"),
        svg::curves(&name, &variants, &records).as_bytes(),
    )?;
    let pooled = grads::pool(&variants, &plan)?;
    io::write_atomic(
        &out.join("grad_histograms.csv"),
        grads::csv(&variants, &pooled).as_bytes(),
    )?;
    io::write_atomic(
        &out.join("grad_histograms.svg"),
        grads::svg(&name, &variants, &pooled).as_bytes(),
    )?;
    crate::cli::out::text(&md)?;
    eprintln!(
        "study: wrote {} (results.md, results.csv, curves.svg, grad_histograms.csv, \
         grad_histograms.svg, runs/)",
        out.display()
    );
    Ok(())
}

/// The study's name, its text and the directory its relative paths
/// start from (a built-in's: [`builtin_dir`], where its data lies).
fn source(a: &StudyArgs) -> Result<(String, String, PathBuf)> {
    if let Some(b) = &a.builtin {
        let Some((n, t)) = BUILTINS.iter().find(|(n, _)| n == b) else {
            let names: Vec<&str> = BUILTINS.iter().map(|b| b.0).collect();
            return Err(Error::Invalid(format!(
                "--builtin {b}: expected {}",
                lstm_wgpu::run::choice::or_list(&names)
            )));
        };
        return Ok((n.to_string(), t.to_string(), builtin_dir()?));
    }
    let p = a
        .file
        .as_ref()
        .ok_or_else(|| Error::Invalid("study: give a study file or --builtin NAME".to_string()))?;
    let text = std::fs::read_to_string(p).map_err(|e| Error::file(p, io::io_msg(&e)))?;
    let name = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "study".into());
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((name, text, dir))
}

/// Reads and checks the study: every run's settings as `train` checks
/// them, its data loaded and split, before any file is written.
fn plan(text: &str, name: &str, dir: &Path, out: &Path) -> Result<Vec<Planned>> {
    let bad = |m: String| Error::Invalid(format!("study {name}: {m}"));
    let f: StudyFile = toml::from_str(text).map_err(|e| bad(format!("bad TOML: {e}")))?;
    if f.seeds.is_empty() {
        return Err(bad("`seeds` is empty: give at least one seed".into()));
    }
    if let Some(s) = f
        .seeds
        .iter()
        .enumerate()
        .find_map(|(i, s)| f.seeds[..i].contains(s).then_some(s))
    {
        return Err(bad(format!("seed {s} is listed twice in `seeds`")));
    }
    if f.variant.is_empty() {
        return Err(bad("no [[variant]]: give at least one".into()));
    }
    let base = args_of(&f.base, "[base]", dir).map_err(bad)?;
    let mut variants: Vec<(String, TrainArgs)> = Vec::new();
    for (i, v) in f.variant.iter().enumerate() {
        let mut t = v.clone();
        let vname = match t.remove("name") {
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err(bad(format!("variant {}: `name` must be a string", i + 1))),
            None => return Err(bad(format!("variant {}: no `name`", i + 1))),
        };
        if vname.is_empty()
            || !vname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        {
            return Err(bad(format!(
                "variant name `{vname}`: use letters, digits and - _ . + (it names files)"
            )));
        }
        if variants.iter().any(|(n, _)| *n == vname) {
            return Err(bad(format!("variant name `{vname}` is used twice")));
        }
        let mut args = args_of(&t, &format!("variant `{vname}`"), dir).map_err(bad)?;
        args.merge_from(&base);
        variants.push((vname, args));
    }
    let mut plan = Vec::new();
    // The resolved settings of each variant's first seed: equal ones
    // would be one variant under two names.
    let mut seen: Vec<(String, RunConfig)> = Vec::new();
    for (vname, args) in variants {
        for &seed in &f.seeds {
            let mut r = args.clone();
            r.seed = Some(seed);
            r.no_progress = true;
            let c =
                check_run(&r).map_err(|e| bad(format!("variant `{vname}` seed {seed}: {e}")))?;
            r.test_fraction = Some(c.test_fraction);
            if seed == f.seeds[0] {
                if let Some((other, _)) = seen.iter().find(|(_, o)| *o == c) {
                    return Err(bad(format!(
                        "variants `{other}` and `{vname}` train the same settings"
                    )));
                }
                seen.push((vname.clone(), c));
            }
            // Checked with the output directory, which does not exist yet.
            let mut p = Planned {
                variant: vname.clone(),
                seed,
                args: r,
                stem: out.join("runs").join(format!("{vname}.seed{seed}")),
            };
            p.args.checkpoint = Some(p.file("st"));
            p.args.metrics = Some(p.file("jsonl"));
            plan.push(p);
        }
    }
    Ok(plan)
}

/// The `train` settings of a study table (`what` names it), its relative
/// paths taken from `dir`; the settings a study controls refused by name.
fn args_of(t: &toml::Table, what: &str, dir: &Path) -> std::result::Result<TrainArgs, String> {
    if let Some((k, why)) = CONTROLLED.iter().find(|(k, _)| t.contains_key(*k)) {
        return Err(format!("{what} sets `{k}`: {why}"));
    }
    let mut a: TrainArgs = toml::Value::Table(t.clone())
        .try_into()
        .map_err(|e| format!("{what}: {}", one_line(&e.to_string())))?;
    for p in [&mut a.data, &mut a.init].into_iter().flatten() {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
    Ok(a)
}

/// A run's settings resolved and checked as `train` checks them (its data
/// loaded and split); a series run holds out a test split of 0.1 unless
/// it says otherwise.
fn check_run(a: &TrainArgs) -> Result<RunConfig> {
    // Every run writes a metrics file under the study's --out, which may
    // not exist yet: checked as one in the temp directory (never created).
    let mut a = a.clone();
    a.metrics
        .get_or_insert_with(|| std::env::temp_dir().join("lstm-wgpu-study-check.jsonl"));
    let (a, mut c, _) = settings(a)?;
    let adding = c.data.is_none() && c.dataset == Dataset::Adding;
    if a.test_fraction.is_none() && c.task == Task::Series && !adding {
        c.test_fraction = 0.1;
    }
    prepare(&a, c.clone(), None)?;
    Ok(c)
}

/// Creates the output directory, or checks that it holds this very study
/// (`text`, kept in `state`) so that running again resumes it.
fn open_out(out: &Path, state: &Path, text: &str) -> Result<()> {
    match std::fs::read_to_string(state) {
        Ok(t) if t == text => return Ok(()),
        Ok(_) => {
            return Err(Error::file(
                out,
                "--out holds another study (its study.toml differs); give another --out",
            ));
        }
        Err(_) => {}
    }
    if let Ok(mut d) = std::fs::read_dir(out)
        && d.next().is_some()
    {
        return Err(Error::file(
            out,
            "--out is a directory that holds no study; give a new or empty one",
        ));
    }
    io::check_output_dir(out, "--out")?;
    std::fs::create_dir_all(out.join("runs")).map_err(|e| Error::file(out, io::io_msg(&e)))?;
    io::write_atomic(state, text.as_bytes())
}

/// Trains one run as `train` would and collects its figures.
fn train_one(p: &Planned, verbose: bool) -> Result<Record> {
    let (a, c, _) = settings(p.args.clone())?;
    let text = c.task == Task::Text;
    let run = Run::new(a, c, None, verbose)?
        .ok_or_else(|| Error::Invalid("a study run wrote data instead of training".into()))?;
    let (r, _) = run.train()?;
    let fin = |v: f64| v.is_finite().then_some(v);
    let series = r.end.series;
    let test = r.end.test;
    Ok(Record {
        variant: p.variant.clone(),
        seed: p.seed,
        final_line: r.line,
        text,
        train_loss: r.curves.train.last().map(|p| p.1),
        val_loss: r.curves.val.last().map(|p| p.1),
        best_val: fin(r.best_val),
        naive_val_loss: series.map(|m| m.naive.mse),
        test_mae: test.map(|m| m.model.mae),
        test_rmse: test.map(|m| m.model.rmse),
        best_test_mae: r.best_test.map(|b| b.0),
        best_test_rmse: r.best_test.map(|b| b.1),
        naive_test_mae: test.map(|m| m.naive.mae),
        naive_test_rmse: test.map(|m| m.naive.rmse),
        recall_acc: r.end.recall,
        best_recall_acc: r.best_recall,
        explosions: r.explosions,
        epochs: r.epochs,
        params: r.params,
        secs: r.end.secs,
        val_curve: r.curves.val,
    })
}

/// `it` without repeats, in first-seen order.
fn dedup(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
