//! The study's validation curves: per variant the mean over the seeds,
//! with a band from their minimum to their maximum.

use crate::cli::study::Record;
use std::collections::BTreeMap;
use std::fmt::Write;

pub(crate) const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// A step of a variant's validations: (step, mean, min, max).
type BandPoint = (f64, f64, f64, f64);

/// Per step of a variant's validations, its [`BandPoint`].
fn band(records: &[&Record]) -> Vec<BandPoint> {
    let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in records {
        for &(s, v) in &r.val_curve {
            if v.is_finite() {
                at.entry(s as u64).or_default().push(v);
            }
        }
    }
    at.into_iter()
        .map(|(s, v)| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (s as f64, mean, lo, hi)
        })
        .collect()
}

/// The SVG of study `name`'s validation losses.
pub(crate) fn curves(name: &str, variants: &[String], records: &[Record]) -> String {
    let bands: Vec<(&String, Vec<BandPoint>)> = variants
        .iter()
        .map(|v| {
            let rs: Vec<&Record> = records.iter().filter(|r| &r.variant == v).collect();
            (v, band(&rs))
        })
        .collect();
    let pts = bands.iter().flat_map(|(_, b)| b.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(s, _, lo, hi) in pts {
        (x0, x1, y0, y1) = (x0.min(s), x1.max(s), y0.min(lo), y1.max(hi));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (x1, y1) = (x1.max(x0 + 1.0), if y1 > y0 { y1 } else { y0 + 1.0 });
    let (w, h, m) = (720.0, 420.0, 60.0);
    let sx = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 1.5 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">study {}: validation loss, mean over seeds (band: min–max)</text>\n",
        w / 2.0,
        escape(name)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{m}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        m / 2.0,
        w - 2.0 * m,
        h - 1.5 * m
    );
    for (y, v) in [(sy(y0), y0), (sy(y1), y1)] {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{y:.1}\" text-anchor=\"end\">{v:.4}</text>",
            m - 4.0
        );
    }
    for (x, v) in [(sx(x0), x0), (sx(x1), x1)] {
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">step {v}</text>",
            h - m + 16.0
        );
    }
    for (i, (v, b)) in bands.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let upper = b.iter().map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.3)));
        let lower = b
            .iter()
            .rev()
            .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.2)));
        let poly: Vec<String> = upper.chain(lower).collect();
        let line: Vec<String> = b
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
            .collect();
        let _ = writeln!(
            s,
            "<polygon points=\"{}\" fill=\"{color}\" fill-opacity=\"0.15\" stroke=\"none\"/>\n\
             <polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            poly.join(" "),
            line.join(" "),
            w - m - 150.0,
            m / 2.0 + 18.0 + 16.0 * i as f64,
            escape(v)
        );
    }
    s += "</svg>\n";
    s
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
