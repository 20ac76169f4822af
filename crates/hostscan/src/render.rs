//! Output formats: plain text (coloured on a terminal), JSON (schema in [`crate::report`]),
//! SARIF 2.1.0 and a Markdown table.

use airlock_text::{escape, Escaped};
use std::io::Write;

use anstyle::{AnsiColor, Style};
use serde_json::{json, Value};

use crate::checks;
use crate::report::{Evidence, ItemResult, Report, ReportKind, Section, Status};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text, grouped by checklist section, with a summary line.
    Plain,
    /// JSON, schema `airlock-hostscan/1` (see docs/scan-host.md).
    Json,
    /// SARIF 2.1.0, one result per checklist item, rule ids = item ids.
    Sarif,
    /// A Markdown table.
    Markdown,
}

/// Writes `report` as `format`. `color` only affects plain text.
pub fn render(
    report: &Report,
    format: Format,
    color: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        Format::Plain => plain(report, color, out),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &sarif(report))?;
            writeln!(out)
        }
        Format::Markdown => markdown(report, out),
    }
}

fn section_title(s: Section) -> &'static str {
    match s {
        Section::Deployment => "Deployment Security",
        Section::Runtime => "Runtime Security",
        Section::Operational => "Operational Security",
    }
}

fn plain(report: &Report, color: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let paint = |s: Style, text: &str| {
        if color {
            format!("{}{text}{}", s.render(), s.render_reset())
        } else {
            text.to_owned()
        }
    };
    let what = match report.kind {
        ReportKind::Host => "host",
        ReportKind::Org => "organisation",
    };
    writeln!(
        out,
        "{}",
        paint(
            Style::new().bold(),
            &format!("airlock scan {what}: {}", Escaped(&report.target))
        )
    )?;
    let mut section = None;
    for i in &report.items {
        if section != Some(i.section) {
            section = Some(i.section);
            writeln!(out)?;
            writeln!(
                out,
                "{}",
                paint(Style::new().bold().underline(), section_title(i.section))
            )?;
        }
        let (tag, style) = match i.status {
            Status::Pass => (
                "PASS",
                Style::new().fg_color(Some(AnsiColor::Green.into())).bold(),
            ),
            Status::Fail => (
                "FAIL",
                Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            ),
            Status::Unknown => (
                "????",
                Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            ),
        };
        writeln!(
            out,
            "  {} {:>2}. {} [{}]",
            paint(style, tag),
            i.number,
            i.title,
            i.id
        )?;
        // Reasons and evidence quote what the host and the org API hold (file contents,
        // runner names, labels): escaped.
        writeln!(out, "          {}", Escaped(&i.reason))?;
        for e in &i.evidence {
            writeln!(
                out,
                "          - {}: {}",
                paint(Style::new().dimmed(), &escape(&e.source)),
                Escaped(&e.detail)
            )?;
        }
    }
    let s = report.summary;
    writeln!(out)?;
    writeln!(
        out,
        "{} items: {} pass, {} fail, {} unknown",
        report.items.len(),
        paint(
            Style::new().fg_color(Some(AnsiColor::Green.into())),
            &s.pass.to_string()
        ),
        paint(
            Style::new().fg_color(Some(AnsiColor::Red.into())),
            &s.fail.to_string()
        ),
        paint(
            Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            &s.unknown.to_string()
        ),
    )
}

fn md_escape(s: &str) -> String {
    escape(s).replace('|', "\\|")
}

fn markdown(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let what = match report.kind {
        ReportKind::Host => "host",
        ReportKind::Org => "organisation",
    };
    writeln!(
        out,
        "## airlock scan {what}: `{}`",
        md_escape(&report.target)
    )?;
    writeln!(out)?;
    writeln!(out, "| # | Item | Status | Reason | Evidence |")?;
    writeln!(out, "|---|------|--------|--------|----------|")?;
    for i in &report.items {
        let status = match i.status {
            Status::Pass => "✅ pass",
            Status::Fail => "❌ fail",
            Status::Unknown => "❔ unknown",
        };
        let ev: Vec<String> = i
            .evidence
            .iter()
            .map(|e| format!("`{}`: {}", md_escape(&e.source), md_escape(&e.detail)))
            .collect();
        writeln!(
            out,
            "| {} | {} (`{}`) | {} | {} | {} |",
            i.number,
            md_escape(i.title),
            i.id,
            status,
            md_escape(&i.reason),
            ev.join("<br>")
        )?;
    }
    let s = report.summary;
    writeln!(out)?;
    writeln!(
        out,
        "**{} pass, {} fail, {} unknown** of {} items.",
        s.pass,
        s.fail,
        s.unknown,
        report.items.len()
    )
}

/// A file path among the evidence, relative to the scanned root (SARIF artifact URIs).
fn artifact(e: &Evidence) -> Option<String> {
    let p = e.source.split(", ").next()?;
    p.strip_prefix('/')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

fn sarif_result(report: &Report, idx: usize, i: &ItemResult) -> Value {
    let (kind, level) = match i.status {
        Status::Pass => ("pass", "none"),
        Status::Fail => ("fail", "error"),
        Status::Unknown => ("review", "note"),
    };
    let scope = match report.kind {
        ReportKind::Host => "host",
        ReportKind::Org => "org",
    };
    let logical = json!({
        "name": i.id,
        "fullyQualifiedName": format!("{scope}:{}#{}", report.target, i.id),
        "kind": "resource",
    });
    let mut locations: Vec<Value> = i
        .evidence
        .iter()
        .filter_map(artifact)
        .fold(Vec::<String>::new(), |mut v, a| {
            if !v.contains(&a) {
                v.push(a);
            }
            v
        })
        .into_iter()
        .map(|uri| {
            json!({
                "physicalLocation": { "artifactLocation": { "uri": uri, "uriBaseId": "HOSTROOT" } },
                "logicalLocations": [logical.clone()],
            })
        })
        .collect();
    if locations.is_empty() {
        // GitHub code scanning refuses results without a physical location; "." is the
        // scanned root (or, for an org, nothing more specific than the whole).
        locations.push(json!({
            "physicalLocation": { "artifactLocation": { "uri": ".", "uriBaseId": "HOSTROOT" } },
            "logicalLocations": [logical],
        }));
    }
    let mut text = format!("{}: {}", i.title, i.reason);
    for e in &i.evidence {
        text.push_str(&format!("\n- {}: {}", e.source, e.detail));
    }
    json!({
        "ruleId": i.id,
        "ruleIndex": idx,
        "kind": kind,
        "level": level,
        "message": { "text": text },
        "locations": locations,
        "properties": { "status": i.status.as_str(), "evidence": i.evidence },
    })
}

/// The SARIF 2.1.0 log of a report.
pub fn sarif(report: &Report) -> Value {
    let rules: Vec<Value> = checks::items()
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "name": m.id,
                "shortDescription": { "text": m.title },
                "fullDescription": { "text": format!("Runner security checklist item {} ({}): {}", m.number, section_title(m.section), m.title) },
                "help": { "text": format!("See docs/scan-host.md#{} for how this item is evaluated.", m.id) },
                "defaultConfiguration": { "level": "error" },
                "properties": { "tags": ["security", "self-hosted-runner", section_title(m.section)] },
            })
        })
        .collect();
    // Passing items are not results (GitHub would list them as alerts); the summary in the
    // run's properties and the JSON output keep the full record.
    let results: Vec<Value> = report
        .items
        .iter()
        .filter(|i| i.status != Status::Pass)
        .map(|i| {
            let idx = checks::items()
                .iter()
                .position(|m| m.id == i.id)
                .unwrap_or(0);
            sarif_result(report, idx, i)
        })
        .collect();
    let root = if report.kind == ReportKind::Host {
        let t = report.target.trim_end_matches('/');
        format!("file://{}/", t.replace('%', "%25").replace(' ', "%20"))
    } else {
        "file:///".to_owned()
    };
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "airlock",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            } },
            "automationDetails": { "id": format!("airlock/scan-{}/", match report.kind { ReportKind::Host => "host", ReportKind::Org => "org" }) },
            "originalUriBaseIds": { "HOSTROOT": { "uri": root } },
            "results": results,
            "properties": { "summary": report.summary, "target": report.target },
        }]
    })
}
