//! One way to print a string that a job, a workflow file, an image or a webhook chose.
//!
//! airlock's human-readable output (stderr alert summaries, `audit show`, drill tables, `scan`
//! reports, serve's logs, error messages) carries strings that hostile input picked: file
//! names, command lines, DNS names, workflow job names, image entry names. Printed raw, an ESC
//! sequence can rewrite or hide lines on the operator's terminal, a CR or LF can forge a line
//! ("all clear"), and a bidi override can make text read differently from what it is. Every
//! such string goes through [`escape`] (or the [`Escaped`] display wrapper) before it reaches
//! a human; JSON output is left to serde, whose escaping machines read correctly.
//!
//! What is escaped, and why each:
//! - C0 controls, DEL and C1 controls (`char::is_control`): terminal commands, CR/LF/TAB
//!   line forging; written `\n`, `\r`, `\t`, `\e`, or `\x{hh}` / `\u{hhhh}`.
//! - Unicode format and separator characters that change how text *reads* without being
//!   visible: bidi embeddings, overrides and isolates, LRM/RLM/ALM, zero-width characters,
//!   the word joiner and invisible operators, the BOM, line and paragraph separators, and
//!   interlinear annotations; written `\u{hhhh}`.
//! - The backslash itself, as `\\`, so an escaped string can never be confused with a raw one
//!   that merely contains the text `\n`.
//!
//! Written by hand (a short `match`), because the crates that escape for terminals either keep
//! bidi controls (`escape_debug` keeps some format characters printable) or pull in full
//! Unicode tables for one category list that is short and stable.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

#[cfg(feature = "tracing")]
pub mod log;

/// Whether `c` must not reach a terminal as itself.
pub fn is_unsafe(c: char) -> bool {
    c == '\\' || c.is_control() || is_invisible_format(c)
}

/// Unicode format (Cf) and separator (Zl, Zp) characters that change how text reads: bidi
/// controls, zero-width characters, invisible operators, BOM, interlinear annotation marks.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                     // soft hyphen (invisible unless at a line break)
        | '\u{061C}'                   // Arabic letter mark
        | '\u{115F}' | '\u{1160}'      // Hangul fillers (render as nothing)
        | '\u{180E}'                   // Mongolian vowel separator
        | '\u{200B}'..='\u{200F}'      // zero-width space/non-joiner/joiner, LRM, RLM
        | '\u{2028}'..='\u{202E}'      // line/paragraph separators, LRE RLE PDF LRO RLO
        | '\u{2060}'..='\u{206F}'      // word joiner, invisible operators, LRI RLI FSI PDI, deprecated formats
        | '\u{3164}'                   // Hangul filler
        | '\u{FE00}'..='\u{FE0F}'      // variation selectors
        | '\u{FEFF}'                   // BOM / zero-width no-break space
        | '\u{FFA0}'                   // halfwidth Hangul filler
        | '\u{FFF9}'..='\u{FFFB}'      // interlinear annotation
        | '\u{E0000}'..='\u{E007F}'    // tag characters (invisible text)
    )
}

/// `s` with every character a terminal would act on, or that changes how text reads, written
/// as a visible escape. Borrowed when nothing needed escaping (the common case).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        c if (c as u32) < 0x100 && is_unsafe(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Shortens `s` to its first `max` bytes (at a character boundary) and says how long it
/// was: for strings a job chose that airlock keeps (a record's name or reason), so that what
/// airlock holds per record stays bounded whatever the job sends.
pub fn clamp(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let total = s.len();
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    let _ = write!(s, "…[{total} bytes]");
}

/// Display wrapper: `format!("{}", Escaped(name))` prints `name` escaped, without allocating
/// when nothing needs escaping. Width and alignment flags apply to the escaped text.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

/// Escapes every line of a multi-line text that airlock composed itself (so its own line
/// breaks stay) but whose lines may hold hostile strings: each line is escaped on its own.
pub fn escape_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&escape(line));
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn clamp_keeps_short_strings_and_cuts_long_ones_at_a_character() {
        let mut s = "short".to_owned();
        clamp(&mut s, 10);
        assert_eq!(s, "short");
        let mut s = "é".repeat(10); // 20 bytes, 2 each
        clamp(&mut s, 5);
        assert_eq!(s, "éé…[20 bytes]");
        let mut s = "x".repeat(20_000);
        clamp(&mut s, 253);
        assert!(
            s.starts_with(&"x".repeat(253)) && s.ends_with("…[20000 bytes]"),
            "{s}"
        );
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn esc_cr_lf_and_bidi_are_escaped() {
        assert_eq!(escape("a\u{1b}[2Kb"), "a\\e[2Kb");
        assert_eq!(escape("ok\rFAKE"), "ok\\rFAKE");
        assert_eq!(escape("x\nairlock: all clear"), "x\\nairlock: all clear");
        assert_eq!(escape("invoice\u{202E}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(escape("\u{2066}a\u{2069}"), "\\u{2066}a\\u{2069}");
        assert_eq!(escape("c1\u{9b}31m"), "c1\\x9b31m");
        assert_eq!(escape("del\u{7f}"), "del\\x7f");
        assert_eq!(escape("zw\u{200B}j"), "zw\\u{200b}j");
        assert_eq!(escape("bs\\n"), "bs\\\\n");
        assert_eq!(escape("tag\u{E0041}"), "tag\\u{e0041}");
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in [
            "",
            "/home/runner/work/a b.txt",
            "Grüße, 世界, emoji 🚀",
            "-bash",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn display_wrapper_pads_the_escaped_text() {
        assert_eq!(format!("[{:<6}]", Escaped("a\nb")), "[a\\nb  ]");
    }

    #[test]
    fn escape_lines_keeps_airlocks_own_breaks() {
        assert_eq!(
            escape_lines("one\u{1b}]0;x\u{7}\ntwo"),
            "one\\e]0;x\\x07\ntwo"
        );
    }

    proptest! {
        /// Whatever the input, the output holds no character a terminal acts on and no
        /// invisible format character, and distinct inputs stay distinct.
        #[test]
        fn output_is_always_safe_and_injective(a in any::<String>(), b in any::<String>()) {
            let ea = escape(&a);
            prop_assert!(!ea.chars().any(|c| c.is_control() || is_invisible_format(c)));
            if a != b {
                prop_assert_ne!(ea, escape(&b));
            }
        }
    }
}

/// An error and every source below it, `outer: inner: cause`, as one line (the way anyhow's
/// `{:#}` prints), for places that keep an error as text for people: a job report, a
/// teardown failure. Not escaped: wrap it in [`Escaped`] where it reaches a terminal.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut s = self.0.source();
        while let Some(e) = s {
            write!(f, ": {e}")?;
            s = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_source_is_printed_in_order() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: inner");
    }
}
