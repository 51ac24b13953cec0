//! Splits a scenario line into tokens, each with its column.
//!
//! A line is lexed into words and the punctuation `:`, `=`, `!=`, `<`, `<=`,
//! `>`, `>=`; `#` starts a comment. Every other run of non-blank characters
//! is one word, so `A+4K`, `+1`, `hugepages-64kB/enabled`, `defer+madvise`
//! and `!pmd` are single words that the statement parsers take apart.

use crate::CmpOp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Word,
    Colon,
    Cmp(CmpOp),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Tok<'a> {
    pub(super) kind: Kind,
    pub(super) text: &'a str,
    /// 1-based column of the first character.
    pub(super) col: u32,
}

impl Tok<'_> {
    pub(super) fn is_word(&self) -> bool {
        self.kind == Kind::Word
    }
    /// The column `chars` characters into the token.
    pub(super) fn col_at(&self, chars: usize) -> u32 {
        self.col.saturating_add(u32::try_from(chars).unwrap_or(u32::MAX))
    }
    pub(super) fn end_col(&self) -> u32 {
        self.col_at(self.text.chars().count())
    }
    pub(super) fn starts_with_digit(&self) -> bool {
        self.is_word() && self.text.starts_with(|c: char| c.is_ascii_digit())
    }
}

/// A parse failure inside one line.
#[derive(Debug)]
pub(super) struct Fail {
    pub(super) col: u32,
    pub(super) msg: String,
}

impl Fail {
    pub(super) fn at(tok: &Tok, msg: impl Into<String>) -> Fail {
        Fail { col: tok.col, msg: msg.into() }
    }
}

/// How a token reads in "found ..." messages.
pub(super) fn found(tok: Option<&Tok>) -> String {
    match tok {
        Some(tok) => crate::scenario::quote_word(tok.text),
        None => "end of line".to_string(),
    }
}

/// Splits a line into tokens and returns them with the byte offset where a
/// comment starts (or the line's length).
pub(super) fn lex(line: &str) -> (Vec<Tok<'_>>, usize) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let col_of = |i: usize| u32::try_from(i + 1).unwrap_or(u32::MAX);
    let byte_at = |i: usize| chars.get(i).map_or(line.len(), |&(b, _)| b);
    let next_is_eq = |i: usize| chars.get(i + 1).is_some_and(|&(_, c)| c == '=');
    while i < chars.len() {
        let c = chars[i].1;
        let (kind, len) = match c {
            '#' => return (toks, byte_at(i)),
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ':' => (Kind::Colon, 1),
            '=' => (Kind::Cmp(CmpOp::Eq), 1),
            '<' if next_is_eq(i) => (Kind::Cmp(CmpOp::Le), 2),
            '>' if next_is_eq(i) => (Kind::Cmp(CmpOp::Ge), 2),
            '!' if next_is_eq(i) => (Kind::Cmp(CmpOp::Ne), 2),
            '<' => (Kind::Cmp(CmpOp::Lt), 1),
            '>' => (Kind::Cmp(CmpOp::Gt), 1),
            _ => {
                let mut j = i;
                while j < chars.len() {
                    let c = chars[j].1;
                    let ends =
                        c.is_whitespace() || matches!(c, '#' | ':' | '=' | '<' | '>') || (c == '!' && next_is_eq(j));
                    if ends {
                        break;
                    }
                    j += 1;
                }
                (Kind::Word, j - i)
            }
        };
        toks.push(Tok { kind, text: &line[byte_at(i)..byte_at(i + len)], col: col_of(i) });
        i += len;
    }
    (toks, line.len())
}

/// The tokens of one statement, consumed left to right.
pub(super) struct Cursor<'a> {
    pub(super) toks: Vec<Tok<'a>>,
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }
    pub(super) fn peek_at(&self, ahead: usize) -> Option<Tok<'a>> {
        self.toks.get(self.pos + ahead).copied()
    }
    pub(super) fn next(&mut self) -> Option<Tok<'a>> {
        let tok = self.peek();
        if tok.is_some() {
            self.pos += 1;
        }
        tok
    }
    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }
    /// The column of the next token, or just past the last one.
    pub(super) fn col(&self) -> u32 {
        match self.peek() {
            Some(tok) => tok.col,
            None => self.toks.last().map_or(1, |t| t.end_col()),
        }
    }
    /// An "expected X, found Y" failure at the next token.
    pub(super) fn expected(&self, what: &str) -> Fail {
        Fail { col: self.col(), msg: format!("expected {what}, found {}", found(self.peek().as_ref())) }
    }
    pub(super) fn word(&mut self, what: &str) -> Result<Tok<'a>, Fail> {
        match self.peek() {
            Some(tok) if tok.is_word() => {
                self.pos += 1;
                Ok(tok)
            }
            _ => Err(self.expected(what)),
        }
    }
    pub(super) fn eq(&mut self, what: &str) -> Result<Tok<'a>, Fail> {
        match self.peek() {
            Some(tok) if tok.kind == Kind::Cmp(CmpOp::Eq) => {
                self.pos += 1;
                Ok(tok)
            }
            _ => Err(self.expected(what)),
        }
    }
    pub(super) fn end(&self) -> Result<(), Fail> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.expected("end of line"))
        }
    }
    /// Takes `key=`, `key>=`, ... if the next two tokens are a word and a
    /// comparison.
    pub(super) fn key_op(&mut self) -> Option<(Tok<'a>, CmpOp)> {
        match (self.peek(), self.peek_at(1)) {
            (Some(key), Some(Tok { kind: Kind::Cmp(op), .. })) if key.is_word() => {
                self.pos += 2;
                Some((key, op))
            }
            _ => None,
        }
    }
    pub(super) fn cmp_op(&mut self) -> Option<CmpOp> {
        match self.peek() {
            Some(Tok { kind: Kind::Cmp(op), .. }) => {
                self.pos += 1;
                Some(op)
            }
            _ => None,
        }
    }
}
