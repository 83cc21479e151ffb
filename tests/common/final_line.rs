//! The `final:` line of a run's output, for comparing runs.

/// The final line of `out` without its time and throughput, which differ
/// between equal runs.
pub fn final_line(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("final:"))
        .unwrap_or_else(|| panic!("no final line in {out}"));
    let w: Vec<&str> = line.split(' ').collect();
    let mut keep = Vec::new();
    let mut i = 0;
    while i < w.len() {
        if w[i] == "time" || w[i] == "tokens/s" {
            i += 2;
        } else {
            keep.push(w[i]);
            i += 1;
        }
    }
    keep.join(" ")
}
