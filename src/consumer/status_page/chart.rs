//! Line charts for the site page as inline SVG, with what makes a chart readable: a y axis
//! with its unit and gridlines at round values, an x axis with labelled ticks, a legend,
//! and a title that says the same in words.

use std::fmt::Write;

use super::html::escape;

/// One line of a chart: a value (or a gap) per slot.
pub(crate) struct Line<'a> {
    pub(crate) label: &'a str,
    /// A CSS class for its stroke (`p50`, `p95`).
    pub(crate) class: &'a str,
    pub(crate) values: Vec<Option<f64>>,
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 28.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 36.0;

/// The smallest round number (1, 2 or 5 times a power of ten) at or above `v`.
pub(crate) fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

/// A chart of `lines` over `slots` slots, `x_ticks` labelling some of them, values in
/// `unit`.
pub(crate) fn line_chart(
    out: &mut String,
    title: &str,
    x_ticks: &[(usize, String)],
    lines: &[Line<'_>],
    unit: &str,
) {
    let slots = lines
        .iter()
        .map(|l| l.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let top = nice_ceiling(
        lines
            .iter()
            .flat_map(|l| l.values.iter().flatten())
            .fold(0.0f64, |a, b| a.max(*b)),
    );
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |i: usize| LEFT + w * i as f64 / (slots - 1) as f64;
    let y = |v: f64| TOP + h - h * v / top;
    let _ = write!(
        out,
        "<figure><svg role=\"img\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" style=\"max-width:100%;height:auto\"><title>{}</title>",
        escape(title)
    );
    for k in 0..=4 {
        let v = top * f64::from(k) / 4.0;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} {unit}</text>",
            LEFT + w,
            LEFT - 4.0,
            y(v) + 3.0,
            round_label(v),
            y = y(v),
        );
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        TOP + h,
        LEFT + w,
        TOP + h,
        TOP + h
    );
    for (i, label) in x_ticks {
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + h,
            TOP + h + 4.0,
            TOP + h + 16.0,
            escape(label),
            x = x(*i),
        );
    }
    write_lines(out, lines, x, y);
    let legend: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} ({})",
                escape(l.label),
                if l.class == "p95" { "dashed" } else { "solid" }
            )
        })
        .collect();
    let _ = write!(
        out,
        "<text class=\"tick\" x=\"{LEFT}\" y=\"{:.1}\">{}</text></svg><figcaption>{}</figcaption></figure>",
        HEIGHT - 4.0,
        legend.join(" · "),
        escape(title)
    );
}

/// Each line as polylines, one per run of slots with a value: gaps (slots without
/// checks) break the line.
fn write_lines(
    out: &mut String,
    lines: &[Line<'_>],
    x: impl Fn(usize) -> f64,
    y: impl Fn(f64) -> f64,
) {
    for line in lines {
        let mut runs: Vec<Vec<String>> = vec![Vec::new()];
        for (i, v) in line.values.iter().enumerate() {
            match v {
                Some(v) => runs
                    .last_mut()
                    .map(|r| r.push(format!("{:.1},{:.1}", x(i), y(*v))))
                    .unwrap_or(()),
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let points = if run.len() == 1 {
                format!("{0} {0}", run[0])
            } else {
                run.join(" ")
            };
            let _ = write!(
                out,
                "<polyline class=\"{}\" points=\"{points}\"/>",
                line.class
            );
        }
    }
}

fn round_label(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_stop_at_round_numbers() {
        let cases = [
            (0.0, 1.0),
            (0.7, 1.0),
            (3.0, 5.0),
            (12.0, 20.0),
            (480.0, 500.0),
            (501.0, 1000.0),
        ];
        for (v, want) in cases {
            assert_eq!(nice_ceiling(v), want, "{v}");
        }
    }

    #[test]
    fn a_chart_has_axes_units_and_a_line_per_series() {
        let mut out = String::new();
        let lines = [
            Line {
                label: "p50",
                class: "p50",
                values: vec![Some(10.0), None, Some(30.0), Some(40.0)],
            },
            Line {
                label: "p95",
                class: "p95",
                values: vec![Some(20.0), Some(25.0), None, None],
            },
        ];
        line_chart(
            &mut out,
            "latency <by hour>",
            &[(0, "00:00".into())],
            &lines,
            "ms",
        );
        assert!(
            out.contains(">50 ms</text>") && out.contains(">0 ms</text>"),
            "{out}"
        );
        assert!(out.contains(">00:00</text>"));
        assert_eq!(
            out.matches("<polyline class=\"p50\"").count(),
            2,
            "a gap breaks the line"
        );
        assert!(out.contains("latency &lt;by hour&gt;"));
    }
}
