//! The chart, written by hand: cumulative admissions over time against the limit, one
//! panel for the hottest key and one for all keys, fault intervals shaded.

use std::fmt::Write as _;

/// One line: a name, a colour and cumulative values per tick.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// Cumulative count at the end of each tick.
    pub points: Vec<u64>,
}

/// One panel: its series and the limit drawn as a dashed horizontal line.
pub struct Panel {
    /// Title.
    pub title: String,
    /// The limit.
    pub limit: u64,
    /// Lines.
    pub series: Vec<Series>,
}

const W: f64 = 760.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

/// Turns per-tick counts into cumulative counts.
pub fn cumulative(counts: &[u64]) -> Vec<u64> {
    let mut sum = 0;
    counts
        .iter()
        .map(|c| {
            sum += c;
            sum
        })
        .collect()
}

/// Renders `panels` stacked, with `faults` (start, end in seconds, label) shaded; the x
/// axis spans `seconds`, one point per `tick_s`.
pub fn render(
    panels: &[Panel],
    faults: &[(f64, f64, String)],
    tick_s: f64,
    seconds: f64,
) -> String {
    let seconds = seconds.max(tick_s);
    let height = panels.len() as f64 * (PANEL_H + TOP + BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, p) in panels.iter().enumerate() {
        let y0 = i as f64 * (PANEL_H + TOP + BOTTOM) + TOP;
        let plot_w = W - LEFT - RIGHT;
        let ymax = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .max()
            .unwrap_or(0)
            .max(p.limit)
            .max(1) as f64
            * 1.1;
        let x = |t: f64| LEFT + plot_w * (t / seconds).min(1.0);
        let y = |v: f64| y0 + PANEL_H - PANEL_H * (v / ymax);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
            y0 - 14.0,
            esc(&p.title)
        );
        for (start, end, label) in faults {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{y0}" width="{:.1}" height="{PANEL_H}" fill="#ddd"/><text x="{:.1}" y="{:.1}" fill="#666">{}</text>"##,
                x(*start),
                (x(*end) - x(*start)).max(1.0),
                x(*start) + 2.0,
                y0 + 12.0,
                esc(label)
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="black"/>"#
        );
        for k in 0..=4 {
            let v = ymax / 1.1 * f64::from(k) / 4.0;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y(v) + 4.0,
                v.round()
            );
            let t = seconds * f64::from(k) / 4.0;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.1} s</text>"#,
                x(t),
                y0 + PANEL_H + 16.0
            );
        }
        let ly = y(p.limit as f64);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="red" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}" fill="red" text-anchor="end">limit {}</text>"#,
            LEFT + plot_w,
            LEFT + plot_w - 4.0,
            ly - 4.0,
            p.limit
        );
        for (j, ser) in p.series.iter().enumerate() {
            let mut pts = format!("{:.1},{:.1}", x(0.0), y(0.0));
            for (k, v) in ser.points.iter().enumerate() {
                let _ = write!(
                    pts,
                    " {:.1},{:.1}",
                    x((k + 1) as f64 * tick_s),
                    y(*v as f64)
                );
            }
            let _ = writeln!(
                s,
                r#"<polyline points="{pts}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                ser.color
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
                LEFT + 8.0,
                y0 + 28.0 + 14.0 * j as f64,
                ser.color,
                esc(&ser.name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
