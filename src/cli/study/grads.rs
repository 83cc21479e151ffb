//! The study's final gradient histograms per variant: every run's last
//! histogram step (its metrics file), all its `grads/` tensors pooled on a
//! common grid of log10 |g| and summed over the seeds, as fractions of the
//! variant's values. Written as `grad_histograms.csv` and drawn as
//! `grad_histograms.svg`, one line per variant.

use crate::cli::study::Planned;
use lstm_wgpu::error::{Error, Result};
use std::fmt::Write;

/// The grid: decades of |g| from 10^LO to 10^HI in steps of 1/PER.
const LO: f64 = -10.0;
const HI: f64 = 2.0;
const PER: f64 = 4.0;

fn buckets() -> usize {
    ((HI - LO) * PER) as usize
}

/// A variant's pooled distribution: the fraction of its gradient values
/// per bucket of log10 |g| (zeros and values below 10^LO in the first,
/// above 10^HI in the last), its value count, and the runs it pooled.
pub(crate) struct Pooled {
    pub(crate) fractions: Vec<f64>,
    pub(crate) values: f64,
    pub(crate) runs: usize,
    /// The histogram step each run's figures come from.
    pub(crate) steps: Vec<u64>,
}

/// The bucket of a value of magnitude `m`.
fn bucket(m: f64) -> usize {
    if m <= 0.0 || !m.is_finite() {
        return 0;
    }
    let b = ((m.log10() - LO) * PER).floor();
    b.clamp(0.0, (buckets() - 1) as f64) as usize
}

/// Adds the last histogram step of the metrics file `path` to `counts`;
/// its step, or None when the run took no histogram.
fn add_run(path: &std::path::Path, counts: &mut [f64]) -> Result<Option<u64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let Some(line) = text.lines().rev().find(|l| l.contains("\"histograms\"")) else {
        return Ok(None);
    };
    let bad = |what: &str| Error::file(path, format!("bad histogram line: {what}"));
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
    let step = v["step"].as_u64().ok_or_else(|| bad("no step"))?;
    let hists = v["histograms"]
        .as_object()
        .ok_or_else(|| bad("no object"))?;
    for (tag, h) in hists.iter().filter(|(t, _)| t.starts_with("grads/")) {
        let (min, max) = (h["min"].as_f64(), h["max"].as_f64());
        let n = h["counts"].as_array().ok_or_else(|| bad(tag))?;
        let (Some(min), Some(max)) = (min, max) else {
            return Err(bad(tag));
        };
        // Bin i covers [min + i w, min + (i + 1) w): its centre stands for
        // its values.
        let w = (max - min) / n.len().max(1) as f64;
        for (i, c) in n.iter().enumerate() {
            let c = c.as_f64().ok_or_else(|| bad(tag))?;
            if c > 0.0 {
                counts[bucket((min + (i as f64 + 0.5) * w).abs())] += c;
            }
        }
    }
    Ok(Some(step))
}

/// Pools each variant's runs; None for a variant none of whose runs took
/// a histogram.
pub(crate) fn pool(variants: &[String], plan: &[Planned]) -> Result<Vec<Option<Pooled>>> {
    variants
        .iter()
        .map(|v| {
            let mut counts = vec![0.0; buckets()];
            let mut steps = Vec::new();
            for p in plan.iter().filter(|p| &p.variant == v) {
                if let Some(s) = add_run(&p.file("jsonl"), &mut counts)? {
                    steps.push(s);
                }
            }
            let values: f64 = counts.iter().sum();
            Ok((values > 0.0).then(|| Pooled {
                fractions: counts.iter().map(|c| c / values).collect(),
                values,
                runs: steps.len(),
                steps,
            }))
        })
        .collect()
}

/// Lower edge of bucket `b` in decades.
fn edge(b: usize) -> f64 {
    LO + b as f64 / PER
}

/// The CSV: variant, bucket edges (log10 |g|), fraction, runs and values
/// pooled.
pub(crate) fn csv(variants: &[String], pooled: &[Option<Pooled>]) -> String {
    let mut s = String::from("variant,log10_abs_grad_lo,log10_abs_grad_hi,fraction,runs,values\n");
    for (v, p) in variants.iter().zip(pooled) {
        let Some(p) = p else { continue };
        for (b, f) in p.fractions.iter().enumerate() {
            let (lo, hi, n) = (edge(b), edge(b + 1), p.values);
            let _ = writeln!(s, "{v},{lo},{hi},{f:.6e},{},{n}", p.runs);
        }
    }
    s
}

/// The SVG: per variant, its fractions over log10 |g|.
pub(crate) fn svg(name: &str, variants: &[String], pooled: &[Option<Pooled>]) -> String {
    let (w, h, m) = (720.0, 420.0, 60.0);
    let top = pooled
        .iter()
        .flatten()
        .flat_map(|p| p.fractions.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let sx = |x: f64| m + (x - LO) / (HI - LO) * (w - 2.0 * m);
    let sy = |y: f64| h - m - y / top * (h - 1.5 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">study {}: final gradient histograms, all tensors and seeds pooled</text>\n",
        w / 2.0,
        super::svg::escape(name)
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - m,
        w - m,
        h - m
    );
    for d in (LO as i64..=HI as i64).step_by(2) {
        let x = sx(d as f64);
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">1e{d}</text>",
            h - m + 16.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">|gradient| (log scale); y: fraction of values</text>",
        w / 2.0,
        h - 14.0
    );
    for (i, (v, p)) in variants.iter().zip(pooled).enumerate() {
        let color = super::svg::COLORS[i % super::svg::COLORS.len()];
        let y = 40.0 + 16.0 * i as f64;
        let label = match p {
            Some(p) => format!("{} ({} runs, steps {:?})", v, p.runs, p.steps),
            None => format!("{v} (no histogram step)"),
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{y}\" fill=\"{color}\">{}</text>",
            w - m - 260.0,
            super::svg::escape(&label)
        );
        let Some(p) = p else { continue };
        let pts: Vec<String> = (p.fractions.iter().enumerate())
            .map(|(b, f)| format!("{:.1},{:.1}", sx(edge(b) + 0.5 / PER), sy(*f)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_decades() {
        assert_eq!(buckets(), 48);
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(1e-12), 0);
        assert_eq!(bucket(1e3), 47);
        // 10^-3 starts bucket (−3 + 10)·4 = 28.
        assert_eq!(bucket(1.0001e-3), 28);
        assert_eq!(bucket(0.99e-3), 27);
        assert_eq!(edge(28), -3.0);
    }
}
