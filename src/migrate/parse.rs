//! Migration files: names, order numbers, markers, directives and checksums.
//!
//! Pure and shared with `build.rs` (which refuses a bad `migrations/` at
//! compile time), so it depends only on `std`, `sha2`, `thiserror` and its
//! sibling modules.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::breaking;
use super::sql::{self, Statement};
use crate::duration::parse_duration;

/// The longest name `pgmigrations.name` (varchar(255)) can hold.
pub const MAX_NAME_LEN: usize = 255;

/// The directive prefix, written in a comment at the top of a file:
/// `-- db-setup: no-transaction`.
pub const DIRECTIVE_PREFIX: &str = "db-setup:";

/// The order number of a migration: its leading digits read as a number, as
/// node-pg-migrate 9 reads them (`001` and `1` are both 1; a 17-digit prefix
/// is a UTC timestamp `YYYYMMDDhhmmssSSS` and counts as its epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderNumber(pub u128);

impl OrderNumber {
    /// Reads a run of ASCII digits; `None` when it is too long, or is 17
    /// digits that are not a valid UTC timestamp.
    pub fn from_digits(digits: &str) -> Option<Self> {
        if digits.len() == 17 {
            return utc_timestamp_millis(digits).map(OrderNumber);
        }
        digits.parse().ok().map(OrderNumber)
    }
}

/// Milliseconds since 1970 of `YYYYMMDDhhmmssSSS`, or `None` if it is not a real instant.
fn utc_timestamp_millis(d: &str) -> Option<u128> {
    let field = |from: usize, to: usize| d.get(from..to)?.parse::<u32>().ok();
    let (y, mo, day) = (field(0, 4)?, field(4, 6)?, field(6, 8)?);
    let (h, mi, s, ms) = (
        field(8, 10)?,
        field(10, 12)?,
        field(12, 14)?,
        field(14, 17)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = y >= 1970
        && (1..=12).contains(&mo)
        && day >= 1
        && day <= month_days[(mo - 1) as usize]
        && h < 24
        && mi < 60
        && s < 60;
    if !valid {
        return None;
    }
    let days_before_year: u128 = (1970..y)
        .map(|yr| {
            if (yr % 4 == 0 && yr % 100 != 0) || yr % 400 == 0 {
                366
            } else {
                365
            }
        })
        .sum();
    let days_before_month: u128 = month_days[..(mo - 1) as usize]
        .iter()
        .map(|&n| n as u128)
        .sum();
    let days = days_before_year + days_before_month + (day - 1) as u128;
    Some((((days * 24 + h as u128) * 60 + mi as u128) * 60 + s as u128) * 1000 + ms as u128)
}

impl fmt::Display for OrderNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The deploy phase a migration belongs to (`-- db-setup: phase=...`).
///
/// `Expand` migrations run before the application is updated and must keep
/// the running (old) application working; `Contract` migrations run after
/// it, and may remove what only the old application used. The order stays
/// strict: an expand step stops before the first pending contract migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before the application is updated (the default).
    #[default]
    Expand,
    /// After the application is updated.
    Contract,
}

impl Phase {
    /// The name used in directives, properties and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Contract => "contract",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "expand" => Ok(Phase::Expand),
            "contract" => Ok(Phase::Contract),
            other => Err(format!(
                "unknown phase {other:?}: expected \"expand\" or \"contract\""
            )),
        }
    }
}

/// Per-file settings read from `-- db-setup: ...` lines in the file's header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// Run each statement on its own, outside any transaction
    /// (`CREATE INDEX CONCURRENTLY` and friends).
    pub no_transaction: bool,
    /// Overrides the run's `statement_timeout` for this file.
    pub statement_timeout: Option<Duration>,
    /// Overrides the run's `lock_timeout` for this file.
    pub lock_timeout: Option<Duration>,
    /// The deploy phase (`phase=expand|contract`; expand when absent).
    pub phase: Phase,
    /// Why this expand file may hold a breaking change anyway
    /// (`allow-breaking=<reason>`); `plan` lists every use.
    pub allow_breaking: Option<String>,
}

/// A line and a column (both from 1, the column in characters) in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// One forward-only migration, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The name stored in `pgmigrations.name`: the file name without `.sql`.
    pub name: String,
    /// The order number (leading digits).
    pub number: OrderNumber,
    /// SHA-256 of the file content with line endings normalized, lower-case hex;
    /// `-- db-setup: allow-breaking=...` header lines are left out.
    pub checksum: String,
    /// The whole file, line endings normalized to `\n`.
    pub content: String,
    /// Byte offset in `content` where the SQL to run starts (after an
    /// optional `-- Up Migration` marker).
    pub body_start: usize,
    /// Settings from the header.
    pub directives: Directives,
    /// The statements of the body (offsets relative to the body).
    pub statements: Vec<Statement>,
}

impl Migration {
    /// The SQL to run: the file after its `-- Up Migration` marker, if any.
    pub fn sql(&self) -> &str {
        &self.content[self.body_start..]
    }

    /// The statements' texts, in order (used when running outside a transaction).
    pub fn statement_texts(&self) -> impl Iterator<Item = (usize, &str)> {
        let body = self.sql();
        self.statements
            .iter()
            .map(move |s| (s.offset, s.text(body)))
    }

    /// The location in the file of a byte offset into the body.
    pub fn location_of_body_offset(&self, body_offset: usize) -> Location {
        location(&self.content, self.body_start + body_offset)
    }

    /// Maps a PostgreSQL error position (1-based, in characters, into the text
    /// that was sent) to a location in the file. `sent_from` is the byte
    /// offset in the body where the sent text starts.
    pub fn location_of_error(&self, sent_from: usize, position: u32) -> Location {
        let sent = &self.sql()[sent_from..];
        let chars = usize::try_from(position.saturating_sub(1)).unwrap_or(usize::MAX);
        let byte = sent
            .char_indices()
            .nth(chars)
            .map(|(b, _)| b)
            .unwrap_or(sent.len());
        self.location_of_body_offset(sent_from + byte)
    }
}

/// The line and character column of a byte offset in `text`.
pub fn location(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// Why a migration file (or the set of them) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The name does not start with the order number.
    #[error("{file}: a migration's name must start with its number, as in 001_create_users.sql")]
    NoLeadingDigits {
        /// The file.
        file: String,
    },
    /// Two files share an order number.
    #[error(
        "{first} and {second} both have number {number}: the order would be ambiguous, renumber one of them"
    )]
    DuplicateNumber {
        /// The first file.
        first: String,
        /// The second file.
        second: String,
        /// The shared number.
        number: String,
    },
    /// No SQL in the file.
    #[error("{file}: the migration holds no SQL")]
    Empty {
        /// The file.
        file: String,
    },
    /// Something other than a `.sql` migration or a README.
    #[error(
        "{file}: only NNN_description.sql migrations and a README belong in the migrations directory"
    )]
    UnexpectedFile {
        /// The file.
        file: String,
    },
    /// The leading digits are too long, or 17 digits that are not a UTC timestamp.
    #[error(
        "{file}: the number must be under 39 digits, and a 17-digit number must be a valid UTC timestamp YYYYMMDDhhmmssSSS"
    )]
    BadNumber {
        /// The file.
        file: String,
    },
    /// The name does not fit `pgmigrations.name`, or has characters we refuse.
    #[error(
        "{file}: the name must be at most {MAX_NAME_LEN} characters of letters, digits, '_', '-' and '.'"
    )]
    BadName {
        /// The file.
        file: String,
    },
    /// The file is not UTF-8.
    #[error("{file}: not valid UTF-8")]
    NotUtf8 {
        /// The file.
        file: String,
    },
    /// The file could not be read.
    #[error("{file}: cannot be read: {message}")]
    Unreadable {
        /// The file or directory.
        file: String,
        /// The I/O error.
        message: String,
    },
    /// A node-pg-migrate `-- Down Migration` section.
    #[error(
        "{file}:{line}: a `-- Down Migration` section: migrations here are forward-only; delete the section and fix forward with a new migration"
    )]
    DownMigration {
        /// The file.
        file: String,
        /// Its line.
        line: usize,
    },
    /// A `-- db-setup:` line that is not a known directive.
    #[error(
        "{file}:{line}: unknown directive `{text}`: write no-transaction, statement-timeout=<duration>, lock-timeout=<duration>, phase=expand|contract or allow-breaking=<reason>"
    )]
    UnknownDirective {
        /// The file.
        file: String,
        /// Its line.
        line: usize,
        /// The directive's text.
        text: String,
    },
    /// A directive below the first SQL line, where it would be ignored.
    #[error("{file}:{line}: a `-- db-setup:` directive must come before the first SQL statement")]
    LateDirective {
        /// The file.
        file: String,
        /// Its line.
        line: usize,
    },
    /// `BEGIN`, `COMMIT` and the like: the runner owns transactions.
    #[error(
        "{file}:{line}: `{statement}` controls the transaction, which the runner owns: remove it (add `-- db-setup: no-transaction` at the top if the file must run outside a transaction)"
    )]
    TransactionControl {
        /// The file.
        file: String,
        /// Its line.
        line: usize,
        /// The statement's first words.
        statement: String,
    },
    /// A statement PostgreSQL refuses inside a transaction block.
    #[error(
        "{file}:{line}: `{statement}` cannot run inside a transaction: put `-- db-setup: no-transaction` at the top of the file"
    )]
    NeedsNoTransaction {
        /// The file.
        file: String,
        /// Its line.
        line: usize,
        /// The statement's first words.
        statement: String,
    },
    /// An expand-phase file holds an operation that breaks the application
    /// version still running.
    #[error(
        "{file}:{line}: `{statement}` is {operation}, which breaks the application version still running \
         while an expand migration runs (and the one a rollback returns to): {fix}; or, if no running \
         version can notice, say why in the header: `-- db-setup: allow-breaking=<reason>`"
    )]
    BreakingInExpand {
        /// The file.
        file: String,
        /// The statement's line.
        line: usize,
        /// The statement (its start, on one line).
        statement: String,
        /// The operation (`DROP COLUMN`, ...).
        operation: &'static str,
        /// What to do instead.
        fix: &'static str,
    },
    /// An unterminated string, comment or identifier.
    #[error("{file}:{line}: {what}")]
    Lex {
        /// The file.
        file: String,
        /// Its line.
        line: usize,
        /// What was left open.
        what: String,
    },
}

/// All the problems found in a migrations directory, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceErrors(pub Vec<SourceError>);

impl fmt::Display for SourceErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the migrations:", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SourceErrors {}

/// What a file in the migrations directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A migration, with its stored name and order number.
    Migration {
        /// The name without `.sql`.
        name: String,
        /// The leading digits as a number.
        number: OrderNumber,
    },
    /// A README, which is ignored.
    Readme,
}

/// Classifies a file by its name (no path).
pub fn classify(file: &str) -> Result<FileKind, SourceError> {
    let stem = file.split('.').next().unwrap_or(file);
    if stem.eq_ignore_ascii_case("readme") {
        return Ok(FileKind::Readme);
    }
    let Some(name) = file.strip_suffix(".sql") else {
        return Err(SourceError::UnexpectedFile { file: file.into() });
    };
    let digits_end = name
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(name.len());
    if digits_end == 0 {
        return Err(SourceError::NoLeadingDigits { file: file.into() });
    }
    let name_ok = name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !name_ok {
        return Err(SourceError::BadName { file: file.into() });
    }
    let number = OrderNumber::from_digits(&name[..digits_end])
        .ok_or_else(|| SourceError::BadNumber { file: file.into() })?;
    Ok(FileKind::Migration {
        name: name.to_string(),
        number,
    })
}

/// SHA-256 of `content` with `\r\n` normalized to `\n`, as lower-case hex.
pub fn checksum(content: &str) -> String {
    let normalized = content.replace("\r\n", "\n");
    let digest = Sha256::digest(normalized.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// node-pg-migrate's marker test, `^\s*--[\s-]*<word>\s+migration` without case.
fn is_marker(line: &str, word: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("--") else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '-');
    let Some(head) = rest.get(..word.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(word) {
        return false;
    }
    let rest = &rest[word.len()..];
    let after = rest.trim_start();
    after.len() < rest.len()
        && after
            .get(..9)
            .is_some_and(|m| m.eq_ignore_ascii_case("migration"))
}

/// The directive text of a `-- db-setup: ...` comment line, if it is one.
fn directive_text(line: &str) -> Option<&str> {
    line.trim_start()
        .strip_prefix("--")?
        .trim_start()
        .strip_prefix(DIRECTIVE_PREFIX)
        .map(str::trim)
}

fn apply_directive(directives: &mut Directives, text: &str) -> Result<(), ()> {
    let (key, value) = match text.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (text, None),
    };
    match (key, value) {
        ("no-transaction", None) => directives.no_transaction = true,
        ("statement-timeout", Some(v)) => {
            directives.statement_timeout = Some(parse_duration(v).map_err(|_| ())?)
        }
        ("lock-timeout", Some(v)) => {
            directives.lock_timeout = Some(parse_duration(v).map_err(|_| ())?)
        }
        ("phase", Some(v)) => directives.phase = v.parse().map_err(|_| ())?,
        ("allow-breaking", Some(reason)) if !reason.is_empty() => {
            directives.allow_breaking = Some(reason.to_string())
        }
        _ => return Err(()),
    }
    Ok(())
}

/// `text` without the byte ranges `cut` (ordered, not overlapping).
fn without(text: &str, cut: &[std::ops::Range<usize>]) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut from = 0;
    for range in cut {
        kept.push_str(&text[from..range.start]);
        from = range.end;
    }
    kept.push_str(&text[from..]);
    kept
}

/// `text` with its whitespace runs folded to one space, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &folded[..i]),
        None => folded,
    }
}

/// Byte offsets of the start of each line of `text`.
fn line_starts(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split_inclusive('\n').map(move |line| {
        let start = offset;
        offset += line.len();
        (start, line)
    })
}

/// Parses one migration file.
pub fn parse_migration(file: &str, raw: &[u8]) -> Result<Migration, Vec<SourceError>> {
    let (name, number) = match classify(file).map_err(|e| vec![e])? {
        FileKind::Migration { name, number } => (name, number),
        FileKind::Readme => return Err(vec![SourceError::UnexpectedFile { file: file.into() }]),
    };
    let text =
        std::str::from_utf8(raw).map_err(|_| vec![SourceError::NotUtf8 { file: file.into() }])?;
    let content = text.replace("\r\n", "\n");
    let mut errors = Vec::new();

    // Markers (node-pg-migrate's) and the header (leading comment lines).
    let mut body_start = 0;
    let mut up_seen = false;
    let mut in_header = true;
    let mut header_end = 0;
    let mut directives = Directives::default();
    // Where a (refused) down section starts: its statements are not checked further.
    let mut down_at: Option<usize> = None;
    // The `allow-breaking` lines, which the checksum leaves out.
    let mut override_lines: Vec<std::ops::Range<usize>> = Vec::new();
    for (index, (start, line)) in line_starts(&content).enumerate() {
        let line_no = index + 1;
        if is_marker(line, "down") {
            down_at.get_or_insert(start);
            errors.push(SourceError::DownMigration {
                file: file.into(),
                line: line_no,
            });
        } else if !up_seen && is_marker(line, "up") {
            up_seen = true;
            body_start = start + line.len();
        }
        let trimmed = line.trim();
        if in_header && !(trimmed.is_empty() || trimmed.starts_with("--")) {
            in_header = false;
            header_end = start;
        }
        if in_header {
            if let Some(text) = directive_text(line) {
                if text.starts_with("allow-breaking") {
                    override_lines.push(start..start + line.len());
                }
                if apply_directive(&mut directives, text).is_err() {
                    errors.push(SourceError::UnknownDirective {
                        file: file.into(),
                        line: line_no,
                        text: text.into(),
                    });
                }
            }
        }
    }
    if in_header {
        header_end = content.len();
    }
    // The override says nothing about what runs: adding it to an applied file (one the
    // guard refuses only since it exists) must not read as an edit of that file.
    let checksum = checksum(&without(&content, &override_lines));

    let body = &content[body_start..];
    let statements = match sql::tokenize(body).and_then(|tokens| {
        // A directive comment below the header would be silently ignored.
        for t in tokens
            .iter()
            .filter(|t| t.kind == sql::TokenKind::LineComment)
        {
            if body_start + t.start >= header_end && directive_text(t.text(body)).is_some() {
                errors.push(SourceError::LateDirective {
                    file: file.into(),
                    line: location(&content, body_start + t.start).line,
                });
            }
        }
        sql::split(body)
    }) {
        Ok(statements) => statements,
        Err(e) => {
            errors.push(SourceError::Lex {
                file: file.into(),
                line: location(&content, body_start + e.offset).line,
                what: e.to_string(),
            });
            Vec::new()
        }
    };
    if statements.is_empty() && errors.is_empty() {
        errors.push(SourceError::Empty { file: file.into() });
    }
    for statement in &statements {
        let line = location(&content, body_start + statement.offset).line;
        let head = statement
            .words
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        if controls_transaction(statement) {
            errors.push(SourceError::TransactionControl {
                file: file.into(),
                line,
                statement: head,
            });
        } else if !directives.no_transaction && needs_no_transaction(statement) {
            errors.push(SourceError::NeedsNoTransaction {
                file: file.into(),
                line,
                statement: head,
            });
        }
        let in_down_section = down_at.is_some_and(|d| body_start + statement.offset >= d);
        if directives.phase == Phase::Expand
            && directives.allow_breaking.is_none()
            && !in_down_section
        {
            let text = statement.text(&content[body_start..]);
            if let Some(op) = breaking::breaking(text) {
                errors.push(SourceError::BreakingInExpand {
                    file: file.into(),
                    line,
                    statement: one_line(text, 80),
                    operation: op.operation(),
                    fix: op.fix(),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Migration {
        name,
        number,
        checksum,
        content,
        body_start,
        directives,
        statements,
    })
}

fn controls_transaction(s: &Statement) -> bool {
    let second = s.words.get(1).map(String::as_str);
    match s.first_word() {
        "BEGIN" | "COMMIT" | "END" | "ABORT" => true,
        "START" => second == Some("TRANSACTION"),
        "ROLLBACK" => second != Some("TO"),
        "PREPARE" => second == Some("TRANSACTION"),
        _ => false,
    }
}

fn needs_no_transaction(s: &Statement) -> bool {
    let w = &s.words;
    let word = |i: usize| w.get(i).map(String::as_str);
    let concurrently_within = |n: usize| w.iter().take(n).any(|x| x == "CONCURRENTLY");
    match s.first_word() {
        "VACUUM" => true,
        "CREATE" => {
            matches!(word(1), Some("DATABASE" | "TABLESPACE"))
                || (word(1) == Some("INDEX") && word(2) == Some("CONCURRENTLY"))
                || (word(1) == Some("UNIQUE")
                    && word(2) == Some("INDEX")
                    && word(3) == Some("CONCURRENTLY"))
        }
        "DROP" => {
            matches!(word(1), Some("DATABASE" | "TABLESPACE"))
                || (word(1) == Some("INDEX") && word(2) == Some("CONCURRENTLY"))
        }
        "REINDEX" => {
            concurrently_within(6) || w.iter().take(6).any(|x| x == "SYSTEM" || x == "DATABASE")
        }
        "ALTER" => {
            word(1) == Some("SYSTEM")
                || (s.has_word("DETACH") && w.last().map(String::as_str) == Some("CONCURRENTLY"))
        }
        _ => false,
    }
}

/// A set parsed from `(file name, content)` pairs that must be valid: for
/// the unit tests of the modules that take parsed migrations.
#[cfg(test)]
pub(crate) fn test_set(files: &[(&str, &str)]) -> Vec<Migration> {
    parse_set(
        files
            .iter()
            .map(|(f, c)| (f.to_string(), c.as_bytes().to_vec())),
    )
    .expect("a valid test set")
}

/// Parses and orders a whole directory's files (`(file name, bytes)` pairs).
/// Every problem is collected, so one run shows them all.
pub fn parse_set<I>(files: I) -> Result<Vec<Migration>, SourceErrors>
where
    I: IntoIterator<Item = (String, Vec<u8>)>,
{
    let mut errors = Vec::new();
    let mut migrations = Vec::new();
    for (file, bytes) in files {
        match classify(&file) {
            Ok(FileKind::Readme) => continue,
            Ok(FileKind::Migration { .. }) => match parse_migration(&file, &bytes) {
                Ok(m) => migrations.push(m),
                Err(mut e) => errors.append(&mut e),
            },
            Err(e) => errors.push(e),
        }
    }
    migrations.sort_by(|a, b| a.number.cmp(&b.number).then_with(|| a.name.cmp(&b.name)));
    for pair in migrations.windows(2) {
        if pair[0].number == pair[1].number {
            errors.push(SourceError::DuplicateNumber {
                first: format!("{}.sql", pair[0].name),
                second: format!("{}.sql", pair[1].name),
                number: pair[0].number.to_string(),
            });
        }
    }
    if errors.is_empty() {
        Ok(migrations)
    } else {
        Err(SourceErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(file: &str, content: &str) -> Result<Migration, Vec<SourceError>> {
        parse_migration(file, content.as_bytes())
    }

    fn set(files: &[(&str, &str)]) -> Result<Vec<Migration>, SourceErrors> {
        parse_set(
            files
                .iter()
                .map(|(f, c)| (f.to_string(), c.as_bytes().to_vec())),
        )
    }

    #[test]
    fn name_is_the_file_name_without_sql() {
        let m = parse("001_create_users.sql", "CREATE TABLE users (id int);").unwrap();
        assert_eq!(m.name, "001_create_users");
        assert_eq!(m.number, OrderNumber(1));
    }

    #[test]
    fn order_is_numeric_not_lexical() {
        let got = set(&[
            ("10_c.sql", "select 1"),
            ("9_b.sql", "select 1"),
            ("0001_a.sql", "select 1"),
            ("20250101000000000_ts.sql", "select 1"),
        ])
        .unwrap();
        let names: Vec<_> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["0001_a", "9_b", "10_c", "20250101000000000_ts"]);
    }

    #[test]
    fn a_17_digit_prefix_is_a_utc_timestamp_like_node_pg_migrate() {
        // 2020-05-13T07:07:24.505Z
        assert_eq!(
            OrderNumber::from_digits("20200513070724505"),
            Some(OrderNumber(1_589_353_644_505))
        );
        // As epoch milliseconds it sorts before a 13-digit number above that.
        let got = set(&[
            ("1600000000000_b.sql", "select 1"),
            ("20200513070724505_a.sql", "select 1"),
        ])
        .unwrap();
        assert_eq!(got[0].name, "20200513070724505_a");
        for bad in [
            "20201301000000000",
            "20210229000000000",
            "19691231235959999",
        ] {
            assert_eq!(OrderNumber::from_digits(bad), None, "{bad}");
        }
        assert!(matches!(
            classify("20201301000000000_x.sql"),
            Err(SourceError::BadNumber { .. })
        ));
    }

    #[test]
    fn refuses_a_file_without_leading_digits() {
        let err = set(&[("create_users.sql", "select 1")]).unwrap_err();
        assert_eq!(
            err.0,
            [SourceError::NoLeadingDigits {
                file: "create_users.sql".into()
            }]
        );
        assert!(err.to_string().contains("must start with its number"));
    }

    #[test]
    fn refuses_two_files_with_the_same_number() {
        let err = set(&[("001_a.sql", "select 1"), ("1_b.sql", "select 1")]).unwrap_err();
        assert_eq!(
            err.0,
            [SourceError::DuplicateNumber {
                first: "001_a.sql".into(),
                second: "1_b.sql".into(),
                number: "1".into()
            }]
        );
        assert!(err.to_string().contains("renumber one of them"));
    }

    #[test]
    fn refuses_an_empty_file_and_a_comment_only_file() {
        for content in ["", "  \n", "-- just a note\n/* and this */\n"] {
            let err = parse("002_empty.sql", content).unwrap_err();
            assert_eq!(
                err,
                [SourceError::Empty {
                    file: "002_empty.sql".into()
                }]
            );
        }
    }

    #[test]
    fn refuses_other_files_but_accepts_a_readme() {
        let err = set(&[
            ("README.md", "# notes"),
            ("readme", "notes"),
            ("001_a.sql", "select 1"),
            ("002_b.js", "exports.up = () => {}"),
            (".gitkeep", ""),
        ])
        .unwrap_err();
        let files: Vec<_> = err
            .0
            .iter()
            .map(|e| match e {
                SourceError::UnexpectedFile { file } => file.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(files, ["002_b.js", ".gitkeep"]);
    }

    #[test]
    fn refuses_names_that_do_not_fit_the_history_table() {
        let long = format!("001_{}.sql", "x".repeat(260));
        for file in [long.as_str(), "001_it's.sql", "001_a b.sql"] {
            assert!(matches!(classify(file), Err(SourceError::BadName { .. })));
        }
    }

    #[test]
    fn refuses_non_utf8() {
        let err = parse_migration("001_a.sql", &[0xff, 0xfe, b's']).unwrap_err();
        assert_eq!(
            err,
            [SourceError::NotUtf8 {
                file: "001_a.sql".into()
            }]
        );
    }

    #[test]
    fn up_marker_is_accepted_and_text_before_it_dropped() {
        let m = parse(
            "003_x.sql",
            "-- a note\nSELECT 'dropped';\n--  Up Migration\nCREATE TABLE x (id int);\n",
        )
        .unwrap();
        assert_eq!(m.sql(), "CREATE TABLE x (id int);\n");
        assert_eq!(m.statements.len(), 1);
        assert_eq!(m.location_of_body_offset(0).line, 4);
    }

    #[test]
    fn marker_matching_follows_node_pg_migrate() {
        assert!(is_marker("-- Up Migration", "up"));
        assert!(is_marker("  ---- up   MIGRATION here", "up"));
        assert!(is_marker("--up migration", "up"));
        assert!(!is_marker("-- Upmigration", "up"));
        assert!(!is_marker("SELECT 1 -- Up Migration", "up"));
        assert!(is_marker("-- Down Migration", "down"));
    }

    #[test]
    fn down_section_is_refused_with_a_forward_only_message() {
        let err = parse(
            "004_x.sql",
            "-- Up Migration\nCREATE TABLE x (id int);\n-- Down Migration\nDROP TABLE x;\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            [SourceError::DownMigration {
                file: "004_x.sql".into(),
                line: 3
            }]
        );
        assert!(err[0].to_string().contains("forward-only"));
        assert!(
            err[0]
                .to_string()
                .contains("fix forward with a new migration")
        );
    }

    #[test]
    fn directives_are_read_from_the_header() {
        let m = parse(
            "005_idx.sql",
            "-- Builds the index without blocking writes.\n\
             -- db-setup: no-transaction\n\
             -- db-setup: statement-timeout=30min\n\
             --db-setup:lock-timeout = 2s\n\
             \n\
             DROP INDEX CONCURRENTLY IF EXISTS idx_a;\n\
             CREATE INDEX CONCURRENTLY idx_a ON a (x);\n",
        )
        .unwrap();
        assert_eq!(
            m.directives,
            Directives {
                no_transaction: true,
                statement_timeout: Some(Duration::from_secs(1800)),
                lock_timeout: Some(Duration::from_secs(2)),
                phase: Phase::Expand,
                allow_breaking: None,
            }
        );
        let stmts: Vec<_> = m.statement_texts().map(|(_, t)| t).collect();
        assert_eq!(
            stmts,
            [
                "DROP INDEX CONCURRENTLY IF EXISTS idx_a",
                "CREATE INDEX CONCURRENTLY idx_a ON a (x)"
            ]
        );
    }

    #[test]
    fn unknown_and_late_directives_are_refused() {
        let err = parse(
            "006_x.sql",
            "-- db-setup: no-transactions\nSELECT 1;\n-- db-setup: no-transaction\nSELECT 2;\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            [
                SourceError::UnknownDirective {
                    file: "006_x.sql".into(),
                    line: 1,
                    text: "no-transactions".into()
                },
                SourceError::LateDirective {
                    file: "006_x.sql".into(),
                    line: 3
                }
            ]
        );
        let bad_value = parse(
            "007_x.sql",
            "-- db-setup: statement-timeout=soon\nSELECT 1;",
        )
        .unwrap_err();
        assert!(matches!(
            bad_value[0],
            SourceError::UnknownDirective { line: 1, .. }
        ));
    }

    #[test]
    fn the_phase_directive_is_read_and_checked() {
        let m = parse("020_x.sql", "SELECT 1;").unwrap();
        assert_eq!(m.directives.phase, Phase::Expand);
        let m = parse(
            "021_x.sql",
            "-- Drops the old column.\n-- db-setup: phase=contract\nSELECT 1;",
        )
        .unwrap();
        assert_eq!(m.directives.phase, Phase::Contract);
        let m = parse("022_x.sql", "-- db-setup: phase = Expand\nSELECT 1;").unwrap();
        assert_eq!(m.directives.phase, Phase::Expand);
        for bad in ["phase=later", "phase", "phase="] {
            let err = parse("023_x.sql", &format!("-- db-setup: {bad}\nSELECT 1;")).unwrap_err();
            assert_eq!(
                err,
                [SourceError::UnknownDirective {
                    file: "023_x.sql".into(),
                    line: 1,
                    text: bad.into()
                }],
                "{bad}"
            );
        }
        let late = parse(
            "024_x.sql",
            "SELECT 1;\n-- db-setup: phase=contract\nSELECT 2;",
        )
        .unwrap_err();
        assert_eq!(
            late,
            [SourceError::LateDirective {
                file: "024_x.sql".into(),
                line: 2
            }]
        );
    }

    #[test]
    fn a_breaking_change_in_an_expand_file_is_refused_with_file_line_statement_and_fix() {
        let err = parse(
            "030_rename.sql",
            "-- Renames a column.\nCREATE TABLE x (a int);\n\nALTER TABLE customers\n  RENAME COLUMN name TO full_name;\n",
        )
        .unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        let SourceError::BreakingInExpand {
            file,
            line,
            statement,
            operation,
            ..
        } = &err[0]
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            (file.as_str(), *line, statement.as_str(), *operation),
            (
                "030_rename.sql",
                4,
                "ALTER TABLE customers RENAME COLUMN name TO full_name",
                "RENAME"
            )
        );
        let text = err[0].to_string();
        for needle in [
            "030_rename.sql:4:",
            "expand/contract pair",
            "docs/migrations.md",
            "allow-breaking=<reason>",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let drop = parse("031_x.sql", "ALTER TABLE t DROP COLUMN a;").unwrap_err();
        assert!(
            drop[0]
                .to_string()
                .contains("move it to a migration with `-- db-setup: phase=contract`"),
            "{}",
            drop[0]
        );
    }

    #[test]
    fn a_contract_file_and_the_override_may_hold_breaking_changes() {
        let m = parse(
            "032_x.sql",
            "-- db-setup: phase=contract\nALTER TABLE t DROP COLUMN a;\nDROP TABLE old;\n",
        )
        .unwrap();
        assert_eq!(m.directives.phase, Phase::Contract);
        let m = parse(
            "033_x.sql",
            "-- db-setup: allow-breaking=the table was never released to any application\n\
             DROP TABLE staging_import;\n",
        )
        .unwrap();
        assert_eq!(
            m.directives.allow_breaking.as_deref(),
            Some("the table was never released to any application")
        );
        // The override needs its reason.
        let err = parse("034_x.sql", "-- db-setup: allow-breaking=\nDROP TABLE t;\n").unwrap_err();
        assert!(
            matches!(&err[0], SourceError::UnknownDirective { line: 1, .. }),
            "{err:?}"
        );
        assert!(
            matches!(&err[1], SourceError::BreakingInExpand { .. }),
            "{err:?}"
        );
        // Statements only in comments and strings pass in an expand file.
        assert!(
            parse(
                "035_x.sql",
                "-- DROP TABLE t;\nCOMMENT ON TABLE t IS 'DROP TABLE t';\nDO $$ BEGIN DROP TABLE t; END $$;\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn the_override_line_does_not_change_the_checksum_other_lines_do() {
        let shipped = parse("040_x.sql", "-- Cleans up.\nDROP TABLE IF EXISTS t;\n");
        // Today the shipped file is refused; with the override it passes with the same checksum.
        assert!(matches!(
            shipped.as_ref().unwrap_err()[0],
            SourceError::BreakingInExpand { .. }
        ));
        let overridden = parse(
            "040_x.sql",
            "-- Cleans up.\n-- db-setup: allow-breaking=t was never released\nDROP TABLE IF EXISTS t;\n",
        )
        .unwrap();
        assert_eq!(
            overridden.checksum,
            checksum("-- Cleans up.\nDROP TABLE IF EXISTS t;\n")
        );
        // Any other directive, or the SQL, still counts.
        let other = parse("041_x.sql", "-- db-setup: lock-timeout=5s\nSELECT 1;\n").unwrap();
        assert_ne!(other.checksum, checksum("SELECT 1;\n"));
        assert_eq!(
            other.checksum,
            checksum("-- db-setup: lock-timeout=5s\nSELECT 1;\n")
        );
    }

    #[test]
    fn concurrent_index_in_a_transactional_file_is_refused_with_the_fix() {
        let err = parse(
            "008_idx.sql",
            "CREATE TABLE a (x int);\ncreate unique index concurrently i on a (x);\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            [SourceError::NeedsNoTransaction {
                file: "008_idx.sql".into(),
                line: 2,
                statement: "CREATE UNIQUE INDEX CONCURRENTLY".into()
            }]
        );
        assert!(err[0].to_string().contains("-- db-setup: no-transaction"));
        for sql in [
            "DROP INDEX CONCURRENTLY i",
            "REINDEX (VERBOSE) TABLE CONCURRENTLY a",
            "VACUUM a",
            "CREATE DATABASE other",
            "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
            "ALTER SYSTEM SET work_mem = '64MB'",
        ] {
            assert!(
                matches!(
                    parse("009_x.sql", sql).unwrap_err()[0],
                    SourceError::NeedsNoTransaction { .. }
                ),
                "{sql}"
            );
        }
    }

    #[test]
    fn ordinary_statements_with_similar_words_pass() {
        for sql in [
            "CREATE INDEX concurrently_named ON a (x)",
            "ALTER TABLE a ADD COLUMN concurrently int",
            "ROLLBACK TO SAVEPOINT s",
            "DO $$ BEGIN PERFORM 1; END $$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        ] {
            assert!(parse("010_x.sql", sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn transaction_control_is_refused_in_every_mode() {
        for header in ["", "-- db-setup: no-transaction\n"] {
            let err = parse(
                "011_x.sql",
                &format!("{header}BEGIN;\nSELECT 1;\nCOMMIT;\n"),
            )
            .unwrap_err();
            assert_eq!(err.len(), 2, "{err:?}");
            assert!(matches!(
                &err[0],
                SourceError::TransactionControl { statement, .. } if statement == "BEGIN"
            ));
        }
    }

    #[test]
    fn a_commit_after_an_identifier_named_begin_is_refused() {
        let sql = "CREATE FUNCTION in_window(begin timestamptz, finish timestamptz) RETURNS boolean\n\
                   LANGUAGE sql AS $$ SELECT now() BETWEEN begin AND finish $$;\n\
                   COMMIT;\n\
                   CREATE TABLE after_commit (id int);\n";
        let err = parse("013_x.sql", sql).unwrap_err();
        assert_eq!(
            err,
            [SourceError::TransactionControl {
                file: "013_x.sql".into(),
                line: 3,
                statement: "COMMIT".into()
            }]
        );
    }

    #[test]
    fn unterminated_literal_is_refused_with_its_line() {
        let err = parse("012_x.sql", "SELECT 1;\nSELECT 'oops;\n").unwrap_err();
        assert_eq!(
            err,
            [SourceError::Lex {
                file: "012_x.sql".into(),
                line: 2,
                what: "unterminated string literal".into()
            }]
        );
    }

    #[test]
    fn checksum_ignores_line_ending_style() {
        let unix = parse("013_x.sql", "SELECT 1;\nSELECT 2;\n").unwrap();
        let windows = parse("013_x.sql", "SELECT 1;\r\nSELECT 2;\r\n").unwrap();
        assert_eq!(unix.checksum, windows.checksum);
        assert_eq!(unix.checksum.len(), 64);
        assert_ne!(
            unix.checksum,
            parse("013_x.sql", "SELECT 3;").unwrap().checksum
        );
        // Known value: sha256("SELECT 1;\n").
        assert_eq!(
            checksum("SELECT 1;\r\n"),
            "b4e0497804e46e0a0b0b8c31975b062152d551bac49c3c2e80932567b4085dcd"
        );
    }

    #[test]
    fn error_positions_map_to_file_lines_and_columns() {
        let m = parse(
            "014_x.sql",
            "-- Up Migration\nCREATE TABLE é (id int);\nSELEC 1;\n",
        )
        .unwrap();
        // PostgreSQL reports positions in characters, from 1, into the sent text.
        let sent = m.sql();
        let pos = sent.chars().position(|c| c == 'S').unwrap() as u32 + 1;
        assert_eq!(m.location_of_error(0, pos), Location { line: 3, column: 1 });
        let (offset, _) = m.statement_texts().nth(1).unwrap();
        assert_eq!(
            m.location_of_error(offset, 3),
            Location { line: 3, column: 3 }
        );
    }
}
