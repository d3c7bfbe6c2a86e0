//! A scenario's timeline drawn as a standalone SVG: three lanes (network,
//! client, server), the outage, and every mark, with details on hover.

use std::fmt::Write as _;

use super::report::{Lane, Mark, MarkKind, Report};

/// Left margin (lane names), plot width and right margin, in px.
const LEFT: f64 = 90.0;
const PLOT_W: f64 = 960.0;
const RIGHT: f64 = 40.0;
const WIDTH: f64 = LEFT + PLOT_W + RIGHT;
/// Top of the first lane, and the height of each lane.
const TOP: f64 = 64.0;
const LANE_H: f64 = 90.0;
/// Where a lane's marks sit below its top; their labels stack above.
const MARK_DY: f64 = 62.0;
/// Label stagger levels, and the rough width of a 10 px character.
const LEVELS: usize = 4;
const CHAR_W: f64 = 5.6;
/// Longest label drawn in full (the `<title>` always has all of it).
const MAX_LABEL: usize = 32;
const BAND: &str = "#f9d6d6";
const RED: &str = "#d62728";
const GREEN: &str = "#2a9d3a";

/// Escapes text for XML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A usable run length: anything not positive and finite becomes 1 s.
fn sane_duration(d: f64) -> f64 {
    if d.is_finite() && d > 0.0 {
        d
    } else {
        1.0
    }
}

/// Horizontal position of time `t` (clamped to the run) in a run of `duration` seconds.
fn x_of(t: f64, duration: f64) -> f64 {
    let d = sane_duration(duration);
    LEFT + t.clamp(0.0, d) / d * PLOT_W
}

/// A round tick step (1, 2, 5 × 10ⁿ s) giving at most 11 intervals.
fn tick_step(d: f64) -> f64 {
    let mut step = 10f64.powi(d.log10().floor() as i32 - 2);
    let mut i = 0;
    while d / step > 11.0 {
        step *= [2.0, 2.5, 2.0][i % 3];
        i += 1;
    }
    step
}

/// A kind's name (as in the JSON), its colour, and whether its label is drawn beside it
/// (every label shows on hover).
fn style(k: MarkKind) -> (&'static str, &'static str, bool) {
    match k {
        MarkKind::FaultStart => ("fault_start", RED, true),
        MarkKind::FaultEnd => ("fault_end", GREEN, true),
        MarkKind::Ping => ("ping", "#9a9a9a", false),
        MarkKind::Detect => ("detect", RED, true),
        MarkKind::Attempt => ("attempt", "#555555", false),
        MarkKind::AttemptFailed => ("attempt_failed", "#e67e22", false),
        MarkKind::Connected => ("connected", GREEN, true),
        MarkKind::Resumed => ("resumed", "#1e7b2e", true),
        MarkKind::Expired => ("expired", "#000000", true),
        MarkKind::NetworkChanged => ("network_changed", "#1f6fd1", false),
        MarkKind::Note => ("note", "#888888", false),
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |s| format!("{s:.2} s"))
}

/// Writes `s`, escaped, as a text element at (`x`, `y`) with extra attributes.
fn text(out: &mut String, x: f64, y: f64, attrs: &str, s: &str) {
    let _ = writeln!(out, r#"<text x="{x:.1}" y="{y:.1}" {attrs}>{}</text>"#, esc(s));
}

/// Draws one mark's shape centred on (`x`, `cy`); fault lines run from `y0` to `y1`.
fn shape(out: &mut String, k: MarkKind, x: f64, cy: f64, y0: f64, y1: f64) {
    let (_, c, _) = style(k);
    let cross = |out: &mut String, s: f64, w: f64| {
        let (a, b, u, v) = (x - s, x + s, cy - s, cy + s);
        write!(
            out,
            r#"<path d="M{a:.1} {u:.1}L{b:.1} {v:.1}M{a:.1} {v:.1}L{b:.1} {u:.1}" stroke="{c}" stroke-width="{w}"/>"#
        )
    };
    let _ = match k {
        MarkKind::Ping => write!(out, r#"<circle cx="{x:.1}" cy="{cy:.1}" r="1.6" fill="{c}"/>"#),
        MarkKind::Detect => {
            let (t, b) = (cy - 6.0, cy + 4.0);
            write!(out, r#"<polygon points="{x:.1},{t:.1} {:.1},{b:.1} {:.1},{b:.1}" fill="{c}"/>"#, x - 5.0, x + 5.0)
        }
        MarkKind::Attempt => {
            write!(out, r#"<circle cx="{x:.1}" cy="{cy:.1}" r="3.5" fill="none" stroke="{c}" stroke-width="1.2"/>"#)
        }
        MarkKind::AttemptFailed => cross(out, 3.0, 1.6),
        MarkKind::Connected => {
            write!(out, r#"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="{c}"/>"#, x - 4.5, cy - 4.5)
        }
        MarkKind::Resumed => {
            let (l, r, t, b) = (x - 6.0, x + 6.0, cy - 6.0, cy + 6.0);
            write!(out, r#"<polygon points="{x:.1},{t:.1} {r:.1},{cy:.1} {x:.1},{b:.1} {l:.1},{cy:.1}" fill="{c}"/>"#)
        }
        MarkKind::Expired => cross(out, 5.5, 2.6),
        MarkKind::NetworkChanged => {
            let (t, b) = (cy - 10.0, cy + 10.0);
            write!(out, r#"<line x1="{x:.1}" y1="{t:.1}" x2="{x:.1}" y2="{b:.1}" stroke="{c}" stroke-width="2.2"/>"#)
        }
        MarkKind::FaultStart | MarkKind::FaultEnd => write!(
            out,
            r#"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="{c}" stroke-width="1.5" stroke-dasharray="5,3"/>"#
        ),
        MarkKind::Note => {
            let (t, b) = (cy - 3.0, cy + 3.0);
            write!(out, r#"<polygon points="{:.1},{t:.1} {:.1},{t:.1} {x:.1},{b:.1}" fill="{c}"/>"#, x - 3.0, x + 3.0)
        }
    };
}

/// Writes a mark's label beside it, on the lowest stagger level that is free
/// at `x` (`ends` holds each level's rightmost used x), or the least crowded one.
fn label(out: &mut String, ends: &mut [f64; LEVELS], s: &str, c: &str, x: f64, cy: f64) {
    if s.is_empty() {
        return;
    }
    let label: String = if s.chars().count() > MAX_LABEL {
        s.chars().take(MAX_LABEL - 1).chain(['…']).collect()
    } else {
        s.to_owned()
    };
    let w = label.chars().count() as f64 * CHAR_W;
    // Right of the mark, unless that would run off the picture.
    let (a, anchor, tx) =
        if x + 4.0 + w <= WIDTH - 4.0 { (x + 4.0, "start", x + 4.0) } else { (x - 4.0 - w, "end", x - 4.0) };
    let level = (0..LEVELS)
        .find(|&l| ends[l] + 3.0 <= a)
        .or_else(|| (0..LEVELS).min_by(|&i, &j| ends[i].total_cmp(&ends[j])))
        .unwrap_or(0);
    ends[level] = a + w;
    let y = cy - 10.0 - level as f64 * 11.0;
    text(out, tx, y, &format!(r#"font-size="10" fill="{c}" text-anchor="{anchor}""#), &label);
}

/// Draws a scenario's timeline as a self-contained SVG document.
pub fn render(r: &Report) -> String {
    let d = sane_duration(r.duration_s);
    let bottom = TOP + 3.0 * LANE_H;
    let mut b = String::new();

    // Header: what was done, then the figures a user feels.
    text(&mut b, 12.0, 24.0, r#"font-size="16" font-weight="bold""#, &r.title);
    let figures = format!(
        "detection: client {}, server {} · back after restore {} · survived: {} · up lost {}, dup {} · down lost {}, dup {}",
        secs(r.detect_client_s),
        secs(r.detect_server_s),
        secs(r.back_after_restore_s),
        if r.survived { "yes" } else { "no" },
        r.up.lost,
        r.up.duplicated,
        r.down.lost,
        r.down.duplicated
    );
    text(&mut b, 12.0, 44.0, r##"font-size="12" fill="#333""##, &figures);

    // Lanes, top to bottom.
    for (i, name) in ["network", "client", "server"].iter().enumerate() {
        let y = TOP + i as f64 * LANE_H;
        let cy = y + MARK_DY;
        let fill = if i % 2 == 0 { "#f5f6f8" } else { "#ffffff" };
        let _ = writeln!(b, r#"<rect x="{LEFT}" y="{y}" width="{PLOT_W}" height="{LANE_H}" fill="{fill}"/>"#);
        let _ = writeln!(b, r##"<line x1="{LEFT}" y1="{cy}" x2="{}" y2="{cy}" stroke="#ddd"/>"##, LEFT + PLOT_W);
        text(&mut b, LEFT - 12.0, cy + 4.0, r#"font-size="13" text-anchor="end""#, name);
    }

    // Time axis with a grid line at every tick.
    let step = tick_step(d);
    let fmt_t = |t: f64| if step < 1.0 { format!("{t:.1}") } else { format!("{t:.0}") };
    for i in 0..=((d / step + 1e-9).floor() as usize) {
        let x = x_of(i as f64 * step, d);
        let _ = writeln!(b, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#e2e2e2"/>"##, bottom + 5.0);
        text(&mut b, x, bottom + 18.0, r#"font-size="11" text-anchor="middle""#, &fmt_t(i as f64 * step));
    }
    let _ = writeln!(b, r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#444"/>"##, LEFT + PLOT_W);
    text(&mut b, LEFT + PLOT_W, bottom + 34.0, r##"font-size="11" fill="#444" text-anchor="end""##, "time (s)");

    // The outage across all lanes, and the link state on the network lane.
    if let Some(f) = r.fault.filter(|f| !f.start_s.is_nan() && !f.end_s.is_nan()) {
        let s = f.start_s.clamp(0.0, d);
        let e = f.end_s.clamp(0.0, d).max(s);
        let (xs, xe) = (x_of(s, d), x_of(e, d));
        let _ = writeln!(
            b,
            r#"<rect x="{xs:.1}" y="{TOP}" width="{:.1}" height="{}" fill="{BAND}" fill-opacity="0.7"><title>outage: {s:.2} s → {e:.2} s ({:.1} s)</title></rect>"#,
            xe - xs,
            bottom - TOP,
            e - s
        );
        text(&mut b, xs + 4.0, TOP + 13.0, &format!(r#"font-size="11" fill="{RED}""#), "outage");
        let by = TOP + MARK_DY + 10.0;
        for (a, z, c, word) in
            [(LEFT, xs, GREEN, "link up"), (xs, xe, RED, "link down"), (xe, LEFT + PLOT_W, GREEN, "link up")]
        {
            if z - a > 0.5 {
                let _ = writeln!(b, r#"<rect x="{a:.1}" y="{by}" width="{:.1}" height="11" fill="{c}"/>"#, z - a);
            }
            if z - a > 30.0 {
                text(&mut b, a + 4.0, by + 8.5, r##"font-size="9" fill="#fff""##, word);
            }
        }
    }

    // Marks: pings first so the rarer kinds are drawn over them; labels last, on top.
    let mut labels = String::new();
    let mut ends = [[f64::NEG_INFINITY; LEVELS]; 3];
    let pings = r.marks.iter().filter(|m| m.kind == MarkKind::Ping);
    for m in pings.chain(r.marks.iter().filter(|m| m.kind != MarkKind::Ping)) {
        if m.t_s.is_nan() {
            continue;
        }
        let x = x_of(m.t_s, d);
        let lane = match m.lane {
            Lane::Network => 0,
            Lane::Client => 1,
            Lane::Server => 2,
        };
        let cy = TOP + lane as f64 * LANE_H + MARK_DY;
        let _ = write!(b, "<g><title>{}</title>", esc(&describe(m)));
        shape(&mut b, m.kind, x, cy, TOP, bottom);
        b.push_str("</g>\n");
        if let (_, c, true) = style(m.kind) {
            label(&mut labels, &mut ends[lane], &m.label, c, x, cy);
        }
    }
    b.push_str(&labels);

    // Legend, wrapping onto a second row when needed.
    let legend: [(Option<MarkKind>, &str); 12] = [
        (None, "outage"),
        (Some(MarkKind::Ping), "heartbeat"),
        (Some(MarkKind::Detect), "detected dead"),
        (Some(MarkKind::Attempt), "attempt"),
        (Some(MarkKind::AttemptFailed), "attempt failed"),
        (Some(MarkKind::Connected), "new session"),
        (Some(MarkKind::Resumed), "resumed"),
        (Some(MarkKind::Expired), "session expired"),
        (Some(MarkKind::NetworkChanged), "network change"),
        (Some(MarkKind::FaultStart), "fault start"),
        (Some(MarkKind::FaultEnd), "fault end"),
        (Some(MarkKind::Note), "note"),
    ];
    let (mut lx, mut ly) = (12.0, bottom + 56.0);
    for (kind, name) in legend {
        let w = 34.0 + name.chars().count() as f64 * 6.2;
        if lx + w > WIDTH - 8.0 {
            (lx, ly) = (12.0, ly + 20.0);
        }
        match kind {
            Some(k) => shape(&mut b, k, lx + 6.0, ly, ly - 7.0, ly + 7.0),
            None => {
                let _ = write!(b, r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{BAND}"/>"#, ly - 6.0);
            }
        }
        text(&mut b, lx + 16.0, ly + 4.0, r#"font-size="11""#, name);
        lx += w;
    }

    let h = ly + 16.0;
    let mut s = String::with_capacity(b.len() + 300);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&r.title));
    s.push_str(r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    s.push('\n');
    s.push_str(&b);
    s.push_str("</svg>\n");
    s
}

/// Hover text for a mark: "t=12.34 s kind: label".
fn describe(m: &Mark) -> String {
    let (name, _, _) = style(m.kind);
    if m.label.is_empty() {
        format!("t={:.2} s {name}", m.t_s)
    } else {
        format!("t={:.2} s {name}: {}", m.t_s, m.label)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::report::{DirStats, Span};
    use super::*;

    fn mark(t_s: f64, lane: Lane, kind: MarkKind, label: &str) -> Mark {
        Mark { t_s, lane, kind, label: label.to_owned() }
    }

    fn report(duration_s: f64, fault: Option<Span>, marks: Vec<Mark>) -> Report {
        Report {
            scenario: "cable-pull".into(),
            title: "cable \"pulled\" & 'put back'".into(),
            params: Default::default(),
            duration_s,
            fault,
            detect_client_s: Some(2.5),
            detect_server_s: None,
            back_after_restore_s: Some(0.8),
            sessions: vec!["a1".into()],
            survived: true,
            up: DirStats { sent: 10, delivered: 10, ..Default::default() },
            down: DirStats { sent: 9, delivered: 8, lost: 1, duplicated: 2, ..Default::default() },
            marks,
            checks: vec![],
        }
    }

    const FAULT: Option<Span> = Some(Span { start_s: 5.0, end_s: 15.0 });

    /// Every element opened is closed, in order: a small well-formedness check
    /// (text is escaped, so every `<` starts a tag).
    fn balanced(svg: &str) -> bool {
        let mut open = Vec::new();
        for tag in svg.split('<').skip(1) {
            let tag = &tag[..tag.find('>').unwrap()];
            if let Some(name) = tag.strip_prefix('/') {
                if open.pop() != Some(name) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                open.push(tag.split(' ').next().unwrap());
            }
        }
        open.is_empty()
    }

    /// Every kind at least once, a hostile label, and a mark at the very end.
    fn marks() -> Vec<Mark> {
        use MarkKind::*;
        let mut m: Vec<Mark> = (0..30).map(|i| mark(i as f64, Lane::Client, Ping, "12 ms")).collect();
        m.extend([
            mark(5.0, Lane::Network, FaultStart, "cable pulled"),
            mark(6.0, Lane::Network, NetworkChanged, "eth0 down"),
            mark(7.5, Lane::Client, Detect, "<&>"),
            mark(8.0, Lane::Server, Detect, "detached"),
            mark(9.0, Lane::Client, Attempt, ""),
            mark(9.5, Lane::Client, AttemptFailed, "refused"),
            mark(12.0, Lane::Server, Note, "gc"),
            mark(15.0, Lane::Network, FaultEnd, "cable back"),
            mark(15.8, Lane::Client, Resumed, "session a1 resumed on a long-winded new transport"),
            mark(20.0, Lane::Server, Expired, "grace over"),
            mark(30.0, Lane::Client, Connected, "b2"),
        ]);
        m
    }

    #[test]
    fn well_formed_and_escaped() {
        let svg = render(&report(30.0, FAULT, marks()));
        let t = svg.trim();
        assert!(t.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(t.ends_with("</svg>"));
        assert!(svg.contains("&lt;&amp;&gt;"));
        assert!(!svg.contains("<&>"));
        assert!(svg.contains("cable &quot;pulled&quot; &amp; &apos;put back&apos;"));
        assert!(svg.contains("t=7.50 s detect: &lt;&amp;&gt;"));
        assert!(svg.contains("outage") && svg.contains("link down"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(balanced(&svg));
    }

    #[test]
    fn one_title_per_mark() {
        let m = marks();
        let n = m.len();
        // Fixed titles: the document's own, plus the outage band's when there is one.
        let svg = render(&report(30.0, FAULT, m.clone()));
        assert_eq!(svg.matches("<title>").count(), n + 2);
        let svg = render(&report(30.0, None, m));
        assert_eq!(svg.matches("<title>").count(), n + 1);
        assert!(!svg.contains("link down"));
    }

    #[test]
    fn degenerate_input_is_drawn_not_panicked_on() {
        let m = vec![
            mark(f64::NAN, Lane::Client, MarkKind::Detect, "skipped"),
            mark(-3.0, Lane::Client, MarkKind::Connected, "before"),
            mark(1e9, Lane::Server, MarkKind::Expired, "after"),
        ];
        for d in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let svg = render(&report(d, Some(Span { start_s: f64::NAN, end_s: 2.0 }), m.clone()));
            assert_eq!(svg.matches("<title>").count(), 3, "NaN mark and NaN fault skipped");
            assert!(!svg.contains("skipped") && svg.contains("before") && svg.contains("after"));
            assert!(!svg.contains("NaN") && balanced(&svg));
        }
    }

    #[test]
    fn x_of_spans_the_plot() {
        assert_eq!(x_of(0.0, 30.0), LEFT);
        assert_eq!(x_of(30.0, 30.0), LEFT + PLOT_W);
        assert_eq!(x_of(15.0, 30.0), LEFT + PLOT_W / 2.0);
        assert_eq!(x_of(-1.0, 30.0), LEFT);
        assert_eq!(x_of(99.0, 30.0), LEFT + PLOT_W);
        assert_eq!(x_of(1.0, 0.0), LEFT + PLOT_W);
        // The mark at t = duration is drawn at the plot's right edge.
        let svg = render(&report(30.0, None, vec![mark(30.0, Lane::Client, MarkKind::Connected, "end")]));
        assert!(svg.contains(&format!(r#"<rect x="{:.1}""#, LEFT + PLOT_W - 4.5)));
    }

    #[test]
    fn ticks_are_round_and_few() {
        for d in [0.3, 1.0, 7.0, 10.0, 11.1, 22.1, 30.0, 55.1, 60.0, 90.0, 300.0, 3600.0] {
            let step = tick_step(d);
            let ticks = (d / step + 1e-9).floor() as usize + 1;
            assert!((5..=12).contains(&ticks), "{d} s: step {step} gives {ticks} ticks");
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!([1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6), "{d} s: step {step}");
        }
    }
}
