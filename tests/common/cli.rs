//! Running the binary, for the CLI tests that include this file by path
//! (`#[path = "common/cli.rs"]`) and need nothing else of `common`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

/// A temp path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// Runs `args`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr without the Vulkan loader's XDG_RUNTIME_DIR notice.
pub fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(str::to_string)
        .collect()
}

/// A refusal: exit 2 and one stderr line, `error: …`, holding every
/// string of `want`.
pub fn assert_refused(o: &Output, want: &[&str], what: &str) {
    let lines = stderr_lines(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {lines:?}");
    assert_eq!(lines.len(), 1, "{what}: one line expected: {lines:?}");
    assert!(lines[0].starts_with("error: "), "{what}: {lines:?}");
    for w in want {
        assert!(lines[0].contains(w), "{what}: `{w}` missing from {lines:?}");
    }
}

/// The run settings (TOML) in a checkpoint's `config` metadata.
pub fn settings_of(ck: &std::path::Path) -> String {
    let bytes = std::fs::read(ck).unwrap_or_else(|e| panic!("{e}"));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap_or_else(|e| panic!("{e}"));
    header["__metadata__"]["config"]
        .as_str()
        .unwrap_or_else(|| panic!("no config metadata"))
        .to_string()
}
