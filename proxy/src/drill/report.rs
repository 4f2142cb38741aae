//! Drill reports for people: Markdown with the figures, the objectives and the timeline, and
//! an SVG timeline of traffic share per site.

use std::collections::BTreeSet;
use std::fmt::Write;

use sitesteer_config::format_utc_ms as utc;

use super::DrillReport;

const COLOURS: [&str; 8] = [
    "#2f81f7", "#3fb950", "#d29922", "#a371f7", "#db61a2", "#39c5cf", "#f0883e", "#8b949e",
];

/// The report as Markdown; `svg_path` is linked when the SVG was written to a file.
pub(crate) fn markdown(r: &DrillReport, svg_path: Option<&str>) -> String {
    let mut out = String::new();
    let verdict = if r.met {
        "all objectives met"
    } else {
        "OBJECTIVES NOT MET"
    };
    let _ = writeln!(
        out,
        "# Failover drill: {} ({}) — {verdict}\n",
        r.site, r.mode
    );
    let _ = writeln!(out, "Started {}.\n", utc(r.started_ms));
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    let _ = writeln!(out, "| requests | {} |", r.requests);
    let _ = writeln!(out, "| failed | {} |", r.failed);
    let _ = writeln!(
        out,
        "| detection (fault → site left up) | {} |",
        r.detection_ms
            .map_or("not during the fault".into(), |v| format!("{v} ms"))
    );
    let _ = writeln!(out, "| hedged away from the site | {} |", r.hedged);
    let _ = writeln!(out, "| rescued from the site | {} |", r.rescued);
    let _ = writeln!(out, "| slowest request | {} ms |", r.slowest_ms);
    let _ = writeln!(
        out,
        "| shift (fault → traffic moved) | {} |",
        r.shift_ms.map_or("never".into(), |v| format!("{v} ms"))
    );
    let _ = writeln!(
        out,
        "| restore (fault cleared → traffic back) | {} |",
        r.restore_ms
            .map_or("not within the drill".into(), |v| format!("{v} ms"))
    );
    let _ = writeln!(
        out,
        "\n| objective | target | measured | met |\n|---|---|---|---|"
    );
    for o in &r.objectives {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            o.name,
            o.target,
            o.measured,
            if o.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(out, "\n## Timeline\n");
    for (at, what) in &r.timeline {
        let _ = writeln!(out, "- {} — {what}", utc(*at));
    }
    if !r.failures.is_empty() {
        let _ = writeln!(out, "\n## Failed requests (first {})\n", r.failures.len());
        for f in &r.failures {
            let _ = writeln!(out, "- {f}");
        }
    }
    if let Some(path) = svg_path {
        let _ = writeln!(
            out,
            "\n## Traffic share per site\n\n![traffic share]({path})"
        );
    }
    out
}

/// An SVG timeline: stacked share of requests per site per 100 ms, with the fault window.
pub(crate) fn svg(r: &DrillReport) -> String {
    let (w, h, pad) = (800.0_f64, 240.0_f64, 30.0_f64);
    let end = r.share.last().map_or(1, |b| b.t_ms + 100).max(1) as f64;
    let x = |t: f64| pad + t / end * (w - 2.0 * pad);
    let sites: BTreeSet<&String> = r.share.iter().flat_map(|b| b.by_site.keys()).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11"><rect width="{w}" height="{h}" fill="#fff"/>"##
    );
    let (fx, rx) = (x(r.fault_at_ms as f64), x(r.restore_at_ms as f64));
    let _ = write!(
        out,
        r##"<rect x="{fx:.1}" y="{pad}" width="{:.1}" height="{:.1}" fill="#f85149" opacity="0.08"/>"##,
        rx - fx,
        h - 2.0 * pad
    );
    let bar_w = (w - 2.0 * pad) / (end / 100.0);
    for b in &r.share {
        let total: u32 = b.by_site.values().sum();
        if total == 0 {
            continue;
        }
        let mut y = h - pad;
        for (i, site) in sites.iter().enumerate() {
            let n = b.by_site.get(*site).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let bh = f64::from(n) / f64::from(total) * (h - 2.0 * pad);
            y -= bh;
            let colour = if site.as_str() == "failed" {
                "#f85149"
            } else {
                COLOURS[i % COLOURS.len()]
            };
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}"/>"#,
                x(b.t_ms as f64),
                bar_w.max(1.0)
            );
        }
    }
    for (t, label) in [(fx, "fault"), (rx, "restore")] {
        let _ = write!(
            out,
            r##"<line x1="{t:.1}" x2="{t:.1}" y1="{pad}" y2="{:.1}" stroke="#000" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}">{label}</text>"##,
            h - pad,
            t + 3.0,
            pad + 12.0
        );
    }
    for (i, site) in sites.iter().enumerate() {
        let colour = if site.as_str() == "failed" {
            "#f85149"
        } else {
            COLOURS[i % COLOURS.len()]
        };
        let lx = pad + i as f64 * 110.0;
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="8" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="17">{}</text>"#,
            lx + 14.0,
            xml(site)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{pad}" y="{:.1}">0 s</text><text x="{:.1}" y="{:.1}" text-anchor="end">{:.1} s</text></svg>"#,
        h - 10.0,
        w - pad,
        h - 10.0,
        end / 1000.0
    );
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
