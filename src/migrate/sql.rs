//! A small PostgreSQL lexer: enough to split a script into statements the way
//! `psql` does and to read each statement's words.
//!
//! It knows the parts of the grammar that can hide a `;`, following
//! PostgreSQL's own scanner (`scan.l`):
//! - string literals `'..'` (`''` is a quote), `E'..'` (backslash escapes),
//!   `U&'..'`, `B'..'`, `X'..'`, `N'..'`; a string followed by whitespace that
//!   holds a newline (line comments allowed) and another `'..'` continues, in
//!   the same escape mode (`E'a'` newline `'\''` is one escape string);
//! - quoted identifiers (`".."`, `U&".."`), dollar quotes `$tag$..$tag$`
//!   (`$1` is a parameter), `--` comments to the end of the line (`\n` or
//!   `\r`) and nested `/* */` comments;
//! - parentheses: a `;` inside them does not end the statement
//!   (`CREATE RULE ... DO ALSO (a; b)`);
//! - SQL-standard routine bodies: in `CREATE [OR REPLACE] FUNCTION|PROCEDURE`,
//!   `BEGIN ATOMIC` opens a block that `END` closes, with `CASE ... END`
//!   nested in it. Anywhere else `BEGIN` is a word like any other (a column or
//!   parameter may be named `begin`), and an `END` written as a name (`t.end`,
//!   `AS end`) closes nothing.
//!
//! It assumes `standard_conforming_strings = on` (the default since
//! PostgreSQL 9.1): with it off, a backslash in a plain string escapes the
//! quote and the server may see statements this lexer does not. The runner's
//! batch marker (see `runner.rs`) catches what that hides. The lexer is pure
//! and shared with `build.rs`, so it uses nothing but `std`.

use std::fmt;

/// The kind of a lexical token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or unquoted identifier.
    Word,
    /// A `"quoted"` identifier.
    QuotedIdent,
    /// A string literal, plain or with a prefix (`E`, `B`, `X`, `U&`).
    String,
    /// A `$tag$ ... $tag$` body.
    DollarString,
    /// `-- ...` up to the end of the line.
    LineComment,
    /// `/* ... */`, possibly nested.
    BlockComment,
    /// `;`
    Semicolon,
    /// Anything else: numbers, operators, punctuation, parameters.
    Other,
}

/// One token: its kind and its byte range in the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What the token is.
    pub kind: TokenKind,
    /// Byte offset of its first byte.
    pub start: usize,
    /// Byte offset one past its last byte.
    pub end: usize,
}

impl Token {
    /// The token's text in `script`.
    pub fn text<'a>(&self, script: &'a str) -> &'a str {
        &script[self.start..self.end]
    }

    /// True for comments, which carry no SQL.
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokenKind::LineComment | TokenKind::BlockComment)
    }
}

/// A construct that was opened and never closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// What was left open: "string literal", "quoted identifier", ...
    pub what: &'static str,
    /// Byte offset where it was opened.
    pub offset: usize,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unterminated {}", self.what)
    }
}

impl std::error::Error for LexError {}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The names a script mentions: its words folded to lower case (as
/// PostgreSQL folds unquoted names) and its quoted identifiers as written.
/// An unreadable script mentions nothing.
pub fn mentioned_names(body: &str) -> std::collections::HashSet<String> {
    tokenize(body)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            let text = t.text(body);
            match t.kind {
                TokenKind::Word => Some(text.to_ascii_lowercase()),
                TokenKind::QuotedIdent if text.len() >= 2 && text.starts_with('"') => {
                    Some(text[1..text.len() - 1].replace("\"\"", "\""))
                }
                _ => None,
            }
        })
        .collect()
}

/// Splits `script` into tokens. Whitespace is dropped.
pub fn tokenize(script: &str) -> Result<Vec<Token>, LexError> {
    let bytes = script.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let kind = match b {
            b if is_space(b) => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = line_end(bytes, i);
                TokenKind::LineComment
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(bytes, i).ok_or(LexError {
                    what: "block comment",
                    offset: start,
                })?;
                TokenKind::BlockComment
            }
            b'\'' => {
                i = string_end(bytes, i, false).ok_or(LexError {
                    what: "string literal",
                    offset: start,
                })?;
                TokenKind::String
            }
            b'"' => {
                i = quoted_end(bytes, i, b'"', false).ok_or(LexError {
                    what: "quoted identifier",
                    offset: start,
                })?;
                TokenKind::QuotedIdent
            }
            b'$' => match dollar_tag(bytes, i) {
                Some(tag_end) => {
                    let tag = &bytes[i..tag_end];
                    i = find(bytes, tag, tag_end)
                        .map(|close| close + tag.len())
                        .ok_or(LexError {
                            what: "dollar-quoted string",
                            offset: start,
                        })?;
                    TokenKind::DollarString
                }
                None => {
                    i += 1;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    TokenKind::Other
                }
            },
            b';' => {
                i += 1;
                TokenKind::Semicolon
            }
            b if is_ident_start(b) => {
                while i < bytes.len() && is_ident_char(bytes[i]) {
                    i += 1;
                }
                // A prefixed literal: E'..', B'..', X'..', N'..', U&'..'.
                let word = &bytes[start..i];
                if bytes.get(i) == Some(&b'\'') && word.len() == 1 {
                    let escapes = word[0].eq_ignore_ascii_case(&b'e');
                    i = string_end(bytes, i, escapes).ok_or(LexError {
                        what: "string literal",
                        offset: start,
                    })?;
                    TokenKind::String
                } else if word.eq_ignore_ascii_case(b"u")
                    && bytes.get(i) == Some(&b'&')
                    && matches!(bytes.get(i + 1), Some(b'\'') | Some(b'"'))
                {
                    let quote = bytes[i + 1];
                    let end = if quote == b'"' {
                        quoted_end(bytes, i + 1, quote, false)
                    } else {
                        string_end(bytes, i + 1, false)
                    };
                    i = end.ok_or(LexError {
                        what: "unicode literal",
                        offset: start,
                    })?;
                    if quote == b'"' {
                        TokenKind::QuotedIdent
                    } else {
                        TokenKind::String
                    }
                } else {
                    TokenKind::Word
                }
            }
            b if b.is_ascii_digit() => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                TokenKind::Other
            }
            _ => {
                i += 1;
                TokenKind::Other
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Ok(tokens)
}

/// PostgreSQL's whitespace: space, tab, newline, carriage return, form feed, vertical tab.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b)
}

fn is_newline(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// End (exclusive, before the newline) of the `--` comment starting at `start`.
fn line_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| is_newline(b))
        .map_or(bytes.len(), |p| p + start)
}

/// End (exclusive) of the string literal whose opening quote is at `start`,
/// continuations included: after the closing quote, whitespace holding at
/// least one newline (line comments allowed) and another quote continue the
/// same literal, in the same escape mode.
fn string_end(bytes: &[u8], start: usize, escapes: bool) -> Option<usize> {
    let mut end = quoted_end(bytes, start, b'\'', escapes)?;
    loop {
        let mut i = end;
        let mut newline = false;
        while i < bytes.len() {
            if is_space(bytes[i]) {
                newline |= is_newline(bytes[i]);
                i += 1;
            } else if bytes[i] == b'-' && bytes.get(i + 1) == Some(&b'-') {
                i = line_end(bytes, i);
            } else {
                break;
            }
        }
        if !(newline && bytes.get(i) == Some(&b'\'')) {
            return Some(end);
        }
        end = quoted_end(bytes, i, b'\'', escapes)?;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// End (exclusive) of the nested block comment opened at `start`.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// End (exclusive) of the quoted run opened by `quote` at `start`; a doubled
/// quote is an escaped quote, and with `backslash` so is `\'`.
fn quoted_end(bytes: &[u8], start: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        let b = bytes[i];
        if backslash && b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// If a dollar-quote tag (`$$` or `$tag$`) starts at `start`, the offset just past it.
fn dollar_tag(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if bytes.get(i) == Some(&b'$') {
        return Some(i + 1);
    }
    if !is_ident_start(*bytes.get(i)?) {
        return None;
    }
    while i < bytes.len() && is_ident_char(bytes[i]) && bytes[i] != b'$' {
        i += 1;
    }
    (bytes.get(i) == Some(&b'$')).then_some(i + 1)
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Byte offset of its first token in the script.
    pub offset: usize,
    /// Byte offset one past its last token (the `;` is not included).
    pub end: usize,
    /// Its unquoted words, upper-cased, in order (keywords and plain identifiers).
    pub words: Vec<String>,
}

impl Statement {
    /// The statement's SQL text in `script`, without the trailing `;`.
    pub fn text<'a>(&self, script: &'a str) -> &'a str {
        &script[self.offset..self.end]
    }

    /// The first word, upper-cased ("" when the statement has no words).
    pub fn first_word(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or("")
    }

    /// True when `word` (upper case) is one of the statement's words.
    pub fn has_word(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }
}

/// Splits a script into statements at top-level semicolons, as the server
/// reads a multi-statement query (and `psql` a file): not inside literals,
/// comments, parentheses or a `BEGIN ATOMIC ... END` routine body.
/// Statements made only of comments are dropped.
pub fn split(script: &str) -> Result<Vec<Statement>, LexError> {
    let tokens = tokenize(script)?;
    let tokens: Vec<&Token> = tokens.iter().filter(|t| !t.is_comment()).collect();
    let mut statements = Vec::new();
    let mut current: Option<Statement> = None;
    // Parentheses open in the current statement.
    let mut parens = 0usize;
    // Blocks open in a routine body: BEGIN ATOMIC, and CASE inside it.
    let mut blocks = 0usize;
    for (n, token) in tokens.iter().enumerate() {
        if token.kind == TokenKind::Semicolon && parens == 0 && blocks == 0 {
            statements.extend(current.take());
            continue;
        }
        let stmt = current.get_or_insert_with(|| Statement {
            offset: token.start,
            end: token.end,
            words: Vec::new(),
        });
        stmt.end = token.end;
        match token.kind {
            TokenKind::Other => match token.text(script) {
                "(" => parens += 1,
                ")" => parens = parens.saturating_sub(1),
                _ => {}
            },
            TokenKind::Word => {
                let word = token.text(script).to_ascii_uppercase();
                let keyword_position = parens == 0
                    && defines_routine(&stmt.words)
                    && !follows_name_marker(script, &tokens, n);
                if keyword_position {
                    let next_is = |w: &str| {
                        tokens.get(n + 1).is_some_and(|t| {
                            t.kind == TokenKind::Word && t.text(script).eq_ignore_ascii_case(w)
                        })
                    };
                    match word.as_str() {
                        "BEGIN" if next_is("ATOMIC") => blocks += 1,
                        "CASE" if blocks > 0 => blocks += 1,
                        "END" if blocks > 0 => blocks -= 1,
                        _ => {}
                    }
                }
                stmt.words.push(word);
            }
            _ => {}
        }
    }
    statements.extend(current);
    Ok(statements)
}

/// True when the word at `n` is written as a name, not a keyword: after a
/// `.` (`t.end`) or `AS` (`SELECT 1 AS end`).
fn follows_name_marker(script: &str, tokens: &[&Token], n: usize) -> bool {
    let Some(previous) = n.checked_sub(1).and_then(|p| tokens.get(p)) else {
        return false;
    };
    match previous.kind {
        TokenKind::Other => previous.text(script) == ".",
        TokenKind::Word => previous.text(script).eq_ignore_ascii_case("as"),
        _ => false,
    }
}

/// True when the words so far start `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
fn defines_routine(words: &[String]) -> bool {
    let rest = match words {
        [create, rest @ ..] if create == "CREATE" => rest,
        _ => return false,
    };
    let rest = match rest {
        [or, replace, rest @ ..] if or == "OR" && replace == "REPLACE" => rest,
        _ => rest,
    };
    matches!(
        rest.first().map(String::as_str),
        Some("FUNCTION" | "PROCEDURE")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<&str> {
        split(script)
            .unwrap()
            .into_iter()
            .map(|s| &script[s.offset..s.end])
            .collect()
    }

    #[test]
    fn splits_plain_statements() {
        assert_eq!(
            texts("CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);"),
            vec!["CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)"]
        );
    }

    #[test]
    fn last_statement_without_semicolon_is_kept() {
        assert_eq!(texts("select 1; select 2"), vec!["select 1", "select 2"]);
    }

    #[test]
    fn semicolons_inside_literals_comments_and_bodies_do_not_split() {
        let script = "INSERT INTO t VALUES ('a;b', E'c\\';d', \"we;ird\");\n\
                      -- a comment; with a semicolon\n\
                      /* block; /* nested; */ still; */\n\
                      DO $$ BEGIN PERFORM 1; END $$;\n\
                      DO $fn$ SELECT ';' $fn$;\n\
                      SELECT 2";
        let got = texts(script);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("INSERT"));
        assert!(got[1].starts_with("DO $$"));
        assert!(got[2].starts_with("DO $fn$"));
        assert_eq!(got[3], "SELECT 2");
    }

    #[test]
    fn comment_only_statements_are_dropped() {
        assert!(split("-- nothing\n/* at all */ ;;").unwrap().is_empty());
    }

    #[test]
    fn positional_parameters_are_not_dollar_quotes() {
        assert_eq!(
            texts("PREPARE p AS SELECT $1; SELECT 1"),
            vec!["PREPARE p AS SELECT $1", "SELECT 1"]
        );
    }

    #[test]
    fn identifiers_may_contain_dollar_signs() {
        assert_eq!(texts("SELECT a$b$ FROM t; SELECT 2").len(), 2);
    }

    #[test]
    fn sql_standard_function_bodies_stay_whole() {
        let script = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\n\
                      BEGIN ATOMIC\n  SELECT 1;\n  SELECT CASE WHEN true THEN 2 END;\nEND;\n\
                      SELECT f()";
        let got = texts(script);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("END"));
    }

    #[test]
    fn words_are_upper_cased_and_skip_literals() {
        let s =
            &split("create unique index concurrently \"Idx\" on t (x) where y = 'CONCURRENTLY'")
                .unwrap()[0];
        assert_eq!(s.first_word(), "CREATE");
        assert!(s.has_word("CONCURRENTLY"));
        assert!(!s.words.iter().any(|w| w == "IDX"));
    }

    #[test]
    fn unterminated_constructs_are_reported_with_their_offset() {
        for (script, what) in [
            ("SELECT 'abc", "string literal"),
            ("SELECT \"abc", "quoted identifier"),
            ("DO $$ BEGIN", "dollar-quoted string"),
            ("SELECT 1 /* open", "block comment"),
        ] {
            let err = split(script).unwrap_err();
            assert_eq!(err.what, what, "{script}");
            assert!(err.offset > 0);
        }
    }

    #[test]
    fn escape_strings_honour_backslashes_but_plain_strings_do_not() {
        // In a plain string a backslash is an ordinary character.
        assert_eq!(texts(r"SELECT 'a\'; SELECT 2").len(), 2);
        assert_eq!(texts(r"SELECT E'a\'; SELECT 2'").len(), 1);
    }

    #[test]
    fn an_identifier_named_begin_opens_no_block() {
        // A parameter (and a column) named `begin`: the COMMIT after it is a statement of its own.
        let script = "CREATE FUNCTION f(begin timestamptz) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n\
                      CREATE TABLE t (begin int);\n\
                      COMMIT;\n\
                      SELECT 2";
        let got = texts(script);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[2], "COMMIT");
        let words =
            "CREATE OR REPLACE PROCEDURE p(begin int) LANGUAGE sql AS 'SELECT 1'; END; SELECT 3";
        assert_eq!(
            texts(words),
            vec![
                "CREATE OR REPLACE PROCEDURE p(begin int) LANGUAGE sql AS 'SELECT 1'",
                "END",
                "SELECT 3"
            ]
        );
    }

    #[test]
    fn begin_atomic_bodies_nest_case_and_ignore_names_called_end() {
        let script = "CREATE FUNCTION g(begin int) RETURNS int LANGUAGE sql\n\
                      BEGIN ATOMIC\n\
                        SELECT CASE WHEN begin > 0 THEN (CASE begin WHEN 1 THEN 1 END) ELSE 2 END;\n\
                        SELECT t.end FROM (SELECT begin AS end) AS t;\n\
                      END;\n\
                      SELECT g(1)";
        let got = texts(script);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("END"), "{got:?}");
        // A comment between BEGIN and ATOMIC changes nothing.
        assert_eq!(
            texts("CREATE PROCEDURE p() LANGUAGE sql BEGIN /* c */ ATOMIC SELECT 1; SELECT 2; END; SELECT 3").len(),
            2
        );
    }

    #[test]
    fn parentheses_hold_rule_actions_together() {
        assert_eq!(
            texts(
                "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); NOTIFY c); SELECT 1"
            ),
            vec![
                "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); NOTIFY c)",
                "SELECT 1"
            ]
        );
    }

    #[test]
    fn a_continued_escape_string_keeps_its_escape_mode() {
        // E'a' then, after a newline, '\' ' continues the same string: \' is a quote there.
        let script = "SELECT E'a'\n'\\' ; still the string'; SELECT 2";
        assert_eq!(
            texts(script),
            vec!["SELECT E'a'\n'\\' ; still the string'", "SELECT 2"]
        );
        // Line comments may sit between the parts; a block comment may not.
        assert_eq!(
            texts("SELECT E'a' -- c\n  -- d\n'\\' ;'; SELECT 2").len(),
            2
        );
        assert_eq!(texts("SELECT U&'a'\n'\\' ; SELECT 2").len(), 2);
        // Without a newline it is a new (plain) string: the backslash is a character.
        assert_eq!(texts("SELECT E'a' '\\' ; SELECT 2").len(), 2);
        assert_eq!(texts("SELECT E'a' /* c */\n'\\' ; SELECT 2").len(), 2);
    }

    #[test]
    fn a_carriage_return_ends_a_line_comment() {
        assert_eq!(
            texts("SELECT 1 -- c\rCOMMIT; SELECT 2"),
            vec!["SELECT 1 -- c\rCOMMIT", "SELECT 2"]
        );
    }

    #[test]
    fn comment_starts_inside_operators_are_comments() {
        assert_eq!(texts("SELECT 2 */* c; */ 3; SELECT 4").len(), 2);
    }

    #[test]
    fn multibyte_text_is_handled() {
        assert_eq!(
            texts("INSERT INTO t VALUES ('café; naïve'); SELECT 'ü'"),
            vec!["INSERT INTO t VALUES ('café; naïve')", "SELECT 'ü'"]
        );
    }
}
