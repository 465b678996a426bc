//! Badges for READMEs, in the flat style of shields.io: `/badge/status.svg`,
//! `/badge/uptime-24h.svg`, `uptime-7d`, `uptime-30d` and `/badge/response-time.svg`,
//! each `?url=…`. A label and a value, both as text in the SVG; an unknown URL (or badge)
//! gets a grey "unknown", never an error page.

use super::html::escape;
use super::report::{TargetReport, TargetState};

/// Which badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadgeKind {
    Status,
    Uptime24h,
    Uptime7d,
    Uptime30d,
    ResponseTime,
}

impl BadgeKind {
    /// The badge at `path` (`/badge/NAME.svg`).
    pub(crate) fn of(path: &str) -> Option<BadgeKind> {
        let name = path.strip_prefix("/badge/")?.strip_suffix(".svg")?;
        Some(match name {
            "status" => BadgeKind::Status,
            "uptime-24h" => BadgeKind::Uptime24h,
            "uptime-7d" => BadgeKind::Uptime7d,
            "uptime-30d" => BadgeKind::Uptime30d,
            "response-time" => BadgeKind::ResponseTime,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            BadgeKind::Status => "status",
            BadgeKind::Uptime24h => "uptime 24h",
            BadgeKind::Uptime7d => "uptime 7d",
            BadgeKind::Uptime30d => "uptime 30d",
            BadgeKind::ResponseTime => "response time",
        }
    }
}

const GREEN: &str = "#2e7d32";
const LIGHT_GREEN: &str = "#7cb342";
const ORANGE: &str = "#ef6c00";
const RED: &str = "#c62828";
const GREY: &str = "#757575";
const BLUE: &str = "#1565c0";

/// The value and its colour for `target` (None: unknown).
fn value(kind: BadgeKind, target: Option<&TargetReport>) -> (String, &'static str) {
    let Some(t) = target else {
        return ("unknown".into(), GREY);
    };
    let uptime = |u: Option<f64>| match u {
        None => ("no checks".to_string(), GREY),
        Some(u) => {
            let colour = match u {
                u if u >= 99.9 => GREEN,
                u if u >= 99.0 => LIGHT_GREEN,
                u if u >= 95.0 => ORANGE,
                _ => RED,
            };
            (format!("{u:.2}%"), colour)
        }
    };
    match kind {
        BadgeKind::Status => match t.state {
            TargetState::Up => ("up".into(), GREEN),
            TargetState::Degraded => ("degraded".into(), ORANGE),
            TargetState::Down => ("down".into(), RED),
            TargetState::NoData => ("no data".into(), GREY),
            TargetState::Waiting => ("waiting".into(), GREY),
            TargetState::Maintenance => ("maintenance".into(), BLUE),
        },
        BadgeKind::Uptime24h => uptime(t.uptime_24h),
        BadgeKind::Uptime7d => uptime(t.uptime_7d),
        BadgeKind::Uptime30d => uptime(t.uptime_30d),
        BadgeKind::ResponseTime => match t.p50_ms_24h {
            None => ("no checks".into(), GREY),
            Some(ms) => (
                format!("{ms:.0} ms"),
                if ms < 500.0 {
                    GREEN
                } else if ms < 2000.0 {
                    ORANGE
                } else {
                    RED
                },
            ),
        },
    }
}

/// Width of `text` in 11 px Verdana, roughly (as shields.io sizes its badges).
fn text_width(text: &str) -> usize {
    text.chars()
        .map(|c| {
            if c.is_ascii_uppercase() || c == 'm' || c == 'w' {
                8
            } else {
                7
            }
        })
        .sum::<usize>()
        + 10
}

/// The SVG of `kind` for `target`.
pub(crate) fn render(kind: BadgeKind, target: Option<&TargetReport>) -> String {
    let label = kind.label();
    let (value, colour) = value(kind, target);
    let (lw, vw) = (text_width(label), text_width(&value));
    let total = lw + vw;
    let (label, value) = (escape(label), escape(&value));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" role=\"img\" aria-label=\"{label}: {value}\">\
<title>{label}: {value}</title><clipPath id=\"r\"><rect width=\"{total}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
<g clip-path=\"url(#r)\"><rect width=\"{lw}\" height=\"20\" fill=\"#555\"/><rect x=\"{lw}\" width=\"{vw}\" height=\"20\" fill=\"{colour}\"/></g>\
<g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
<text x=\"{lx}\" y=\"14\">{label}</text><text x=\"{vx}\" y=\"14\">{value}</text></g></svg>",
        lx = lw / 2,
        vx = lw + vw / 2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_are_found_by_name_and_unknown_is_grey() {
        assert_eq!(BadgeKind::of("/badge/status.svg"), Some(BadgeKind::Status));
        assert_eq!(
            BadgeKind::of("/badge/uptime-7d.svg"),
            Some(BadgeKind::Uptime7d)
        );
        assert_eq!(BadgeKind::of("/badge/other.svg"), None);
        let svg = render(BadgeKind::Uptime30d, None);
        assert!(
            svg.contains(">uptime 30d</text>") && svg.contains(">unknown</text>"),
            "{svg}"
        );
        assert!(svg.contains(GREY));
    }
}
