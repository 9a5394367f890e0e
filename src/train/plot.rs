//! The loss and error curves of a run, drawn from its metrics log.

use crate::viz::chart::{Panel, Series, save_panels};
use anyhow::{Context, Result};
use std::path::Path;

/// Averages consecutive points in windows so a long run draws as a few hundred points.
fn smooth(points: &[(f64, f64)], target: usize) -> Vec<(f64, f64)> {
    let w = points.len().div_ceil(target.max(1)).max(1);
    points
        .chunks(w)
        .map(|c| {
            (
                c.iter().map(|p| p.0).sum::<f64>() / c.len() as f64,
                c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64,
            )
        })
        .collect()
}

/// Reads `metrics.jsonl` and writes the curves (x: epochs) to `png`; `log_loss` draws the loss
/// on a log scale.
pub fn plot_metrics(metrics: &Path, png: &Path, log_loss: bool) -> Result<()> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    let (mut loss, mut err, mut val_loss, mut val1, mut val5) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", metrics.display(), i + 1))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_f64());
        if let (Some(e), Some(l)) = (get("epoch"), get("loss")) {
            loss.push((e, l));
            if let Some(t) = get("top1_error") {
                err.push((e, 100.0 * t));
            }
        }
        if let Some(e) = get("epoch_end") {
            if let Some(l) = get("val_loss") {
                val_loss.push((e, l));
            }
            if let Some(t) = get("val_top1_error") {
                val1.push((e, 100.0 * t));
            }
            if let Some(t) = get("val_top5_error") {
                val5.push((e, 100.0 * t));
            }
        }
    }
    let series = |label: &str, points: Vec<(f64, f64)>| Series {
        label: label.into(),
        points,
    };
    let mut loss_panel = vec![series("train", smooth(&loss, 300))];
    let mut err_panel = vec![series("train top-1 error", smooth(&err, 300))];
    if !val_loss.is_empty() {
        loss_panel.push(series("validation", val_loss));
        err_panel.push(series("validation top-1 error", val1));
        err_panel.push(series("validation top-5 error", val5));
    }
    save_panels(
        png,
        &[
            Panel {
                title: if log_loss { "loss (log scale)" } else { "loss" }.into(),
                x_label: "epoch".into(),
                series: loss_panel,
                log_y: log_loss,
            },
            Panel {
                title: "top-1 / top-5 error %".into(),
                x_label: "epoch".into(),
                series: err_panel,
                log_y: false,
            },
        ],
    )
}

/// Each run's training top-1 error per epoch, one curve per run, with a dashed-looking goal
/// line drawn as its own series: the paper's Figure 1.
pub fn plot_training_error(
    runs: &[(String, std::path::PathBuf)],
    goal: f64,
    png: &Path,
) -> Result<()> {
    let mut series = Vec::new();
    let mut last_epoch = 1.0f64;
    for (label, metrics) in runs {
        let text = crate::files::read_text(metrics)?;
        let mut points = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("a line of {}", metrics.display()))?;
            if let (Some(e), Some(err)) = (
                v.get("epoch_end").and_then(|x| x.as_f64()),
                v.get("train_top1_error").and_then(|x| x.as_f64()),
            ) {
                points.push((e, 100.0 * err));
                last_epoch = last_epoch.max(e);
            }
        }
        series.push(Series {
            label: label.clone(),
            points,
        });
    }
    series.push(Series {
        label: format!("{:.0}%", 100.0 * goal),
        points: vec![(1.0, 100.0 * goal), (last_epoch, 100.0 * goal)],
    });
    save_panels(
        png,
        &[Panel {
            title: "training top-1 error %".into(),
            x_label: "epochs".into(),
            series,
            log_y: false,
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_a_metrics_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("metrics.jsonl");
        let mut lines = String::new();
        for s in 0..20 {
            lines += &format!(
                "{{\"step\":{s},\"epoch\":{},\"loss\":{},\"top1_error\":0.5}}\n",
                s as f64 / 10.0,
                2.0 - s as f64 * 0.05
            );
        }
        lines +=
            "{\"epoch_end\":1,\"val_loss\":1.5,\"val_top1_error\":0.4,\"val_top5_error\":0.1}\n";
        lines +=
            "{\"epoch_end\":2,\"val_loss\":1.2,\"val_top1_error\":0.3,\"val_top5_error\":0.05}\n";
        std::fs::write(&log, lines).unwrap();
        let png = dir.path().join("curves.png");
        plot_metrics(&log, &png, true).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert!(img.width() > 500 && img.pixels().any(|p| p.0 != [255, 255, 255]));
        std::fs::write(&log, "not json\n").unwrap();
        assert!(format!("{:#}", plot_metrics(&log, &png, false).unwrap_err()).contains("line 1"));
    }
}
