//! `latency.svg`: each variant's latency by percentile (x: percentile on a
//! log scale of "nines", y: ms on a log scale), the usual way to show tails.
//! plotters' SVG backend with its built-in text metrics: no font library.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::results::VariantResult;

/// x coordinate of a percentile: -log10(1 - p/100), so 90 -> 1, 99 -> 2,
/// 99.9 -> 3 (100 is drawn at 5).
fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        5.0
    } else {
        -(1.0 - p / 100.0).log10()
    }
}

pub fn latency_svg(variants: &[VariantResult], path: &Path) -> Result<()> {
    let max_ms = variants
        .iter()
        .flat_map(|v| v.distribution.iter().map(|(_, us)| *us as f64 / 1000.0))
        .fold(1.0_f64, f64::max);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "keyrig bench: latency by percentile per auth variant",
                ("sans-serif", 20),
            )
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..5f64, (0.01f64..max_ms * 1.5).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms, log)")
            .x_labels(6)
            .x_label_formatter(&|x| match x.round() as i64 {
                _ if (x - x.round()).abs() > 1e-6 => String::new(),
                0 => "0".into(),
                1 => "90".into(),
                2 => "99".into(),
                3 => "99.9".into(),
                4 => "99.99".into(),
                _ => "max".into(),
            })
            .draw()?;
        for (i, v) in variants.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    v.distribution
                        .iter()
                        .map(|(p, us)| (nines(*p), (*us as f64 / 1000.0).max(0.01))),
                    color.stroke_width(2),
                ))?
                .label(v.variant.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_to_nines() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), 5.0);
        assert_eq!(nines(0.0), 0.0);
    }
}
