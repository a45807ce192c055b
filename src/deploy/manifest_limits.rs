//! Bounds checked on a manifest's text before the YAML library builds anything from it
//! (issue 9, "parser bombs"): flow and block nesting depth, and the size of the document
//! once every alias is expanded, in nodes and in bytes.
//!
//! The check is one linear pass over the text, a YAML lexer that knows just enough:
//! comments, quoted scalars, block scalars, flow brackets, indentation, anchors and
//! aliases. Where it cannot tell, it errs towards counting more (an anchored node is
//! taken to run to the end of its block), so a real manifest — a few dozen nodes — is far
//! from every bound, and a bomb is refused before the YAML parser (whose time grows with
//! the square of the flow nesting) and the value builder (which copies every alias) see
//! it.

use std::collections::HashMap;

/// Deepest nesting of collections (flow brackets plus block levels).
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes in the document with every alias expanded.
pub(crate) const MAX_NODES: u64 = 100_000;
/// Most bytes of the document with every alias expanded.
pub(crate) const MAX_EXPANDED_BYTES: u64 = 4 << 20;

/// Refuses a manifest over a bound, naming it.
pub fn check(text: &str) -> Result<(), LimitError> {
    Scan::new(text).run()
}

/// An anchored node still open: where it started (running totals) and where it ends.
struct Open {
    name: String,
    nodes: u64,
    bytes: u64,
    /// Ends at a line indented at most this much (block), or when the flow depth falls
    /// back to `flow` (a flow collection), or after one scalar.
    end: End,
}

#[derive(Clone, Copy, PartialEq)]
enum End {
    /// The next node is one scalar or one flow collection (decided when it starts).
    NextNode,
    Scalar,
    Flow(usize),
    Block(usize),
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// Running totals with aliases expanded.
    nodes: u64,
    bytes: u64,
    flow: usize,
    /// Block indentation columns open.
    indents: Vec<usize>,
    anchors: HashMap<String, (u64, u64)>,
    open: Vec<Open>,
}

/// A bound crossed: which, and by what (the manifest reports it as its own error).
#[derive(Debug)]
pub struct LimitError {
    pub reason: String,
}

fn limit(what: String) -> LimitError {
    LimitError { reason: what }
}

/// A parser's message with every quoted part (`"…"`, `'…'`, `` `…` ``) blanked: the YAML
/// library quotes the offending value (`invalid type: string "…"`), which may be the
/// first line of a file that is not a manifest.
pub(crate) fn unquoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    for c in msg.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if matches!(c, '"' | '`') {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Scan<'a> {
        Scan {
            b: text.as_bytes(),
            i: 0,
            nodes: 0,
            bytes: 0,
            flow: 0,
            indents: Vec::new(),
            anchors: HashMap::new(),
            open: Vec::new(),
        }
    }

    fn peek(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    fn add(&mut self, nodes: u64, bytes: u64) -> Result<(), LimitError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(limit(format!(
                "more than {MAX_NODES} nodes once aliases are expanded (the alias expansion limit; a manifest needs a few dozen)"
            )));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(limit(format!(
                "more than {MAX_EXPANDED_BYTES} bytes once aliases are expanded (the alias expansion limit)"
            )));
        }
        Ok(())
    }

    fn depth(&self) -> Result<(), LimitError> {
        if self.flow + self.indents.len() > MAX_DEPTH {
            return Err(limit(format!(
                "nesting depth over {MAX_DEPTH} (the manifest nesting limit)"
            )));
        }
        Ok(())
    }

    /// Closes anchored nodes whose end is `pred`.
    fn close(&mut self, pred: impl Fn(End) -> bool) {
        while self.open.last().is_some_and(|top| pred(top.end)) {
            let Some(o) = self.open.pop() else { break };
            self.anchors
                .insert(o.name, (self.nodes - o.nodes, self.bytes - o.bytes));
        }
    }

    /// A node begins here: an anchor waiting for its node learns what it is.
    fn node_starts(&mut self, flow_open: bool) {
        if let Some(top) = self.open.last_mut()
            && top.end == End::NextNode
        {
            top.end = if flow_open {
                End::Flow(self.flow)
            } else {
                End::Scalar
            };
        }
    }

    fn scalar_done(&mut self) {
        self.close(|e| e == End::Scalar);
    }

    fn run(mut self) -> Result<(), LimitError> {
        let mut line_start = true;
        while self.i < self.b.len() {
            if line_start {
                line_start = false;
                self.line_indent()?;
                continue;
            }
            line_start = self.token()?;
        }
        Ok(())
    }

    /// At a line's start: its indentation opens or closes block levels (outside flow
    /// collections), and closes anchored blocks it ends.
    fn line_indent(&mut self) -> Result<(), LimitError> {
        let col = self.b[self.i..].iter().take_while(|c| **c == b' ').count();
        let rest = self.i + col;
        let blank = matches!(self.b.get(rest), None | Some(b'\n' | b'\r' | b'#'));
        if !blank && self.flow == 0 {
            while self.indents.last().is_some_and(|c| *c > col) {
                self.indents.pop();
            }
            if self.indents.last() != Some(&col) {
                self.indents.push(col);
            }
            self.depth()?;
            self.close(|e| matches!(e, End::Block(c) if col <= c));
        }
        self.i = rest;
        Ok(())
    }

    /// One token inside a line; true when it was the line's end.
    fn token(&mut self) -> Result<bool, LimitError> {
        let c = self.b[self.i];
        match c {
            b'\n' => {
                self.i += 1;
                self.scalar_done();
                return Ok(true);
            }
            b' ' | b'\t' | b'\r' | b',' => self.i += 1,
            b'#' => self.skip_line(),
            b'[' | b'{' => {
                self.node_starts(true);
                self.flow += 1;
                self.i += 1;
                self.depth()?;
                self.add(1, 1)?;
            }
            b']' | b'}' => {
                self.flow = self.flow.saturating_sub(1);
                self.i += 1;
                let f = self.flow;
                self.close(|e| e == End::Flow(f));
                self.scalar_done();
            }
            b'-' | b'?' | b':' if matches!(self.peek(1), b' ' | b'\n' | b'\r' | 0) => {
                // An indicator; `- ` nests a sequence at its column.
                if c == b'-' && self.flow == 0 {
                    let col = self.column();
                    self.indents.push(col + 1);
                    self.depth()?;
                }
                self.i += 1;
            }
            b'|' | b'>' if self.flow == 0 => {
                let n = self.skip_block_scalar();
                self.scalar(n)?;
            }
            b'&' => self.anchor(),
            b'*' => self.alias()?,
            b'"' | b'\'' => {
                let n = self.skip_quoted(c);
                self.scalar(n)?;
            }
            _ => {
                let n = self.skip_plain();
                self.scalar(n)?;
            }
        }
        Ok(false)
    }

    /// A scalar of `n` bytes was read.
    fn scalar(&mut self, n: u64) -> Result<(), LimitError> {
        self.node_starts(false);
        self.add(1, n)?;
        self.scalar_done();
        Ok(())
    }

    /// `&name`: an anchored node opens, ending with its block when the line ends here,
    /// else with the node that follows.
    fn anchor(&mut self) {
        let name = self.word();
        let end = if self.rest_of_line_blank() {
            End::Block(self.indents.last().copied().unwrap_or(0))
        } else {
            End::NextNode
        };
        self.open.push(Open {
            name,
            nodes: self.nodes,
            bytes: self.bytes,
            end,
        });
    }

    /// `*name`: counts what the anchor holds, as if copied here.
    fn alias(&mut self) -> Result<(), LimitError> {
        let name = self.word();
        self.node_starts(false);
        let (n, b) = match self.anchors.get(&name) {
            Some(s) => *s,
            // An anchor still open (or so the scan thinks): what it holds so far.
            None => match self.open.iter().rev().find(|o| o.name == name) {
                Some(o) => (self.nodes - o.nodes, self.bytes - o.bytes),
                // Unknown: the YAML parser says so.
                None => (1, 1),
            },
        };
        self.add(n.max(1), b.max(1))?;
        self.scalar_done();
        Ok(())
    }

    fn column(&self) -> usize {
        let start = self.b[..self.i]
            .iter()
            .rposition(|c| *c == b'\n')
            .map_or(0, |p| p + 1);
        self.i - start
    }

    fn skip_line(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
    }

    fn rest_of_line_blank(&self) -> bool {
        self.b[self.i..]
            .iter()
            .take_while(|c| **c != b'\n')
            .all(|c| *c == b' ' || *c == b'\t' || *c == b'\r')
            || self.b[self.i..]
                .iter()
                .take_while(|c| **c != b'\n')
                .find(|c| **c != b' ' && **c != b'\t')
                == Some(&b'#')
    }

    /// An anchor's or alias's name (after its sigil).
    fn word(&mut self) -> String {
        let start = self.i + 1;
        let mut j = start;
        while j < self.b.len()
            && !matches!(
                self.b[j],
                b' ' | b'\t' | b'\n' | b'\r' | b',' | b'[' | b']' | b'{' | b'}'
            )
        {
            j += 1;
        }
        self.i = j;
        String::from_utf8_lossy(&self.b[start..j]).into_owned()
    }

    /// Skips a quoted scalar (it may span lines); returns its length.
    fn skip_quoted(&mut self, q: u8) -> u64 {
        let start = self.i;
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if q == b'"' && c == b'\\' {
                self.i += 2;
                continue;
            }
            if c == q {
                if q == b'\'' && self.peek(1) == b'\'' {
                    self.i += 2;
                    continue;
                }
                self.i += 1;
                break;
            }
            self.i += 1;
        }
        self.i = self.i.min(self.b.len());
        (self.i - start) as u64
    }

    /// Skips a plain scalar to the end of its line (block) or its next indicator (flow).
    fn skip_plain(&mut self) -> u64 {
        let start = self.i;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if c == b'\n' {
                break;
            }
            if c == b'#' && self.i > start && matches!(self.b[self.i - 1], b' ' | b'\t') {
                break;
            }
            if c == b':' && matches!(self.peek(1), b' ' | b'\n' | b'\r' | 0) {
                break;
            }
            if self.flow > 0 && matches!(c, b',' | b'[' | b']' | b'{' | b'}') {
                break;
            }
            self.i += 1;
        }
        ((self.i - start) as u64).max(1)
    }

    /// Skips a block scalar (`|` or `>`): its header line, then every line indented more
    /// than the current block level (or blank). Returns its length.
    fn skip_block_scalar(&mut self) -> u64 {
        let start = self.i;
        let level = self.indents.last().copied().unwrap_or(0);
        self.skip_line();
        while self.i < self.b.len() {
            // At a newline: look at the next line.
            let next = self.i + 1;
            let col = self.b[next..].iter().take_while(|c| **c == b' ').count();
            let at = next + col;
            let blank = matches!(self.b.get(at), None | Some(b'\n' | b'\r'));
            if !blank && col <= level {
                break;
            }
            self.i = next;
            self.skip_line();
        }
        (self.i - start) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_blanked() {
        assert_eq!(
            unquoted(r#"invalid type: string "root:$6$x", expected struct Raw"#),
            r#"invalid type: string "…", expected struct Raw"#
        );
        assert_eq!(unquoted("a `b` c \"d"), "a `…` c \"…");
        assert_eq!(unquoted("no quotes"), "no quotes");
    }

    #[test]
    fn real_manifests_pass() {
        for text in [
            "src: s3://b/a.tgz\nchecksum: abc\ndest: /srv/app\ncommands:\n  pre:\n    - echo \"a [b] {c}\" && ls *.txt # note\n    - 'it''s'\n  post:\n    - |\n      for f in *; do\n        echo &x [\n      done\nexcludes: [\"*.pid\", tmp/*]\n",
            "base: &cmds\n  - echo one\n  - echo two\ncommands:\n  pre: *cmds\n  post: *cmds\n",
            "a: &a {x: 1, y: [1, 2]}\nb: [*a, *a, *a]\n",
        ] {
            check(text).unwrap_or_else(|e| panic!("{text}: {}", e.reason));
        }
    }

    #[test]
    fn bombs_are_refused_naming_the_limit() {
        let nested = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert!(check(&nested).unwrap_err().reason.contains("nesting depth"));
        let block: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(check(&block).unwrap_err().reason.contains("nesting depth"));
        let dashes = format!("a:\n  {}x\n", "- ".repeat(100));
        assert!(check(&dashes).unwrap_err().reason.contains("nesting depth"));
        // Billion laughs: each level aliases the previous one ten times.
        let mut laughs =
            String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..9 {
            let refs = vec![format!("*l{}", i - 1); 10].join(", ");
            laughs.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        assert!(
            check(&laughs)
                .unwrap_err()
                .reason
                .contains("alias expansion")
        );
        // Few nodes, many bytes.
        let big = format!(
            "x: &x \"{}\"\ny: [{}]\n",
            "A".repeat(60_000),
            vec!["*x"; 100].join(",")
        );
        assert!(
            check(&big)
                .unwrap_err()
                .reason
                .contains("bytes once aliases")
        );
        // Block anchors count their whole block.
        let mut block_laughs =
            String::from("l0: &l0\n  - aaaaaaaaaaaaaaaaaaaaaaaa\n  - aaaaaaaaaaaaaaaaaaaa\n");
        for i in 1..12 {
            block_laughs.push_str(&format!(
                "l{i}: &l{i}\n  - *l{}\n  - *l{}\n  - *l{}\n",
                i - 1,
                i - 1,
                i - 1
            ));
        }
        assert!(
            check(&block_laughs)
                .unwrap_err()
                .reason
                .contains("alias expansion")
        );
        assert!(check("a: &a [1, *a]\n").is_ok());
    }
}
