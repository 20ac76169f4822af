//! Loading a workflow's YAML into `marked_yaml` nodes (positions kept), with what GitHub accepts
//! and `marked_yaml`'s own loader refuses: anchors, aliases and merge keys (`<<:`).
//!
//! Why not another crate: `marked_yaml` 0.8 refuses anchors outright, `saphyr`/`yaml_rust2`'s
//! document loaders resolve aliases but drop positions, and `serde_yaml` is unmaintained. This
//! keeps `yaml_rust2`'s parser (the one `marked_yaml` uses) and builds the same nodes from its
//! events, resolving each alias to a copy of its anchored node. The copy's top node is placed
//! at the alias (a finding about `runs-on: *runner` points at the alias), the nodes inside it
//! stay at the anchor. An alias bomb (billion laughs) is bounded: a document that expands past
//! [`MAX_NODES`] nodes is refused, not built.

use std::collections::HashMap;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{LoadError, Marker, Node, Span};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker as YamlMarker, TScalarStyle};

/// Nodes a document may expand to, aliases counted at their expanded size. Real workflows
/// have a few thousand; this leaves room for the largest and stops a bomb early.
pub const MAX_NODES: usize = 200_000;

/// Why a file could not be loaded.
#[derive(Debug)]
pub enum YamlError {
    /// What `marked_yaml`'s loader would have said.
    Load(LoadError),
    /// The aliases expand past [`MAX_NODES`] nodes.
    AliasBomb(Marker),
}

/// Alias uses remembered for findings (a file with more still loads; later uses are not
/// named in findings).
const MAX_ALIAS_USES: usize = 10_000;

/// Where an alias was used and the anchor it expands, so a finding can name both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasUse {
    /// The anchor's name, without `&`/`*` (empty when it could not be read back).
    pub name: String,
    /// 1-based line and column of the `*alias`.
    pub alias: (usize, usize),
    /// 1-based line and column of the anchored node.
    pub anchor: (usize, usize),
    /// First and last line of the anchored node's content.
    pub anchor_lines: (usize, usize),
}

/// A loaded document and the aliases it used.
#[derive(Debug)]
pub struct Doc {
    /// The top-level node, aliases expanded.
    pub root: Node,
    /// Every alias use, in file order (at most [`MAX_ALIAS_USES`]).
    pub aliases: Vec<AliasUse>,
}

/// Closing brackets re-indented at most (each costs one more parse).
const MAX_REINDENTS: usize = 64;

/// Loads one YAML document whose top level is a mapping.
///
/// GitHub (Go's yaml) accepts a multi-line flow collection whose closing `]` or `}` sits at
/// its key's column (`paths: [` … `]`), which the YAML spec and `yaml-rust2` refuse ("invalid
/// indentation"; yaml-rust2#30, saphyr#55). Such a line is re-indented to the line above it and
/// the text parsed again: only that line's columns move.
pub fn load(text: &str) -> Result<Node, YamlError> {
    load_doc(text).map(|d| d.root)
}

/// As [`load`], with the aliases the document used.
pub fn load_doc(text: &str) -> Result<Doc, YamlError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for _ in 0..MAX_REINDENTS {
        match load_once(&text) {
            Err(YamlError::Load(LoadError::ScanError(m, se)))
                if se.info() == "invalid indentation" =>
            {
                match reindent_closing(&text, m.line()) {
                    Some(t) => text = std::borrow::Cow::Owned(t),
                    None => return Err(YamlError::Load(LoadError::ScanError(m, se))),
                }
            }
            other => return other,
        }
    }
    load_once(&text)
}

/// `text` with line `line` (1-based) indented like the nearest non-blank line above it, if
/// that line starts with a closing `]` or `}` and needs it.
fn reindent_closing(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let i = line.checked_sub(1)?;
    let target = *lines.get(i)?;
    let body = target.trim_start_matches(' ');
    if !(body.starts_with(']') || body.starts_with('}')) {
        return None;
    }
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let above = lines[..i].iter().rev().find(|l| !l.trim().is_empty())?;
    let want = indent(above);
    if want <= indent(target) {
        return None;
    }
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    out[i] = format!("{}{body}", " ".repeat(want));
    Some(out.join("\n"))
}

fn load_once(text: &str) -> Result<Doc, YamlError> {
    let mut l = Loader::default();
    let mut parser = Parser::new(text.chars());
    if let Err(se) = parser.load(&mut l, false) {
        let m = marker(*se.marker());
        return Err(YamlError::Load(LoadError::ScanError(m, se)));
    }
    if let Some(e) = l.error {
        return Err(e);
    }
    let mut aliases = std::mem::take(&mut l.uses);
    for u in &mut aliases {
        u.name = alias_name(text, u.alias);
    }
    let root = match l.root {
        // As `marked_yaml::parse_yaml` does: the top level of a workflow is a mapping.
        Some(n) if n.as_mapping().is_none() => {
            let at = n
                .span()
                .start()
                .copied()
                .unwrap_or_else(|| Marker::new(0, 0, 1, 1));
            return Err(YamlError::Load(LoadError::TopLevelMustBeMapping(at)));
        }
        Some(n) => n,
        None => Node::from(MarkedMappingNode::new_empty(Span::new_blank())),
    };
    Ok(Doc { root, aliases })
}

/// The name of the alias written at `at` (`*name`), read back from the text.
fn alias_name(text: &str, (line, col): (usize, usize)) -> String {
    let Some(l) = text.split('\n').nth(line.saturating_sub(1)) else {
        return String::new();
    };
    l.chars()
        .skip(col.saturating_sub(1))
        .skip_while(|c| *c == '*')
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
        .take(100)
        .collect()
}

/// First and last line of every node start within `n` (keys included).
fn line_range(n: &Node) -> (usize, usize) {
    fn walk(n: &Node, r: &mut (usize, usize)) {
        if let Some(m) = n.span().start() {
            r.0 = r.0.min(m.line());
            r.1 = r.1.max(m.line());
        }
        match n {
            Node::Scalar(_) => {}
            Node::Sequence(s) => s.iter().for_each(|x| walk(x, r)),
            Node::Mapping(m) => {
                for (k, v) in m.iter() {
                    if let Some(km) = k.span().start() {
                        r.0 = r.0.min(km.line());
                        r.1 = r.1.max(km.line());
                    }
                    walk(v, r);
                }
            }
        }
    }
    let mut r = (usize::MAX, 0);
    walk(n, &mut r);
    if r.0 > r.1 {
        (0, 0)
    } else {
        r
    }
}

fn marker(m: YamlMarker) -> Marker {
    Marker::new(0, m.index(), m.line(), m.col() + 1)
}

enum Frame {
    Seq {
        start: Marker,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Marker,
        anchor: usize,
        entries: Vec<(MarkedScalarNode, Node)>,
        /// Entries merged in with `<<:`; explicit keys win over them.
        merged: Vec<(MarkedScalarNode, Node)>,
        key: Option<MarkedScalarNode>,
        key_plain: bool,
    },
}

/// An anchored node, where it starts (line, column) and the lines its content spans.
type Anchored = (Node, (usize, usize), (usize, usize));

#[derive(Default)]
struct Loader {
    stack: Vec<Frame>,
    /// Anchored nodes by the parser's id, with their position and line range.
    anchors: HashMap<usize, Anchored>,
    uses: Vec<AliasUse>,
    root: Option<Node>,
    error: Option<YamlError>,
    nodes: usize,
}

/// How many nodes `n` holds (itself included).
fn size(n: &Node) -> usize {
    match n {
        Node::Scalar(_) => 1,
        Node::Sequence(s) => 1 + s.iter().map(size).sum::<usize>(),
        Node::Mapping(m) => 1 + m.values().map(|v| 1 + size(v)).sum::<usize>(),
    }
}

/// A copy of `n` whose own position is `at` (its children keep theirs).
fn placed_at(n: &Node, at: Marker) -> Node {
    let span = Span::new_start(at);
    match n {
        Node::Scalar(s) => Node::from(MarkedScalarNode::new(span, s.as_str())),
        Node::Sequence(s) => Node::from(MarkedSequenceNode::new(span, s.to_vec())),
        Node::Mapping(m) => {
            let mut c = MarkedMappingNode::new_empty(span);
            for (k, v) in m.iter() {
                c.insert(k.clone(), v.clone());
            }
            Node::from(c)
        }
    }
}

impl Loader {
    fn fail(&mut self, e: YamlError) {
        self.error.get_or_insert(e);
    }

    /// A finished node goes where the parser is: the root, a sequence item, a key or a value.
    /// `plain`: the node is a plain (unquoted) scalar (only a plain `<<` is a merge key).
    fn value(&mut self, node: Node, anchor: usize, plain: bool) {
        if anchor != 0 {
            let at = node
                .span()
                .start()
                .map(|m| (m.line(), m.column()))
                .unwrap_or((0, 0));
            let lines = line_range(&node);
            self.anchors.insert(anchor, (node.clone(), at, lines));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                merged,
                key,
                key_plain,
                ..
            }) => match key.take() {
                None => match node {
                    Node::Scalar(s) => {
                        *key = Some(s);
                        *key_plain = plain;
                    }
                    other => {
                        let at = other
                            .span()
                            .start()
                            .copied()
                            .unwrap_or_else(|| Marker::new(0, 0, 1, 1));
                        self.fail(YamlError::Load(LoadError::MappingKeyMustBeScalar(at)));
                    }
                },
                Some(k) if k.as_str() == "<<" && *key_plain => {
                    // A merge key: a mapping, or a sequence of mappings, whose entries this
                    // mapping takes unless it has them itself.
                    let sources: Vec<&Node> = match &node {
                        Node::Mapping(_) => vec![&node],
                        Node::Sequence(s) => s.iter().collect(),
                        Node::Scalar(_) => vec![],
                    };
                    for src in sources {
                        if let Node::Mapping(m) = src {
                            for (mk, mv) in m.iter() {
                                if !merged.iter().any(|(x, _)| x.as_str() == mk.as_str()) {
                                    merged.push((mk.clone(), mv.clone()));
                                }
                            }
                        }
                    }
                }
                Some(k) => {
                    // As `marked_yaml::parse_yaml`: a repeated key's last value wins.
                    entries.retain(|(x, _)| x.as_str() != k.as_str());
                    entries.push((k, node));
                }
            },
        }
    }

    fn count(&mut self, n: usize, at: Marker) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(YamlError::AliasBomb(at));
            return false;
        }
        true
    }
}

impl MarkedEventReceiver for Loader {
    fn on_event(&mut self, ev: Event, mark: YamlMarker) {
        if self.error.is_some() {
            return;
        }
        let at = marker(mark);
        match ev {
            Event::Scalar(v, style, anchor, tag) => {
                if tag.is_some() {
                    return self.fail(YamlError::Load(LoadError::UnexpectedTag(at)));
                }
                if !self.count(1, at) {
                    return;
                }
                let s = MarkedScalarNode::new(Span::new_start(at), v);
                self.value(Node::from(s), anchor, matches!(style, TScalarStyle::Plain));
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
                if tag.is_some() =>
            {
                let _ = anchor;
                self.fail(YamlError::Load(LoadError::UnexpectedTag(at)));
            }
            Event::SequenceStart(anchor, _) => {
                if self.count(1, at) {
                    self.stack.push(Frame::Seq {
                        start: at,
                        anchor,
                        items: Vec::new(),
                    });
                }
            }
            Event::MappingStart(anchor, _) => {
                if self.count(1, at) {
                    self.stack.push(Frame::Map {
                        start: at,
                        anchor,
                        entries: Vec::new(),
                        merged: Vec::new(),
                        key: None,
                        key_plain: false,
                    });
                }
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    start,
                    anchor,
                    items,
                }) = self.stack.pop()
                {
                    let node = MarkedSequenceNode::new(Span::new_with_marks(start, at), items);
                    self.value(Node::from(node), anchor, false);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                    merged,
                    ..
                }) = self.stack.pop()
                {
                    let mut m = MarkedMappingNode::new_empty(Span::new_with_marks(start, at));
                    for (k, v) in merged {
                        if !entries.iter().any(|(x, _)| x.as_str() == k.as_str()) {
                            m.insert(k, v);
                        }
                    }
                    for (k, v) in entries {
                        m.insert(k, v);
                    }
                    self.value(Node::from(m), anchor, false);
                }
            }
            Event::Alias(id) => {
                let Some((target, anchor_at, anchor_lines)) = self.anchors.get(&id).cloned() else {
                    // The parser refuses unknown anchors before this; never expand nothing.
                    return self.fail(YamlError::Load(LoadError::UnexpectedAnchor(at)));
                };
                if self.uses.len() < MAX_ALIAS_USES {
                    self.uses.push(AliasUse {
                        name: String::new(),
                        alias: (at.line(), at.column()),
                        anchor: anchor_at,
                        anchor_lines,
                    });
                }
                if self.count(size(&target), at) {
                    self.value(placed_at(&target, at), 0, false);
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_on(n: &Node) -> Vec<String> {
        let job = n
            .as_mapping()
            .and_then(|m| m.get_mapping("jobs"))
            .and_then(|j| j.get_mapping("build"))
            .expect("jobs.build");
        match job.get_node("runs-on").expect("runs-on") {
            Node::Sequence(s) => s
                .iter()
                .filter_map(|x| x.as_scalar())
                .map(|x| x.as_str().to_owned())
                .collect(),
            Node::Scalar(s) => vec![s.as_str().to_owned()],
            Node::Mapping(_) => vec![],
        }
    }

    #[test]
    fn aliases_expand_to_their_anchor_and_sit_at_the_alias() {
        let text = "x-runner: &runner [self-hosted, linux]\non: pull_request\njobs:\n  build:\n    runs-on: *runner\n    steps: []\n";
        let n = load(text).expect("loads");
        assert_eq!(runs_on(&n), ["self-hosted", "linux"]);
        let job = n
            .as_mapping()
            .and_then(|m| m.get_mapping("jobs"))
            .and_then(|j| j.get_mapping("build"))
            .expect("job");
        let at = job
            .get_node("runs-on")
            .and_then(|r| r.span().start().copied())
            .expect("pos");
        assert_eq!((at.line(), at.column()), (5, 14), "the alias's position");
    }

    #[test]
    fn alias_uses_name_the_alias_and_its_anchor() {
        let text = "x-steps: &setup\n  - run: make\n  - run: ./test\nx-r: &runner [self-hosted, linux]\njobs:\n  build:\n    runs-on: *runner\n    steps: *setup\n";
        let d = load_doc(text).expect("loads");
        let got: Vec<_> = d
            .aliases
            .iter()
            .map(|u| (u.name.as_str(), u.alias, u.anchor_lines))
            .collect();
        assert_eq!(
            got,
            [("runner", (7, 14), (4, 4)), ("setup", (8, 12), (2, 3))]
        );
    }

    #[test]
    fn merge_keys_fill_in_and_explicit_keys_win() {
        let text = "defaults: &d\n  runs-on: [self-hosted, gpu]\n  timeout-minutes: 5\njobs:\n  build:\n    <<: *d\n    timeout-minutes: 9\n";
        let n = load(text).expect("loads");
        assert_eq!(runs_on(&n), ["self-hosted", "gpu"]);
        let t = n
            .as_mapping()
            .and_then(|m| m.get_mapping("jobs"))
            .and_then(|j| j.get_mapping("build"))
            .and_then(|b| b.get_scalar("timeout-minutes"))
            .map(|s| s.as_str().to_owned());
        assert_eq!(t.as_deref(), Some("9"));
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly_not_built() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in "bcdefghijk".chars() {
            text.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let t = std::time::Instant::now();
        assert!(matches!(load(&text), Err(YamlError::AliasBomb(_))));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn tags_and_bad_syntax_are_still_errors_as_marked_yaml_has_them() {
        assert!(matches!(
            load("a: !!str x\n"),
            Err(YamlError::Load(LoadError::UnexpectedTag(_)))
        ));
        assert!(matches!(
            load("- a\n"),
            Err(YamlError::Load(LoadError::TopLevelMustBeMapping(_)))
        ));
        assert!(matches!(
            load("a: [\n"),
            Err(YamlError::Load(LoadError::ScanError(..)))
        ));
        assert!(matches!(
            load("a: *nope\n"),
            Err(YamlError::Load(LoadError::ScanError(..)))
        ));
    }

    #[test]
    fn a_closing_bracket_at_its_keys_column_is_accepted_as_github_does() {
        // llama.cpp's build-self-hosted.yml and accelerate's workflows are written like this.
        let text = "on:\n  pull_request:\n    paths: [\n      'src/**',\n      'ggml/**'\n    ]\njobs:\n  build:\n    runs-on: [self-hosted, gpu]\n    steps: []\n";
        let n = load(text).expect("loads");
        assert_eq!(runs_on(&n), ["self-hosted", "gpu"]);
        let paths = n
            .as_mapping()
            .and_then(|m| m.get_mapping("on"))
            .and_then(|o| o.get_mapping("pull_request"))
            .and_then(|p| p.get_sequence("paths"))
            .map(|s| s.len());
        assert_eq!(paths, Some(2));
        // Block indentation errors elsewhere are still errors.
        assert!(load("a:\n  b: 1\n c: 2\n").is_err());
    }

    #[test]
    fn only_a_plain_merge_key_merges() {
        let n = load("d: &d {x: 1}\nm:\n  '<<': *d\n").expect("loads");
        let m = n.as_mapping().and_then(|m| m.get_mapping("m")).expect("m");
        assert!(m.get_node("<<").is_some() && m.get_node("x").is_none());
    }
}
