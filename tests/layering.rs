//! The library's layers depend one way (docs/architecture.md, "Layers"):
//! every `crate::` path in a file under src/ (its `use` lines and inline
//! paths alike) must name its own module or one of a lower layer. No GPU
//! needed. The program (src/main.rs, src/cli/) sits above them all and
//! reaches the library as `lstm_wgpu::` only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use the modules of lower layers only (and
/// itself); the leaves of the bottom rows do not use each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["rng"],
    &["io", "data"],
    &["gpu"],
    &["kernels"],
    &["model"],
    &["schedule"],
    &["lstm"],
    &["train"],
    &["infer"],
    &["run"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

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

/// The code of `text` without comments and string literals (doc links and
/// messages that mention a module are no dependency).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n' (lifetimes have no closing quote).
            let close = text[i + 1..].find('\'').map_or(b.len(), |e| i + 1 + e + 1);
            i = close.max(i + 1);
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The first path segments named after `crate::` in `code`, groups
/// (`crate::{a::X, b}`) included.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `lstm_wgpu_crate::` or similar: not this crate
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, up to its closing brace.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || c != '{' {
                    item.push(c);
                }
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.remove("");
    found
}

fn first_segment(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `crate::Error`, `crate::Result`: the error module's re-exports at the
/// root; other root re-exports name the module that defines them.
fn module_of(segment: &str) -> String {
    match segment {
        "Error" | "Result" => "error".into(),
        "GpuContext" => "gpu".into(),
        "Tuning" => "gpu".into(),
        "Batch" | "Links" | "LstmConfig" | "LstmModel" | "NamedTensor" => "model".into(),
        "Grads" | "Lstm" | "Outputs" | "Upstream" => "lstm".into(),
        "Model" => "infer".into(),
        "Run" => "run".into(),
        other => other.into(),
    }
}

/// Each library file's top module (src/<m>.rs or src/<m>/...) and code.
fn library_files() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap_or_else(|e| panic!("{e}"));
        let first = rel
            .iter()
            .next()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let module = first.strip_suffix(".rs").unwrap_or(first).to_string();
        if matches!(module.as_str(), "lib" | "main" | "cli") {
            continue; // the root and the program
        }
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        out.push((module, rel.to_path_buf(), code_of(&text)));
    }
    assert!(out.len() > 30, "the library's sources were not found");
    out
}

#[test]
fn every_library_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap_or_else(|e| panic!("{e}"));
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    assert!(declared.len() >= 8, "{declared:?}");
    let missing: Vec<_> = declared.iter().filter(|m| layer(m).is_none()).collect();
    assert!(
        missing.is_empty(),
        "modules with no layer in tests/layering.rs: {missing:?} (place them in LAYERS)"
    );
}

#[test]
fn dependencies_run_down_the_layers() {
    let mut up = Vec::new();
    for (module, path, code) in library_files() {
        let Some(own) = layer(&module) else {
            up.push(format!(
                "{}: module `{module}` has no layer",
                path.display()
            ));
            continue;
        };
        for used in crate_modules(&code) {
            let used = module_of(&used);
            if used == module {
                continue;
            }
            match layer(&used) {
                Some(l) if l < own => {}
                Some(l) => up.push(format!(
                    "{}: {module} (layer {own}) uses {used} (layer {l})",
                    path.display()
                )),
                None => up.push(format!(
                    "{}: {module} uses `crate::{used}`, which has no layer",
                    path.display()
                )),
            }
        }
    }
    assert!(
        up.is_empty(),
        "dependencies that run up the layers:\n{}",
        up.join("\n")
    );
}

/// Module paths named after `crate::` in `code` (lower-case segments only,
/// so `crate::model::norm::Norm` gives `model::norm`), groups included.
fn crate_paths(code: &str) -> Vec<String> {
    fn chain(s: &str) -> String {
        let mut out = Vec::new();
        for seg in s.trim_start().split("::") {
            let seg: String = seg
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if seg.is_empty() || !seg.starts_with(|c: char| c.is_ascii_lowercase()) {
                break;
            }
            out.push(seg);
        }
        out.join("::")
    }
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        match rest.strip_prefix('{') {
            // Only the group's top level: `crate::{a::X, b::{c, d}}` names a and b.
            Some(group) => {
                let mut depth = 0usize;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.push(chain(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                found.push(chain(&item));
            }
            None => found.push(chain(rest)),
        }
    }
    found.retain(|p| !p.is_empty());
    found
}

/// No two modules of the library depend on each other, even within one
/// layer (model/norm.rs and model/mod.rs, say): the graph of files is
/// acyclic.
#[test]
fn no_dependency_cycles_between_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    let mut texts = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap_or_else(|e| panic!("{e}"));
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if matches!(
            parts.first().map(String::as_str),
            Some("lib" | "main" | "cli")
        ) {
            continue;
        }
        let module = parts.join("::");
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{e}"));
        graph.insert(module.clone(), BTreeSet::new());
        texts.push((module, code_of(&text)));
    }
    // Each path names the longest module it starts with.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (module, code) in texts {
        for path in crate_paths(&code) {
            let segs: Vec<&str> = path.split("::").collect();
            let target = (1..=segs.len())
                .rev()
                .map(|k| segs[..k].join("::"))
                .find(|m| modules.contains(m));
            if let Some(t) = target.filter(|t| *t != module) {
                graph.entry(module.clone()).or_default().insert(t);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &std::collections::BTreeMap<String, BTreeSet<String>>,
        state: &mut std::collections::BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for n in graph.get(m).into_iter().flatten() {
            match state.get(n.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == n).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(n, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = Default::default();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut state, &mut Vec::new()) {
            panic!("dependency cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The library knows no command line: nothing under src/ outside the
/// program uses clap.
#[test]
fn the_library_uses_no_clap() {
    let hits: Vec<String> = library_files()
        .into_iter()
        .filter(|(_, _, code)| code.contains("clap::") || code.contains("use clap"))
        .map(|(_, p, _)| p.display().to_string())
        .collect();
    assert!(hits.is_empty(), "library files using clap: {hits:?}");
}

/// The checker itself: groups, inline paths, comments and strings.
#[test]
fn the_checker_reads_groups_and_skips_comments() {
    let code = code_of(
        "use crate::{gpu::X, model::{A, B}, Error};\n\
         // crate::train in a comment\n\
         let s = \"crate::lstm in a string\";\n\
         let c = '\"'; let y = crate::kernels::f(); fn f<'a>(x: &'a u8) {}\n",
    );
    let got: Vec<String> = crate_modules(&code).into_iter().collect();
    assert_eq!(got, ["Error", "gpu", "kernels", "model"]);
    assert_eq!(crate_paths(&code), ["gpu", "model", "kernels::f"]);
}
