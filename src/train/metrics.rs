//! Training metrics: one JSON object per line (JSONL), and a loss-curve plot
//! as SVG (written by hand: a polyline needs no plotting crate).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends JSON objects, one per line, flushing each so that a crashed run
/// keeps what it logged.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

/// A JSON value for metrics (numbers, strings, booleans, lists, objects).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A float (non-finite values are written as null).
    Float(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// An array.
    List(Vec<Value>),
    /// An object, its keys in this order.
    Object(Vec<(String, Value)>),
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// One JSON object from ordered fields.
pub fn json_line(fields: &[(&str, Value)]) -> String {
    object(fields.iter().map(|(k, v)| (*k, v)))
}

fn object<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> String {
    let body: Vec<String> = fields
        .map(|(k, v)| format!("\"{}\":{}", escape(k), json(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn json(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => format!("{f}"),
        Value::Float(_) => "null".to_string(),
        Value::Str(s) => format!("\"{}\"", escape(s)),
        Value::Bool(b) => b.to_string(),
        Value::List(l) => format!("[{}]", l.iter().map(json).collect::<Vec<_>>().join(",")),
        Value::Object(o) => object(o.iter().map(|(k, v)| (k.as_str(), v))),
    }
}

impl MetricsLog {
    /// Creates (or, when `append`, continues) the log at `path`.
    pub fn open(path: &Path, append: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::file(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes one record.
    pub fn log(&mut self, fields: &[(&str, Value)]) -> Result<()> {
        writeln!(self.file, "{}", json_line(fields))
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::file(&self.path, e))
    }
}

/// A metrics log that writes nothing until [`MetricsBuffer::flush`]: lines
/// are kept in memory and written at checkpoints and at the end, so a run
/// refused or failing before its first checkpoint leaves no file, and the
/// file never runs ahead of the last checkpoint. The first flush replaces
/// the file atomically with the kept lines of an earlier run (resume) and
/// the new ones; later flushes append.
pub struct MetricsBuffer {
    path: PathBuf,
    /// What the file holds before this run's lines (its first flush
    /// rewrites it); `None` once written.
    base: Option<String>,
    pending: String,
}

impl MetricsBuffer {
    /// A new log at `path` (replaced at the first flush).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            base: Some(String::new()),
            pending: String::new(),
        }
    }

    /// Continues the log at `path` of a run resumed at step `step`: the
    /// file's records of steps after `step` (written after the checkpoint)
    /// are dropped, the rest kept; a missing file starts empty. A line
    /// without a `"step"` number is an error naming the file and line; an
    /// unterminated last line (a write cut short) is dropped.
    pub fn resume(path: &Path, step: usize) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::file(path, e)),
        };
        let mut base = String::new();
        for (i, line) in text.split_inclusive('\n').enumerate() {
            if !line.ends_with('\n') {
                break;
            }
            let s = record_step(line).ok_or_else(|| {
                Error::file(
                    path,
                    format!("line {}: not a metrics record with a \"step\"", i + 1),
                )
            })?;
            if s <= step as u64 {
                base.push_str(line);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            base: Some(base),
            pending: String::new(),
        })
    }

    /// Buffers one record.
    pub fn log(&mut self, fields: &[(&str, Value)]) -> Result<()> {
        self.pending.push_str(&json_line(fields));
        self.pending.push('\n');
        Ok(())
    }

    /// Writes the buffered records.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(base) = self.base.take() {
            crate::io::write_atomic(&self.path, (base + &self.pending).as_bytes())?;
        } else if !self.pending.is_empty() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .and_then(|mut f| f.write_all(self.pending.as_bytes()))
                .map_err(|e| Error::file(&self.path, e))?;
        }
        self.pending.clear();
        Ok(())
    }
}

/// The `"step":N` of a metrics record.
fn record_step(line: &str) -> Option<u64> {
    let i = line.find("\"step\":")? + 7;
    let digits: String = line[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// One panel of a plot: a title, named curves of (x, y) points, and
/// whether its y axis is logarithmic (points with y <= 0 are then left out).
pub struct Panel<'a> {
    /// Shown above the panel's axes.
    pub title: &'a str,
    /// (legend, points).
    pub series: Vec<(&'a str, &'a [(f64, f64)])>,
    /// Log-scale y axis.
    pub log: bool,
}

/// An SVG line plot of one or two loss curves (x = step).
pub fn loss_svg(title: &str, series: &[(&str, &[(f64, f64)])]) -> String {
    let panel = Panel {
        title: "",
        series: series.to_vec(),
        log: false,
    };
    plot_svg(title, &[panel])
}

/// An SVG of panels stacked top to bottom under one title, each with its
/// own y axis (x = step).
pub fn plot_svg(title: &str, panels: &[Panel<'_>]) -> String {
    let (w, ph, m) = (720.0, 380.0, 60.0);
    let h = 40.0 + ph * panels.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        w / 2.0,
        escape(title),
    );
    for (i, p) in panels.iter().enumerate() {
        svg += &panel_svg(p, 40.0 + ph * i as f64, (w, ph, m));
    }
    svg += "</svg>\n";
    svg
}

/// One panel whose box starts at `top`, `size` = (width, height, margin).
fn panel_svg(p: &Panel<'_>, top: f64, (w, ph, m): (f64, f64, f64)) -> String {
    let ty = |y: f64| if p.log { y.log10() } else { y };
    let shown = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!p.log || y > 0.0);
    let pts: Vec<(f64, f64)> = p
        .series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .filter(shown)
        .map(|(x, y)| (x, ty(y)))
        .collect();
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (x1, y1) = (
        if x1 > x0 { x1 } else { x0 + 1.0 },
        if y1 > y0 { y1 } else { y0 + 1.0 },
    );
    // Plot area: [m, w - m] × [top + m/2, bottom].
    let bottom = top + ph - m;
    let sx = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
    let sy = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top - m / 2.0);
    let colors = ["#1f77b4", "#d62728", "#2ca02c"];
    let mut svg = format!(
        "<text x=\"{m}\" y=\"{}\" font-size=\"13\">{}</text>\n\
         <line x1=\"{m}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{m}\" y2=\"{bottom}\" stroke=\"black\"/>\n",
        top + m / 2.0 - 10.0,
        escape(p.title),
        w - m,
        top + m / 2.0,
    );
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let label = match p.log {
            true => format!("{:.2e}", 10f64.powf(fy)),
            false => format!("{fy:.4}"),
        };
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{fx:.0}</text>\n",
            m - 6.0,
            sy(fy) + 4.0,
            sx(fx),
            bottom + 18.0
        );
    }
    for (i, (name, s)) in p.series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = s
            .iter()
            .copied()
            .filter(shown)
            .map(|(x, y)| format!("{:.1},{:.1}", sx(x), sy(ty(y))))
            .collect();
        if !path.is_empty() {
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                path.join(" ")
            );
        }
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>\n",
            w - m - 120.0,
            top + m / 2.0 + 16.0 * i as f64,
            escape(name)
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n",
        w / 2.0,
        bottom + 34.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_valid_and_ordered() {
        let l = json_line(&[
            ("step", Value::Int(3)),
            ("loss", Value::Float(0.5)),
            ("bad", Value::Float(f64::NAN)),
            ("note", Value::Str("a\"b".into())),
            (
                "n",
                Value::Object(vec![(
                    "w".into(),
                    Value::List(vec![Value::Float(1.5), Value::Float(f64::INFINITY)]),
                )]),
            ),
        ]);
        assert_eq!(
            l,
            r#"{"step":3,"loss":0.5,"bad":null,"note":"a\"b","n":{"w":[1.5,null]}}"#
        );
    }

    #[test]
    fn svg_has_one_polyline_per_series() {
        let a = [(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)];
        let b = [(2.0, 1.5)];
        let s = loss_svg("loss", &[("train", &a), ("val", &b)]);
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn log_panel_leaves_out_non_positive_points_and_labels_powers() {
        let a = [(1.0, 1e-3), (2.0, 0.0), (3.0, 10.0)];
        let p = Panel {
            title: "gradient norm",
            series: vec![("norm", &a)],
            log: true,
        };
        let lin = Panel {
            title: "loss",
            series: vec![("loss", &a)],
            log: false,
        };
        let s = plot_svg("t", &[lin, p]);
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].matches(',').count(), 3);
        assert_eq!(lines[1].matches(',').count(), 2);
        // Ticks from 1e-3 to 1e1, a quarter of the decades apart.
        assert!(s.contains(">1.00e-3<") && s.contains(">1.00e1<"), "{s}");
        assert!(s.contains(">gradient norm<"), "{s}");
    }
}
