//! The library takes its tuning as a value ([`lstm_wgpu::Tuning`]): only
//! the command-line modules read the environment. No GPU needed.

use std::path::{Path, PathBuf};

/// The program (src/main.rs and src/cli/): the only files allowed to read
/// the environment.
const COMMAND_LINE: [&str; 2] = ["main.rs", "cli"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Lines of code (comments dropped) of every library file under src/.
fn library_code() -> Vec<(PathBuf, usize, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let first = f.strip_prefix(&src).ok().and_then(|r| r.iter().next());
        if first.is_some_and(|n| COMMAND_LINE.iter().any(|c| n == *c)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            out.push((f.clone(), i + 1, code.to_string()));
        }
    }
    assert!(out.len() > 1000, "the library's sources were not found");
    out
}

#[test]
fn library_reads_no_environment() {
    let hits: Vec<String> = library_code()
        .into_iter()
        .filter(|(_, _, code)| code.contains("env::var") || code.contains("env::vars"))
        .map(|(f, n, code)| format!("{}:{n}: {}", f.display(), code.trim()))
        .collect();
    assert!(
        hits.is_empty(),
        "the library reads the environment (only the command-line modules {COMMAND_LINE:?} \
         may; pass a Tuning or GpuOptions instead):\n{}",
        hits.join("\n")
    );
}
