//! Findings and their renderers (plain text, JSON, SARIF 2.1.0, GitHub workflow commands).
//!
//! Nothing here knows about workflows: the host and organisation scanners can build
//! [`Finding`]s and reuse every renderer.

use airlock_text::{escape, Escaped};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::json;

/// How bad a finding is. Ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; not a risk by itself.
    Info,
    /// A weakness that needs another mistake to matter.
    Low,
    /// A real weakness.
    Medium,
    /// Exploitable under common conditions.
    High,
    /// Exploitable by anyone who can open a pull request or comment.
    Critical,
}

impl Severity {
    /// One level less severe (`Info` stays `Info`).
    pub fn lower(self) -> Severity {
        match self {
            Severity::Critical => Severity::High,
            Severity::High => Severity::Medium,
            Severity::Medium => Severity::Low,
            Severity::Low | Severity::Info => Severity::Info,
        }
    }

    /// All severities, least severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The process exit code when this is the highest severity found (see docs/scan.md).
    pub fn exit_code(self) -> i32 {
        match self {
            Severity::Info => 0,
            Severity::Low => 11,
            Severity::Medium => 12,
            Severity::High => 13,
            Severity::Critical => 14,
        }
    }

    fn sarif_level(self) -> &'static str {
        match self {
            Severity::Info | Severity::Low => "note",
            Severity::Medium => "warning",
            Severity::High | Severity::Critical => "error",
        }
    }

    /// GitHub code scanning's `security-severity` (a CVSS-like score as a string).
    fn security_severity(self) -> &'static str {
        match self {
            Severity::Info => "0.0",
            Severity::Low => "3.0",
            Severity::Medium => "5.5",
            Severity::High => "8.0",
            Severity::Critical => "9.5",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How sure the scanner is that the finding is real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Inferred from naming or partial information.
    Low,
    /// Likely, but depends on something the scanner cannot see (e.g. runner labels).
    Medium,
    /// Read directly from the file.
    High,
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        })
    }
}

/// Where a finding is: a file and a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// Path as given on the command line (relative paths stay relative).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// Static description of a rule, for documentation and SARIF's `rules` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    /// Stable id, e.g. `template-injection`.
    pub id: &'static str,
    /// One line: what it finds.
    pub summary: &'static str,
    /// The usual severity (a finding may be raised or lowered from it).
    pub default_severity: Severity,
    /// Link to the documentation section.
    pub help_uri: &'static str,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Rule id.
    pub rule: &'static str,
    /// Severity.
    pub severity: Severity,
    /// Confidence.
    pub confidence: Confidence,
    /// Primary location: the offending key.
    #[serde(flatten)]
    pub location: Location,
    /// One line saying what is wrong here.
    pub title: String,
    /// One paragraph: why it matters.
    pub explanation: String,
    /// How to fix it.
    pub fix: String,
    /// Other places the finding is about (the anchor an alias expands, the aliases that
    /// expand an anchor).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

/// A second place a finding points at, in the same file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is there, e.g. "the anchor &runner".
    pub message: String,
}

impl Finding {
    /// Starts a finding. A finding cannot exist without its rule and location; everything
    /// else has a default taken from the rule.
    pub fn new(rule: &RuleInfo, location: Location) -> Self {
        Self {
            rule: rule.id,
            severity: rule.default_severity,
            confidence: Confidence::High,
            location,
            title: rule.summary.to_owned(),
            explanation: String::new(),
            fix: String::new(),
            related: Vec::new(),
        }
    }
    /// Sets the severity.
    pub fn severity(mut self, s: Severity) -> Self {
        self.severity = s;
        self
    }
    /// Sets the confidence.
    pub fn confidence(mut self, c: Confidence) -> Self {
        self.confidence = c;
        self
    }
    /// Sets the one-line title.
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = t.into();
        self
    }
    /// Sets the explanation paragraph.
    pub fn explain(mut self, t: impl Into<String>) -> Self {
        self.explanation = t.into();
        self
    }
    /// Sets the fix.
    pub fn fix(mut self, t: impl Into<String>) -> Self {
        self.fix = t.into();
        self
    }
}

/// Counts of what was left out of the findings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Suppressed {
    /// By an inline `# airlock: ignore[rule]` comment.
    pub inline: usize,
    /// By the config file's `[ignore]` table.
    pub config: usize,
    /// Below `--min-severity`.
    pub below_min_severity: usize,
}

/// The result of a scan, ready to render.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Name of the scan, e.g. `workflows`.
    pub scan: String,
    /// Number of files read.
    pub files_scanned: usize,
    /// Findings, sorted by file, line, column, rule.
    pub findings: Vec<Finding>,
    /// What was left out.
    pub suppressed: Suppressed,
    /// Messages for people that are not findings (e.g. "no workflows found").
    pub notes: Vec<String>,
}

impl Report {
    /// Highest severity among the findings.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// The exit code: 0 with no finding above `info`, else the highest severity's code.
    pub fn exit_code(&self) -> i32 {
        self.max_severity().map(Severity::exit_code).unwrap_or(0)
    }

    /// Findings per severity, every severity present (zero included).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m: BTreeMap<&'static str, usize> =
            Severity::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for f in &self.findings {
            *m.entry(f.severity.as_str()).or_default() += 1;
        }
        m
    }

    /// Sorts findings into their canonical order.
    pub fn sort(&mut self) {
        self.findings
            .sort_by(|a, b| (&a.location, a.rule, &a.title).cmp(&(&b.location, b.rule, &b.title)));
        self.findings.dedup();
    }

    fn summary_line(&self) -> String {
        let c = self.counts();
        let mut parts: Vec<String> = Severity::ALL
            .iter()
            .rev()
            .filter(|s| c[s.as_str()] > 0)
            .map(|s| format!("{} {}", c[s.as_str()], s))
            .collect();
        if parts.is_empty() {
            parts.push("no findings".to_owned());
        }
        let s = &self.suppressed;
        format!(
            "{} finding{} ({}) in {} file{}; suppressed: {} inline, {} by config, {} below minimum severity",
            self.findings.len(),
            if self.findings.len() == 1 { "" } else { "s" },
            parts.join(", "),
            self.files_scanned,
            if self.files_scanned == 1 { "" } else { "s" },
            s.inline,
            s.config,
            s.below_min_severity
        )
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Human-readable, grouped by file, coloured on a terminal.
    #[default]
    Plain,
    /// One JSON document (schema in docs/scan.md).
    Json,
    /// SARIF 2.1.0, for GitHub code scanning.
    Sarif,
    /// GitHub workflow commands (`::error file=…::`), for annotations in a workflow run.
    Github,
}

/// Renders `report` in `format`. `rules` feeds SARIF's rule metadata; `color` is used by
/// the plain format only.
pub fn render(
    report: &Report,
    format: Format,
    rules: &[RuleInfo],
    color: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Plain => render_plain(report, color, out),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &json_value(report))?;
            writeln!(out)
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &sarif(report, rules))?;
            writeln!(out)
        }
        Format::Github => render_github(report, out),
    }
}

fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

fn sev_color(s: Severity) -> &'static str {
    match s {
        Severity::Info => "2",
        Severity::Low => "36",
        Severity::Medium => "33",
        Severity::High => "31",
        Severity::Critical => "1;31",
    }
}

fn render_plain(report: &Report, color: bool, out: &mut dyn Write) -> io::Result<()> {
    // File names, titles and explanations quote the workflow files, which whoever opened a
    // pull request wrote: every one is escaped before it reaches a terminal.
    for n in &report.notes {
        writeln!(out, "{}", Escaped(n))?;
    }
    let mut current: Option<&str> = None;
    for f in &report.findings {
        if current != Some(f.location.file.as_str()) {
            if current.is_some() {
                writeln!(out)?;
            }
            writeln!(out, "{}", paint(color, "1;4", &escape(&f.location.file)))?;
            current = Some(&f.location.file);
        }
        writeln!(
            out,
            "  {}:{} {} {} {} (confidence: {})",
            f.location.line,
            f.location.col,
            paint(
                color,
                sev_color(f.severity),
                &format!("{:<8}", f.severity.as_str())
            ),
            paint(color, "1", f.rule),
            Escaped(&f.title),
            f.confidence
        )?;
        if !f.explanation.is_empty() {
            writeln!(out, "      {}", Escaped(&f.explanation))?;
        }
        if !f.fix.is_empty() {
            writeln!(
                out,
                "      {} {}",
                paint(color, "32", "fix:"),
                Escaped(&f.fix)
            )?;
        }
        for r in &f.related {
            writeln!(
                out,
                "      also {}:{}: {}",
                r.line,
                r.col,
                Escaped(&r.message)
            )?;
        }
    }
    if !report.findings.is_empty() {
        writeln!(out)?;
    }
    writeln!(out, "{}", paint(color, "1", &report.summary_line()))
}

/// The JSON output (documented in docs/scan.md, "JSON output").
pub fn json_value(report: &Report) -> serde_json::Value {
    json!({
        "version": 1,
        "tool": "airlock",
        "scan": report.scan,
        "files_scanned": report.files_scanned,
        "findings": report.findings,
        "summary": {
            "total": report.findings.len(),
            "by_severity": report.counts(),
            "max_severity": report.max_severity(),
            "exit_code": report.exit_code(),
            "suppressed": report.suppressed,
        },
        "notes": report.notes,
    })
}

/// Escapes a workflow-command property value (`%`, CR, LF, `:` and `,`).
fn gh_prop(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
        .replace(':', "%3A")
        .replace(',', "%2C")
}

/// Escapes a workflow-command message (`%`, CR, LF).
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn render_github(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    for f in &report.findings {
        let cmd = match f.severity {
            Severity::Info | Severity::Low => "notice",
            Severity::Medium => "warning",
            Severity::High | Severity::Critical => "error",
        };
        writeln!(
            out,
            "::{cmd} file={},line={},col={},title={}::{}",
            gh_prop(&escape(&f.location.file)),
            f.location.line,
            f.location.col,
            gh_prop(&format!("airlock {} ({})", f.rule, f.severity)),
            gh_data(&format!(
                "{}\n{}\nFix: {}{}",
                escape(&f.title),
                escape(&f.explanation),
                escape(&f.fix),
                f.related
                    .iter()
                    .map(|r| format!("\nAlso {}:{}: {}", r.line, r.col, escape(&r.message)))
                    .collect::<String>()
            ))
        )?;
    }
    for n in &report.notes {
        writeln!(out, "::notice::{}", gh_data(&escape(n)))?;
    }
    writeln!(out, "{}", gh_data(&report.summary_line()))
}

/// A SARIF 2.1.0 log of the report, with `rules` as the driver's rule metadata.
pub fn sarif(report: &Report, rules: &[RuleInfo]) -> serde_json::Value {
    let index: BTreeMap<&str, usize> = rules.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let rules_json: Vec<_> = rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.summary },
                "fullDescription": { "text": r.summary },
                "helpUri": r.help_uri,
                "help": { "text": format!("{} See {}", r.summary, r.help_uri) },
                "defaultConfiguration": { "level": r.default_severity.sarif_level() },
                "properties": {
                    "tags": ["security"],
                    "security-severity": r.default_severity.security_severity(),
                },
            })
        })
        .collect();
    let results: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            let mut r = json!({
                "ruleId": f.rule,
                "level": f.severity.sarif_level(),
                "message": { "text": format!("{}\n\n{}\n\nFix: {}", f.title, f.explanation, f.fix) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": sarif_uri(&f.location.file) },
                        "region": {
                            "startLine": f.location.line.max(1),
                            "startColumn": f.location.col.max(1),
                        },
                    },
                }],
                "partialFingerprints": {
                    "airlock/v1": format!("{}:{}:{}", f.rule, f.location.file, f.title),
                },
                "properties": {
                    "severity": f.severity,
                    "confidence": f.confidence,
                    "security-severity": f.severity.security_severity(),
                },
            });
            if let (Some(i), Some(obj)) = (index.get(f.rule), r.as_object_mut()) {
                obj.insert("ruleIndex".to_owned(), json!(i));
            }
            if let (false, Some(obj)) = (f.related.is_empty(), r.as_object_mut()) {
                let related: Vec<_> = f
                    .related
                    .iter()
                    .enumerate()
                    .map(|(id, x)| {
                        json!({
                            "id": id,
                            "message": { "text": x.message },
                            "physicalLocation": {
                                "artifactLocation": { "uri": sarif_uri(&f.location.file) },
                                "region": {
                                    "startLine": x.line.max(1),
                                    "startColumn": x.col.max(1),
                                },
                            },
                        })
                    })
                    .collect();
                obj.insert("relatedLocations".to_owned(), json!(related));
            }
            r
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "airlock",
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://github.com/airlock/airlock/blob/main/docs/scan.md",
                    "rules": rules_json,
                },
            },
            "results": results,
        }],
    })
}

/// A relative path as a SARIF URI reference: forward slashes, no leading `./`, spaces and
/// `%` escaped.
fn sarif_uri(path: &str) -> String {
    let p = path.replace('\\', "/");
    let p = p.strip_prefix("./").unwrap_or(&p);
    p.replace('%', "%25").replace(' ', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: RuleInfo = RuleInfo {
        id: "demo",
        summary: "demo rule",
        default_severity: Severity::Medium,
        help_uri: "https://example.invalid/demo",
    };

    fn report() -> Report {
        let loc = |l| Location {
            file: "./a b/x.yml".into(),
            line: l,
            col: 3,
        };
        Report {
            scan: "workflows".into(),
            files_scanned: 1,
            findings: vec![
                Finding::new(&RULE, loc(2))
                    .severity(Severity::High)
                    .fix("do x"),
                Finding::new(&RULE, loc(1)).title("a: b, c%\nd"),
            ],
            ..Report::default()
        }
    }

    #[test]
    fn exit_code_is_highest_severity() {
        let mut r = report();
        assert_eq!(r.exit_code(), 13);
        r.findings.retain(|f| f.severity == Severity::Medium);
        assert_eq!(r.exit_code(), 12);
        r.findings[0].severity = Severity::Info;
        assert_eq!(r.exit_code(), 0);
        r.findings.clear();
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn github_commands_escape_properties_and_data() {
        let mut r = report();
        r.sort();
        let mut out = Vec::new();
        render(&r, Format::Github, &[RULE], false, &mut out).expect("render");
        let s = String::from_utf8(out).expect("utf8");
        let first = s.lines().next().expect("a line");
        assert!(
            first.starts_with("::warning file=./a b/x.yml,line=1,col=3,title=airlock demo (medium)::a: b, c%25\\nd%0A"),
            "{first}"
        );
        assert_eq!(s.lines().count(), 3, "{s}");
    }

    #[test]
    fn plain_and_github_output_escape_what_the_workflow_chose() {
        let mut r = report();
        r.findings[1].title = "job \u{1b}[2K\r\n✔ no findings\u{202e}".into();
        r.findings[1].location.file = "./.github/workflows/\u{1b}]0;x\u{7}.yml".into();
        for f in [Format::Plain, Format::Github] {
            let mut out = Vec::new();
            render(&r, f, &[RULE], true, &mut out).expect("render");
            let s = String::from_utf8(out).expect("utf8");
            // Only airlock's own colours (plain, colour on) may carry ESC: strip them first.
            let stripped = s
                .replace("\x1b[0m", "")
                .replace("\x1b[1m", "")
                .replace("\x1b[1;4m", "")
                .replace("\x1b[33m", "")
                .replace("\x1b[32m", "")
                .replace("\x1b[1;31m", "")
                .replace("\x1b[31m", "");
            assert!(
                !stripped
                    .chars()
                    .any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')),
                "{f:?}: {stripped:?}"
            );
            assert!(!s.lines().any(|l| l.starts_with("✔")), "{s}");
        }
    }

    #[test]
    fn sarif_uri_is_relative_and_escaped() {
        assert_eq!(sarif_uri("./a b/x%.yml"), "a%20b/x%25.yml");
    }
}
