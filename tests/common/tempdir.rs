//! A temporary directory for one test, removed when dropped (also when the
//! test panics), so that `cargo test` leaves nothing in the temp dir.
//! Included by path (`#[path = "common/tempdir.rs"]`) from the CLI tests,
//! which need nothing else of `common`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty, uniquely named directory under the system temp dir
/// (`lstm-wgpu-<tag>-<pid>-<counter>-<nanos>`: unique across processes,
/// threads and reruns); dereferences to its path.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory.
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "lstm-wgpu-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A one-column CSV `name` in the directory (header `y`, 300 rows of
    /// sin(0.2·i)): a small series to train on.
    pub fn sine_csv(&self, name: &str) -> PathBuf {
        let rows: String = (0..300)
            .map(|i| format!("{}\n", (i as f64 * 0.2).sin()))
            .collect();
        let csv = self.0.join(name);
        std::fs::write(&csv, format!("y\n{rows}")).unwrap_or_else(|e| panic!("{e}"));
        csv
    }

    /// The names directly in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        v.sort();
        v
    }

    /// Every path below the directory (recursively, not into symbolic
    /// links), relative to it, sorted.
    pub fn names(&self) -> Vec<String> {
        fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).unwrap_or_else(|e| panic!("{e}")) {
                let p = e.unwrap_or_else(|e| panic!("{e}")).path();
                out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.0, &self.0, &mut v);
        v.sort();
        v
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
