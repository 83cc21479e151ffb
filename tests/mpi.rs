//! Data-parallel training under `mpirun` (cargo feature `mpi`; needs
//! OpenMPI's mpirun, `.ci/setup-mpi`). Two ranks on the one adapter
//! (lavapipe in CI) train a text and a series model 50 steps: every step's
//! loss, the validation losses and the final checkpoint equal a single
//! process's with the same global batch to 1e-5 relative (the same sums
//! grouped otherwise), both ranks end with bit-identical parameters, a run
//! stopped and resumed equals the uninterrupted one bit for bit, one
//! process resumes the two ranks' checkpoint, and a batch that does not
//! divide over the ranks is refused by name. Two threads of one process
//! (`--devices 0,0`) give the two ranks' figures bit for bit. A rank that
//! fails aborts the job naming itself; a rank that hangs is named by rank
//! 0 after `--mpi-timeout`, and the job ends.
#![cfg(feature = "mpi")]

use lstm_wgpu::io::TensorFile;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

#[path = "common/tempdir.rs"]
mod tempdir;
use tempdir::TempDir;

#[path = "common/parallel.rs"]
mod parallel;
use parallel::{
    TEXT_MODEL, losses, p, rank_crcs, same_checkpoints, same_losses, series_model, sunspots,
    two_ranks_agree,
};

/// `BIN args` on `ranks` MPI ranks (`None`: without mpirun).
fn launch(ranks: Option<usize>, args: &[&str]) -> Output {
    command(ranks, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN} (or mpirun): {e}"))
}

/// The command of [`launch`].
fn command(ranks: Option<usize>, args: &[&str]) -> Command {
    let mut c = match ranks {
        None => Command::new(BIN),
        Some(n) => {
            let mut c = Command::new("mpirun");
            c.args(["-np", &n.to_string(), "--oversubscribe", BIN]);
            c
        }
    };
    // CI runs as root, which OpenMPI refuses unless told; containers often
    // forbid the cross-process memory copy of its shared-memory transport.
    c.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c
}

/// A small text model's shape, for the fault tests.
const SMALL: [&str; 6] = ["--hidden", "8", "--seq-len", "8", "--batch", "4"];

fn ok(ranks: Option<usize>, args: &[&str]) -> String {
    let o = launch(ranks, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{ranks:?} ranks, {args:?} failed: {err}"
    );
    err
}

/// Trains `args` 50 steps in one process and on two ranks, and compares.
fn one_against_two(tag: &str, args: &[&str]) {
    let dir = TempDir::new(tag);
    let run = |ranks: Option<usize>, name: &str| {
        let (m, ck) = (
            dir.join(format!("{name}.jsonl")),
            dir.join(format!("{name}.st")),
        );
        let extra = ["--metrics", p(&m), "--checkpoint", p(&ck)];
        let err = ok(ranks, &[args, &extra[..]].concat());
        (m, ck, err)
    };
    let (m1, ck1, _) = run(None, "one");
    let (m2, ck2, err) = run(Some(2), "two");
    let crcs = two_ranks_agree(args, &err);
    same_losses(&m1, &m2);
    same_checkpoints(&ck1, &ck2, false);
    same_checkpoints(&dir.join("one.st.best"), &dir.join("two.st.best"), false);
    // Two threads of one process (`--devices 0,0`) take the two MPI ranks'
    // steps bit for bit: the same sums, added in the same order (here in
    // a bucket per layer, where the MPI ranks sum in the default ones).
    let (md, ckd) = (dir.join("devices.jsonl"), dir.join("devices.st"));
    let extra = [
        "--bucket-mb",
        "0",
        "--devices",
        "0,0",
        "--metrics",
        p(&md),
        "--checkpoint",
        p(&ckd),
    ];
    let errd = ok(None, &[args, &extra[..]].concat());
    assert_eq!(rank_crcs(&errd, 2), crcs, "{errd}");
    assert_eq!(losses(&md), losses(&m2));
    same_checkpoints(&ck2, &ckd, true);

    // Stopped at step 20 (summing a bucket per layer) and resumed: the
    // same run, bit for bit.
    let ck = dir.join("resumed.st");
    let stop = [
        "--checkpoint",
        p(&ck),
        "--stop-after",
        "20",
        "--bucket-mb",
        "0",
    ];
    ok(Some(2), &[args, &stop[..]].concat());
    let at20 = dir.join("at20.st");
    std::fs::copy(&ck, &at20).unwrap_or_else(|e| panic!("{e}"));
    let resume = |from: &Path, to: &Path| {
        [
            "train",
            "--resume",
            p(from),
            "--checkpoint",
            p(to),
            "--no-progress",
        ]
        .map(String::from)
    };
    ok(Some(2), &resume(&ck, &ck).each_ref().map(String::as_str));
    same_checkpoints(&ck2, &ck, true);
    // The checkpoint holds the whole batch's state: one process resumes it.
    let one = dir.join("one-resumed.st");
    ok(None, &resume(&at20, &one).each_ref().map(String::as_str));
    same_checkpoints(&ck1, &one, false);
}

#[test]
fn text_on_two_ranks_equals_one_process() {
    one_against_two("mpi-text", &TEXT_MODEL);
}

#[test]
fn series_on_two_ranks_equals_one_process() {
    let csv = sunspots();
    one_against_two("mpi-series", &series_model(&csv));
}

#[test]
fn a_batch_that_does_not_divide_is_refused() {
    let o = launch(Some(2), &["train", "--batch", "7", "--steps", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(!lines.is_empty(), "{err}");
    for l in lines {
        assert!(
            l.contains("--batch 7") && l.contains("2 MPI ranks"),
            "{err}"
        );
    }
}

/// A rank that fails (here rank 1: `--device 0,9` names an adapter it does
/// not have) says so naming itself and aborts the job: mpirun exits
/// non-zero at once, rank 0 is not left waiting for its gradients.
#[test]
fn a_failing_rank_stops_the_job_naming_itself() {
    let dir = TempDir::new("mpi-fail");
    let ck = dir.join("ck.st");
    let t0 = std::time::Instant::now();
    let mut args = vec!["--device", "0,9", "train", "--steps", "20"];
    args.extend(SMALL);
    args.extend([
        "--mpi-timeout",
        "120",
        "--checkpoint",
        p(&ck),
        "--no-progress",
    ]);
    let o = launch(Some(2), &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: rank 1 of 2: --device 0,9: no adapter 9")),
        "{err}"
    );
    // Well within the timeout: the abort, not the timeout, ended it.
    assert!(t0.elapsed().as_secs() < 100, "{:?}: {err}", t0.elapsed());
    assert!(!ck.exists(), "{err}");
}

/// The pid of the rank-`rank` process of `BIN` whose command line holds
/// `marker` (tests run side by side, each its own mpirun).
fn rank_pid(rank: usize, marker: &str) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(cmd), Ok(env)) = (
            std::fs::read(format!("/proc/{pid}/cmdline")),
            std::fs::read(format!("/proc/{pid}/environ")),
        ) else {
            continue;
        };
        let has = |bytes: &[u8], s: &str| bytes.split(|&b| b == 0).any(|w| w == s.as_bytes());
        if has(&cmd, BIN) && has(&cmd, marker) && has(&env, &want) {
            return Some(pid);
        }
    }
    None
}

/// A rank that hangs (stopped with SIGSTOP mid-run) is named by rank 0
/// once `--mpi-timeout` passes without its gradients, and the job ends:
/// every rank exits, mpirun non-zero.
#[test]
fn a_hung_rank_is_named_after_the_timeout() {
    let dir = TempDir::new("mpi-hang");
    let metrics = dir.join("m.jsonl");
    let ck = dir.join("ck.st");
    let mut args = vec!["train", "--steps", "1000000"];
    args.extend(SMALL);
    // 20 s: well above a step with its validation and checkpoint on a
    // loaded CPU driver, so that only the stopped rank can time out.
    args.extend([
        "--val-every",
        "2",
        "--mpi-timeout",
        "20",
        "--metrics",
        p(&metrics),
    ]);
    args.extend(["--checkpoint", p(&ck), "--no-progress"]);
    let mut c = command(Some(2), &args);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"));
    let kill = |sig: &str, pid: u32| {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    };
    // Training has begun (steps reduced) once rank 0 has flushed a few
    // lines (at validations).
    let t0 = std::time::Instant::now();
    let started = || std::fs::read_to_string(&metrics).is_ok_and(|m| m.lines().count() >= 3);
    while !started() && t0.elapsed().as_secs() < 300 {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let marker = p(&metrics).to_string();
    let pid = rank_pid(1, &marker);
    if let Some(pid) = pid {
        kill("-STOP", pid);
    }
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().ok().flatten() {
            break Some(s);
        }
        if stopped.elapsed().as_secs() > 120 {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if status.is_none() {
        // Leave nothing behind before failing.
        if let Some(pid) = pid {
            kill("-KILL", pid);
        }
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(started(), "training never began: {err}");
    assert!(pid.is_some(), "rank 1's process not found: {err}");
    let status = status.unwrap_or_else(|| panic!("the job did not end: {err}"));
    assert!(!status.success(), "{err}");
    assert!(
        err.lines().any(|l| l
            .starts_with("error: rank 0 of 2: MPI: rank 1 sent no part of the sum within 20 s")),
        "{err}"
    );
    let waited = stopped.elapsed().as_secs_f64();
    assert!(
        waited < 60.0,
        "ended {waited:.1} s after rank 1 stopped: {err}"
    );
    // Rank 0's last checkpoint is whole (written atomically).
    TensorFile::read(&ck).unwrap_or_else(|e| panic!("checkpoint: {e}: {err}"));
}

/// `bench --mpi` on two ranks: rank 0 alone prints the row, with the
/// global batch, 2 ranks and the step's split; a batch that does not
/// divide is refused by every rank.
#[test]
fn bench_rows_split_a_data_parallel_step() {
    let args = "bench --workload ts --steps 2 --warmup 1 --json --mpi";
    let o = launch(Some(2), &args.split(' ').collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "rank 0's row only: {out}");
    for k in [
        "\"batch\":32,",
        "\"ranks\":2,",
        "\"allreduce_ms\":",
        "\"upload_ms\":",
    ] {
        assert!(lines[0].contains(k), "{k}: {out}");
    }
}
