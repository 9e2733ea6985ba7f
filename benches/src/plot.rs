//! `plot`: line charts over time as SVG, written by hand (no plotting
//! dependency): stacked panels sharing one x axis, each with a left axis
//! and an optional right one, step or straight lines, shaded phases and
//! labelled vertical markers. The autoscaling benchmark draws throughput
//! and node count in one panel and p99 latency in another; `squall-bench
//! plot` redraws any CSV it wrote ([`from_csv`]).

use std::fmt::Write as _;

/// Which y axis a series is drawn against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Left,
    Right,
}

/// One line: `(x, y)` points in x order.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub axis: Axis,
    /// Drawn as a step line (a count that changes at instants).
    pub step: bool,
    pub color: &'static str,
}

/// One panel: its series and the labels of its axes.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub left_label: String,
    /// Empty when no series uses the right axis.
    pub right_label: String,
    pub series: Vec<Series>,
}

/// A chart: panels stacked top to bottom over a shared x axis.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub panels: Vec<Panel>,
    /// Shaded stretches of x: (from, to, label).
    pub bands: Vec<(f64, f64, String)>,
    /// Vertical lines at x, labelled at the top.
    pub markers: Vec<(f64, String)>,
}

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 230.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const MARKER_ROWS: usize = 4;
const ROW_HEIGHT: f64 = 13.0;
const GAP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const BAND_FILLS: [&str; 3] = ["#f2f2f2", "#fde9d9", "#e6f0fa"];

/// Round tick values covering `0..=max` (or `min..=max`): 1, 2 or 5 times
/// a power of ten apart, about `count` of them.
pub fn ticks(min: f64, max: f64, count: usize) -> Vec<f64> {
    let span = (max - min).max(f64::MIN_POSITIVE);
    let raw = span / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (min / step).floor() as i64;
    let last = (max / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn label(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The chart as a standalone SVG document.
pub fn svg(chart: &Chart) -> String {
    let points = || {
        chart
            .panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let x_max = points()
        .map(|p| p.0)
        .chain(chart.markers.iter().map(|m| m.0))
        .fold(1.0f64, f64::max);
    let x_ticks = ticks(0.0, x_max, 12);
    let x_end = x_ticks.last().copied().unwrap_or(x_max).max(x_max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |v: f64| LEFT + v / x_end * plot_w;
    let first_top = TOP + MARKER_ROWS as f64 * ROW_HEIGHT + 22.0;
    let height = first_top + chart.panels.len() as f64 * (PANEL_HEIGHT + GAP) - GAP + BOTTOM;
    let bottom = height - BOTTOM;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(&chart.title)
    );
    for (i, (from, to, name)) in chart.bands.iter().enumerate() {
        let fill = BAND_FILLS[i % BAND_FILLS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{first_top:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
            x(*from),
            (x(*to) - x(*from)).max(0.0),
            bottom - first_top
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">{}</text>"##,
            (x(*from) + x(*to)) / 2.0,
            first_top - 6.0,
            escape(name)
        );
    }
    for (k, panel) in chart.panels.iter().enumerate() {
        let top = first_top + k as f64 * (PANEL_HEIGHT + GAP);
        draw_panel(
            &mut s,
            panel,
            top,
            &x,
            &x_ticks,
            k + 1 == chart.panels.len(),
        );
    }
    for (i, (at, name)) in chart.markers.iter().enumerate() {
        let row = i % MARKER_ROWS;
        let y_text = TOP + row as f64 * ROW_HEIGHT;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{bottom:.1}" stroke="#444" stroke-dasharray="4 3" stroke-width="1"/>"##,
            x(*at),
            y_text + 2.0
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{y_text:.1}" fill="#222">{} ({:.1} s)</text>"##,
            x(*at) + 3.0,
            escape(name),
            at
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        height - 12.0,
        escape(&chart.x_label)
    );
    s.push_str("</svg>\n");
    s
}

fn draw_panel(
    s: &mut String,
    panel: &Panel,
    top: f64,
    x: &dyn Fn(f64) -> f64,
    x_ticks: &[f64],
    last: bool,
) {
    let bottom = top + PANEL_HEIGHT;
    let right_edge = WIDTH - RIGHT;
    let axis_ticks = |axis: Axis| {
        let max = panel
            .series
            .iter()
            .filter(|se| se.axis == axis)
            .flat_map(|se| se.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        let mut t = ticks(0.0, if max > 0.0 { max * 1.05 } else { 1.0 }, 5);
        if axis == Axis::Right && max <= 10.0 {
            // A small count: whole numbers only, one above the highest.
            t = (0..=(max as i64 + 1)).map(|v| v as f64).collect();
        }
        t
    };
    let left = axis_ticks(Axis::Left);
    let right = axis_ticks(Axis::Right);
    let top_of = |t: &[f64]| t.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let y = |axis: Axis, v: f64| {
        let max = top_of(if axis == Axis::Left { &left } else { &right });
        bottom - v / max * PANEL_HEIGHT
    };
    for &t in &left {
        let yy = y(Axis::Left, t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{right_edge}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 5.0,
            yy + 4.0,
            label(t)
        );
    }
    let uses_right = panel.series.iter().any(|se| se.axis == Axis::Right);
    if uses_right {
        for &t in &right {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                right_edge + 5.0,
                y(Axis::Right, t) + 4.0,
                label(t)
            );
        }
    }
    for &t in x_ticks {
        let xx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{bottom:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#888"/>"##,
            bottom + 4.0
        );
        if last {
            let _ = writeln!(
                s,
                r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                label(t)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#888"/>"##,
        right_edge - LEFT
    );
    let mid = top + PANEL_HEIGHT / 2.0;
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {mid:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        escape(&panel.left_label)
    );
    if uses_right {
        let _ = writeln!(
            s,
            r#"<text transform="translate({:.1} {mid:.1}) rotate(90)" text-anchor="middle">{}</text>"#,
            WIDTH - 16.0,
            escape(&panel.right_label)
        );
    }
    for (i, se) in panel.series.iter().enumerate() {
        let mut path = String::new();
        let mut previous: Option<f64> = None;
        for &(px, py) in &se.points {
            let (xx, yy) = (x(px), y(se.axis, py));
            match previous {
                None => {
                    let _ = write!(path, "M{xx:.1},{yy:.1}");
                }
                Some(prev_y) if se.step => {
                    let _ = write!(path, " L{xx:.1},{prev_y:.1} L{xx:.1},{yy:.1}");
                }
                Some(_) => {
                    let _ = write!(path, " L{xx:.1},{yy:.1}");
                }
            }
            previous = Some(yy);
        }
        let width = if se.step { 2.5 } else { 1.5 };
        let _ = writeln!(
            s,
            r#"<path d="{path}" fill="none" stroke="{}" stroke-width="{width}"/>"#,
            se.color
        );
        let (lx, ly) = (LEFT + 10.0 + 230.0 * i as f64, top + 16.0);
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            lx + 18.0,
            ly - 4.0,
            se.color,
            lx + 23.0,
            escape(&format!(
                "{} ({} axis)",
                se.name,
                if se.axis == Axis::Left {
                    "left"
                } else {
                    "right"
                }
            ))
        );
    }
}

/// A chart of a CSV the autoscaling benchmark wrote: `# event,T,LABEL`
/// lines are markers; the `t_s` column is x; the `phase` column's runs
/// become shaded bands; column `left` is drawn against the left axis of
/// the top panel, `right` as a step line against its right axis, and
/// `lower` (if given) alone in a second panel.
pub fn from_csv(
    text: &str,
    title: &str,
    left: &str,
    right: &str,
    lower: Option<&str>,
) -> Result<Chart, String> {
    let mut markers = Vec::new();
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.strip_prefix("# event,") {
            Some(rest) => {
                let (t, name) = rest
                    .split_once(',')
                    .ok_or("an event line without a label")?;
                let t: f64 = t.parse().map_err(|_| format!("bad event time {t:?}"))?;
                markers.push((t, name.to_string()));
            }
            None if line.starts_with('#') => {}
            None => lines.push(line.split(',').map(str::to_string).collect::<Vec<_>>()),
        }
    }
    let (header, rows) = lines.split_first().ok_or("no header line")?;
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no column {name:?} (columns: {})", header.join(", ")))
    };
    let (t, phase) = (column("t_s")?, column("phase")?);
    let xs: Vec<f64> = rows
        .iter()
        .map(|r| r.get(t).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))
        .collect();
    let series = |name: &str, axis: Axis, step: bool, color: &'static str| {
        let c = column(name)?;
        Ok::<_, String>(Series {
            name: name.to_string(),
            points: rows
                .iter()
                .zip(&xs)
                .filter_map(|(r, &x)| Some((x, r.get(c)?.parse::<f64>().ok()?)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
            axis,
            step,
            color,
        })
    };
    let mut panels = vec![Panel {
        left_label: left.to_string(),
        right_label: right.to_string(),
        series: vec![
            series(left, Axis::Left, false, "#1f77b4")?,
            series(right, Axis::Right, true, "#d62728")?,
        ],
    }];
    if let Some(lower) = lower {
        panels.push(Panel {
            left_label: lower.to_string(),
            right_label: String::new(),
            series: vec![series(lower, Axis::Left, false, "#2ca02c")?],
        });
    }
    let mut bands: Vec<(f64, f64, String)> = Vec::new();
    let mut start = 0.0;
    for (r, &x) in rows.iter().zip(&xs) {
        let name = r.get(phase).cloned().unwrap_or_default();
        match bands.last_mut() {
            Some(b) if b.2 == name => b.1 = x,
            _ => bands.push((start, x, name)),
        }
        start = x;
    }
    Ok(Chart {
        title: title.to_string(),
        x_label: "time since the start of the run (s)".to_string(),
        panels,
        bands,
        markers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 9.5, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 12_345.0, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.last().copied().unwrap() >= 12_345.0);
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 5000.0).abs() < 1e-6));
    }

    #[test]
    fn a_csv_becomes_bands_markers_and_two_panels() {
        let csv = "# event,1.5,add-node\n# note\nt_s,phase,ops_per_s,p99_ms,nodes\n\
                   0.25,light,100,1.0,1\n0.5,light,110,1.1,1\n0.75,spike,900,4.0,1\n\
                   1.0,spike,950,3.0,2\n";
        let chart = from_csv(csv, "t & <t>", "ops_per_s", "nodes", Some("p99_ms")).unwrap();
        assert_eq!(chart.markers, vec![(1.5, "add-node".to_string())]);
        assert_eq!(chart.bands.len(), 2);
        assert_eq!(chart.bands[1], (0.5, 1.0, "spike".to_string()));
        assert_eq!(chart.panels.len(), 2);
        assert_eq!(chart.panels[0].series[1].points.last(), Some(&(1.0, 2.0)));
        let doc = svg(&chart);
        assert!(doc.starts_with("<svg") && doc.trim_end().ends_with("</svg>"));
        assert!(doc.contains("t &amp; &lt;t&gt;"));
        assert_eq!(doc.matches("<path").count(), 3);
        assert!(from_csv(csv, "x", "nope", "nodes", None)
            .unwrap_err()
            .contains("nope"));
    }
}
