//! Hand-drawn SVG charts for the run report (`report.html`, `convergence.svg`) and for
//! `nexus sim compare` (`compare.html`): a line chart (curves over a shared x axis, optionally
//! with shaded spans) and a lane chart (one horizontal lane per invariant over virtual time).
//!
//! Every chart is one self-contained `<svg>` element styled with presentation attributes (no CSS
//! or script needed), so it reads the same inline in HTML and as a standalone file. Every text
//! that comes from a scenario or a run is XML-escaped. Elements carry classes (`series`, `lane`,
//! `span`, `violation`) and `data-name` attributes so a reader, or a test, can find them.

use std::fmt::Write as _;

/// Chart width, pixels.
const WIDTH: f64 = 820.0;
/// Left margin (y tick labels and the y axis title).
const LEFT: f64 = 64.0;
/// Right margin.
const RIGHT: f64 = 16.0;
/// Top margin (title and legend).
const TOP: f64 = 48.0;
/// Bottom margin (x tick labels and the x axis title).
const BOTTOM: f64 = 44.0;
/// Plot height of a line chart.
const PLOT_HEIGHT: f64 = 260.0;
/// Height of one invariant lane.
const LANE_HEIGHT: f64 = 22.0;
/// Gap between lanes.
const LANE_GAP: f64 = 8.0;
/// Left margin of a lane chart (the invariant names).
const LANE_LEFT: f64 = 170.0;
/// Most characters of a lane's name shown (the full name is in its tooltip).
const LANE_NAME_CHARS_MAX: usize = 24;

/// Colours of successive series (colour-blind-safe palette).
pub const PALETTE: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];
const HELD: &str = "#8fd19e";
const VIOLATED: &str = "#e8877a";
const UNCHECKED: &str = "#e4e4e4";
const FAULT: &str = "#f0c040";

/// Escapes `&`, `<`, `>`, `"` and `'` for XML and HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0 text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One curve of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour.
    pub color: &'static str,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// Points in data coordinates, in x order.
    pub points: Vec<(f64, f64)>,
}

/// A shaded interval of the x axis (a fault, on charts over virtual time).
#[derive(Clone, Debug)]
pub struct Span {
    /// Start, x units.
    pub from: f64,
    /// End, x units.
    pub to: f64,
    /// Short label drawn in the span.
    pub label: String,
    /// Tooltip text.
    pub detail: String,
}

/// A line chart: curves over a shared x axis from 0.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    /// Title drawn above the plot.
    pub title: String,
    /// X axis title.
    pub x_label: String,
    /// Y axis title.
    pub y_label: String,
    /// Largest x shown (the axis runs from 0); 0 = the data's largest x. Points beyond it are
    /// drawn at the edge.
    pub x_max: f64,
    /// Largest y shown (the axis runs from 0); 0 = the data's largest y.
    pub y_max: f64,
    /// The curves.
    pub series: Vec<Series>,
    /// Shaded spans behind the curves.
    pub spans: Vec<Span>,
}

/// One lane of a lane chart: an invariant over virtual time.
#[derive(Clone, Debug)]
pub struct Lane {
    /// Invariant name.
    pub name: String,
    /// Whether it held to the end.
    pub ok: bool,
    /// When it was first violated, seconds; `None` with `ok == false` means at the end.
    pub violated_at: Option<f64>,
    /// What was measured, or the first violation.
    pub detail: String,
}

/// A "nice" tick step (1, 2 or 5 × 10ⁿ) giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A number as a tick label: no trailing zeros, at most three decimals.
fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// An axis bound: `wanted` if positive, else the data's largest value; kept positive.
fn bound(wanted: f64, data_max: f64) -> f64 {
    let m = if wanted > 0.0 { wanted } else { data_max };
    if m.is_finite() && m > 0.0 { m } else { 1.0 }
}

/// A coordinate with two decimals (enough for pixels, and small output).
fn px(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

fn open_svg(out: &mut String, height: f64, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\">\
         <title>{t}</title><rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\
         <text x=\"{x}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{t}</text>",
        w = px(WIDTH),
        h = px(height),
        t = escape(title),
        x = px(LEFT),
    );
}

/// Vertical x-axis grid lines and labels (`left`..`right` in pixels, `top`..`bottom` the plot).
fn x_axis(out: &mut String, x_max: f64, left: f64, right: f64, top: f64, bottom: f64, label: &str) {
    let step = tick_step(x_max);
    let mut v = 0.0;
    let mut k = 0u32;
    while v <= x_max * (1.0 + 1e-9) && k <= 100 {
        let x = left + v / x_max * (right - left);
        let _ = write!(
            out,
            "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{bottom}\" stroke=\"#dddddd\"/>\
             <text x=\"{x}\" y=\"{ty}\" text-anchor=\"middle\" fill=\"#444444\">{l}</text>",
            x = px(x),
            top = px(top),
            bottom = px(bottom),
            ty = px(bottom + 16.0),
            l = tick_label(v),
        );
        k += 1;
        v = f64::from(k) * step;
    }
    let _ = write!(
        out,
        "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\">{l}</text>",
        x = px((left + right) / 2.0),
        y = px(bottom + 34.0),
        l = escape(label),
    );
}

fn spans(
    out: &mut String,
    spans: &[Span],
    x_max: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
) {
    for s in spans {
        let from = s.from.clamp(0.0, x_max);
        let to = s.to.clamp(from, x_max);
        let x0 = left + from / x_max * (right - left);
        let x1 = left + to / x_max * (right - left);
        let _ = write!(
            out,
            "<g class=\"span\" data-name=\"{l}\"><title>{d}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{FAULT}\" fill-opacity=\"0.22\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"10\" fill=\"#7a5a00\">{l}</text></g>",
            l = escape(&s.label),
            d = escape(&s.detail),
            x = px(x0),
            y = px(top),
            w = px((x1 - x0).max(1.0)),
            h = px(bottom - top),
            tx = px(x0 + 2.0),
            ty = px(top + 11.0),
        );
    }
}

/// Draws a line chart.
pub fn line_chart(c: &LineChart) -> String {
    let data_x = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let data_y = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let x_max = bound(c.x_max, data_x);
    let y_max = bound(c.y_max, data_y);
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT, TOP, TOP + PLOT_HEIGHT);
    let mut out = String::new();
    open_svg(&mut out, height, &c.title);
    spans(&mut out, &c.spans, x_max, left, right, top, bottom);
    // Horizontal grid and y labels.
    let step = tick_step(y_max);
    let mut k = 0u32;
    let mut v = 0.0;
    while v <= y_max * (1.0 + 1e-9) && k <= 100 {
        let y = bottom - v / y_max * (bottom - top);
        let _ = write!(
            out,
            "<line x1=\"{l}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"#dddddd\"/>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" fill=\"#444444\">{lab}</text>",
            l = px(left),
            r = px(right),
            y = px(y),
            tx = px(left - 6.0),
            ty = px(y + 4.0),
            lab = tick_label(v),
        );
        k += 1;
        v = f64::from(k) * step;
    }
    let _ = write!(
        out,
        "<text transform=\"translate(14 {y}) rotate(-90)\" text-anchor=\"middle\">{l}</text>",
        y = px((top + bottom) / 2.0),
        l = escape(&c.y_label),
    );
    x_axis(&mut out, x_max, left, right, top, bottom, &c.x_label);
    let _ = write!(
        out,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#888888\"/>",
        l = px(left),
        t = px(top),
        w = px(right - left),
        h = px(bottom - top),
    );
    for s in &c.series {
        let mut pts = String::with_capacity(s.points.len() * 14);
        for (x, y) in &s.points {
            if !x.is_finite() || !y.is_finite() {
                continue;
            }
            let _ = write!(
                pts,
                "{},{} ",
                px(left + x.clamp(0.0, x_max) / x_max * (right - left)),
                px(bottom - y.clamp(0.0, y_max) / y_max * (bottom - top)),
            );
        }
        let _ = write!(
            out,
            "<polyline class=\"series\" data-name=\"{n}\" points=\"{p}\" fill=\"none\" \
             stroke=\"{c}\" stroke-width=\"1.8\"{d}><title>{n}</title></polyline>",
            n = escape(&s.name),
            p = pts.trim_end(),
            c = s.color,
            d = if s.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            },
        );
    }
    // Legend, in one row above the plot.
    let mut x = left;
    for s in &c.series {
        let _ = write!(
            out,
            "<g class=\"legend\"><line x1=\"{x0}\" y1=\"36\" x2=\"{x1}\" y2=\"36\" stroke=\"{c}\" \
             stroke-width=\"2.5\"{d}/><text x=\"{tx}\" y=\"40\">{n}</text></g>",
            x0 = px(x),
            x1 = px(x + 18.0),
            c = s.color,
            d = if s.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            },
            tx = px(x + 22.0),
            n = escape(&s.name),
        );
        x += 34.0 + 6.5 * s.name.chars().count() as f64;
    }
    out.push_str("</svg>");
    out
}

/// Draws one lane per invariant over `0..t_end` seconds: grey before the first check, green
/// while it held, red from its first violation (marked with a line and the detail in a
/// tooltip); tick marks at `checks` (the sample times); `faults` shaded across all lanes.
pub fn lane_chart(
    title: &str,
    lanes: &[Lane],
    t_end: f64,
    checks: &[f64],
    faults: &[Span],
) -> String {
    let t_end = bound(t_end, 0.0);
    let top = TOP - 10.0;
    let height = top + lanes.len().max(1) as f64 * (LANE_HEIGHT + LANE_GAP) + BOTTOM;
    let (left, right) = (LANE_LEFT, WIDTH - RIGHT);
    let bottom = top + lanes.len().max(1) as f64 * (LANE_HEIGHT + LANE_GAP);
    let x_of = |t: f64| left + t.clamp(0.0, t_end) / t_end * (right - left);
    let mut out = String::new();
    open_svg(&mut out, height, title);
    let first_check = checks.iter().copied().fold(f64::INFINITY, f64::min);
    for (i, lane) in lanes.iter().enumerate() {
        let y = top + i as f64 * (LANE_HEIGHT + LANE_GAP);
        let state = if lane.ok { "held" } else { "violated" };
        let mut name = escape(
            &lane
                .name
                .chars()
                .take(LANE_NAME_CHARS_MAX)
                .collect::<String>(),
        );
        if lane.name.chars().count() > LANE_NAME_CHARS_MAX {
            name.push('…');
        }
        let _ = write!(
            out,
            "<g class=\"lane {state}\" data-name=\"{n}\"><title>{n}: {d}</title>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{name}</text>",
            n = escape(&lane.name),
            d = escape(&lane.detail),
            tx = px(left - 8.0),
            ty = px(y + LANE_HEIGHT / 2.0 + 4.0),
        );
        let checked_from = if first_check.is_finite() {
            first_check.min(t_end)
        } else {
            0.0
        };
        let violated_from = if lane.ok {
            t_end
        } else {
            lane.violated_at.unwrap_or(t_end).clamp(0.0, t_end)
        };
        let mut rect = |from: f64, to: f64, fill: &str, class: &str| {
            if to > from || (class == "violated" && !lane.ok) {
                let _ = write!(
                    out,
                    "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{fill}\"/>",
                    x = px(x_of(from)),
                    y = px(y),
                    w = px((x_of(to) - x_of(from)).max(if class == "violated" {
                        2.0
                    } else {
                        0.0
                    })),
                    h = px(LANE_HEIGHT),
                );
            }
        };
        rect(0.0, checked_from.min(violated_from), UNCHECKED, "unchecked");
        rect(checked_from.min(violated_from), violated_from, HELD, "held");
        if !lane.ok {
            rect(violated_from, t_end, VIOLATED, "violated");
        }
        // Check marks: one path per lane.
        let mut d = String::new();
        for &t in checks.iter().filter(|t| **t <= t_end) {
            let _ = write!(d, "M{} {}v4", px(x_of(t)), px(y + LANE_HEIGHT - 4.0));
        }
        if !d.is_empty() {
            let _ = write!(
                out,
                "<path class=\"checks\" d=\"{d}\" stroke=\"#555555\" stroke-opacity=\"0.5\"/>"
            );
        }
        if !lane.ok {
            let at = match lane.violated_at {
                Some(t) => format!("violated at {t:.3} s"),
                None => "violated at the end".to_owned(),
            };
            let x = x_of(violated_from);
            let _ = write!(
                out,
                "<g class=\"violation\"><title>{at}: {d}</title>\
                 <line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\" stroke=\"#b00000\" stroke-width=\"2\"/>\
                 <text x=\"{tx}\" y=\"{ty}\" font-size=\"10\" fill=\"#700000\"{anchor}>{at}</text></g>",
                d = escape(&lane.detail),
                x = px(x),
                y0 = px(y - 2.0),
                y1 = px(y + LANE_HEIGHT + 2.0),
                tx = px(if x > right - 120.0 { x - 4.0 } else { x + 4.0 }),
                anchor = if x > right - 120.0 {
                    " text-anchor=\"end\""
                } else {
                    ""
                },
                ty = px(y + LANE_HEIGHT / 2.0 + 4.0),
            );
        }
        out.push_str("</g>");
    }
    spans(&mut out, faults, t_end, left, right, top - 2.0, bottom);
    x_axis(
        &mut out,
        t_end,
        left,
        right,
        bottom,
        bottom,
        "virtual time (s)",
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(80.0), 20.0);
        assert_eq!(tick_step(1.05), 0.5);
        assert_eq!(tick_step(9.0), 2.0);
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(40.0), "40");
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let svg = line_chart(&LineChart {
            title: "<b>&\"".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_max: 1.0,
            y_max: 1.0,
            series: vec![Series {
                name: "a<b".into(),
                color: PALETTE[0],
                dashed: false,
                points: vec![(0.0, 0.0), (1.0, 1.0), (f64::NAN, 1.0)],
            }],
            spans: vec![Span {
                from: 0.2,
                to: 0.4,
                label: "kill".into(),
                detail: "n1 & n2".into(),
            }],
        });
        assert!(svg.contains("&lt;b&gt;&amp;&quot;"));
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains("n1 &amp; n2"));
        assert!(!svg.contains("<b>") && !svg.contains("NaN"));
        assert_eq!(svg.matches("class=\"series\"").count(), 1);
    }

    #[test]
    fn a_violated_lane_is_marked_where_it_failed() {
        let lanes = [
            Lane {
                name: "agreement".into(),
                ok: false,
                violated_at: Some(40.0),
                detail: "n1 sees <3>".into(),
            },
            Lane {
                name: "self_down".into(),
                ok: true,
                violated_at: None,
                detail: "ok".into(),
            },
        ];
        let svg = lane_chart("t", &lanes, 80.0, &[0.0, 40.0, 80.0], &[]);
        assert_eq!(svg.matches("<g class=\"lane").count(), 2);
        assert_eq!(svg.matches("class=\"violation\"").count(), 1);
        assert!(svg.contains("violated at 40.000 s: n1 sees &lt;3&gt;"));
        // The violation line sits in the middle of the plot.
        let mid = px(LANE_LEFT + 0.5 * (WIDTH - RIGHT - LANE_LEFT));
        assert!(svg.contains(&format!("x1=\"{mid}\"")), "{svg}");
    }
}
