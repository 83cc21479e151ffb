//! What a run reports at its end: the plot and the final line.

use lstm_wgpu::error::Result;
use lstm_wgpu::io;
use lstm_wgpu::run::RunConfig;
use lstm_wgpu::run::checkpoint::RunState;
use lstm_wgpu::train::forecast::SeriesMetrics;
use lstm_wgpu::train::metrics::{Panel, Value, plot_svg};
use std::path::Path;

/// The SVG of the loss curves (log scale when `log`), with the naive
/// baseline's loss on series (whose target column is `target`), over the
/// gradient norms (log scale).
pub(crate) fn write_plot(
    p: &Path,
    c: &RunConfig,
    target: Option<&str>,
    series: Option<&SeriesMetrics>,
    [curve, val_curve, grad]: [&[(f64, f64)]; 3],
    log: bool,
) -> Result<()> {
    let title = format!(
        "lstm-wgpu {} on {}",
        c.task,
        c.data
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("built-in {}", c.dataset))
    );
    let (val_name, naive_name, naive) = match (series, target) {
        (Some(m), Some(unit)) => {
            let (a, b) = (val_curve.first(), val_curve.last());
            (
                format!(
                    "val loss (last: MAE {:.4}, RMSE {:.4} {unit})",
                    m.model.mae, m.model.rmse
                ),
                format!(
                    "naive last-value loss {:.4} (MAE {:.4}, RMSE {:.4} {unit})",
                    m.naive.mse, m.naive.mae, m.naive.rmse
                ),
                a.zip(b)
                    .map(|(a, b)| vec![(a.0, m.naive.mse), (b.0, m.naive.mse)])
                    .unwrap_or_default(),
            )
        }
        _ => ("val loss".to_string(), String::new(), Vec::new()),
    };
    let mut lines: Vec<(&str, &[(f64, f64)])> = vec![("train loss", curve), (&val_name, val_curve)];
    if !naive.is_empty() {
        lines.push((&naive_name, &naive));
    }
    let loss = Panel {
        title: if log { "loss (log scale)" } else { "loss" },
        series: lines,
        log,
    };
    // A fixed explosion threshold as a line across the norms.
    let fixed = c.explode_threshold.or(c.clip_norm.map(f64::from));
    let bar: Vec<(f64, f64)> = match (fixed, grad.first(), grad.last()) {
        (Some(x), Some(a), Some(b)) => vec![(a.0, x), (b.0, x)],
        _ => Vec::new(),
    };
    let bar_name = format!("explosion threshold {}", fixed.unwrap_or_default());
    let mut norm_lines = vec![("grad norm", grad)];
    if !bar.is_empty() {
        norm_lines.push((&bar_name, &bar));
    }
    let norms = Panel {
        title: "global gradient norm before clipping (log scale)",
        series: norm_lines,
        log: true,
    };
    io::write_atomic(p, plot_svg(&title, &[loss, norms]).as_bytes())?;
    Ok(())
}

/// The metrics-file fields of a series validation.
pub(crate) fn series_fields(m: &SeriesMetrics) -> Vec<(&'static str, Value)> {
    vec![
        ("naive_val_loss", Value::Float(m.naive.mse)),
        ("val_mae", Value::Float(m.model.mae)),
        ("val_rmse", Value::Float(m.model.rmse)),
        ("naive_mae", Value::Float(m.naive.mae)),
        ("naive_rmse", Value::Float(m.naive.rmse)),
        ("val_windows", Value::Int(m.windows as i64)),
    ]
}

/// How a run ended, for its final line.
pub(crate) struct RunEnd {
    pub(crate) secs: f64,
    /// Tokens per second.
    pub(crate) speed: f64,
    pub(crate) series: Option<SeriesMetrics>,
    /// The loss scale, when a scaler ran.
    pub(crate) scale: Option<f32>,
    pub(crate) stopped_early: bool,
    /// The test split's scores with the final weights.
    pub(crate) test: Option<SeriesMetrics>,
    /// The copy task's recall accuracy at the last validation.
    pub(crate) recall: Option<f64>,
}

/// The `final: …` line on stdout.
pub(crate) fn final_line(
    st: &RunState,
    [curve, val_curve, _]: [&[(f64, f64)]; 3],
    end: &RunEnd,
) -> String {
    let last = curve
        .last()
        .map_or_else(|| "-".to_string(), |p| format!("{:.5}", p.1));
    format!(
        "final: step {} train_loss {last} val_loss {} best_val {} skipped {} time {:.1}s tokens/s {:.0}{}",
        st.step,
        val_curve
            .last()
            .map(|v| format!("{:.5}", v.1))
            .unwrap_or_else(|| "-".into()),
        if st.best_val.is_finite() {
            format!("{:.5}", st.best_val)
        } else {
            "-".into()
        },
        st.skipped,
        end.secs,
        end.speed,
        end.series
            .map(|m| format!(
                " naive_val_loss {:.5} val_mae {:.5} val_rmse {:.5} naive_mae {:.5} naive_rmse {:.5} val_windows {}",
                m.naive.mse, m.model.mae, m.model.rmse, m.naive.mae, m.naive.rmse, m.windows
            ))
            .unwrap_or_default()
            + &end
                .recall
                .map(|a| {
                    let best = st.best_recall.map_or("-".into(), |b| format!("{b:.5}"));
                    format!(" val_recall_acc {a:.5} best_recall_acc {best}")
                })
                .unwrap_or_default()
            + &end
                .scale
                .map(|s| format!(" loss_scale {s}"))
                .unwrap_or_default()
            + &format!(
                " explosions {} vanishing {}",
                st.health.total.explosions, st.health.total.vanishing
            )
            + &end.test.map(|m| test_text(&m, st.best_test)).unwrap_or_default()
            + if end.stopped_early { " (early stop)" } else { "" }
    )
}

/// The test fields of the final line: the final weights' `m` and the best
/// validation's MAE and RMSE `best` ("-" without one).
fn test_text(m: &SeriesMetrics, best: Option<(f64, f64)>) -> String {
    let (bm, br) = best.map_or(("-".to_string(), "-".to_string()), |(a, b)| {
        (format!("{a:.5}"), format!("{b:.5}"))
    });
    format!(
        " test_mae {:.5} test_rmse {:.5} best_test_mae {bm} best_test_rmse {br} naive_test_mae {:.5} naive_test_rmse {:.5} test_windows {}",
        m.model.mae, m.model.rmse, m.naive.mae, m.naive.rmse, m.windows
    )
}

/// A line to stderr that does not tear the progress bar.
pub(crate) fn say(bar: &indicatif::ProgressBar, msg: String) {
    if bar.is_hidden() {
        say_line(msg);
    } else {
        bar.println(msg);
    }
}

/// `line` on stderr in one write: the ranks share mpirun's stderr, and
/// `eprintln!` writes a line piece by piece, so two ranks' lines could
/// interleave mid-line (a pipe keeps writes under 4 KiB whole).
pub(crate) fn say_line(line: String) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}
