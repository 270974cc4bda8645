//! The statement splitter against PostgreSQL itself: for generated lists of
//! statements full of the constructs that hide a `;` (strings of every kind,
//! continued strings, dollar quotes, nested comments, parentheses,
//! `BEGIN ATOMIC` bodies, identifiers named `begin` and `end`), the split must
//! be what the server sees. The server is asked twice, in a transaction that
//! is rolled back: the whole text as one simple query, then each piece of the
//! split on its own. Each piece must be exactly one statement for the server
//! (one CommandComplete), and the pieces together must answer exactly what
//! the whole text answered.

mod common;

use common::TestDb;
use db_setup::migrate::sql;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio_postgres::{Client, SimpleQueryMessage};

/// What the server answered, comparable: rows and command completions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Row(Vec<Option<String>>),
    Done(u64),
}

fn answers(messages: &[SimpleQueryMessage]) -> Vec<Answer> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(Answer::Row(
                (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect(),
            )),
            SimpleQueryMessage::CommandComplete(n) => Some(Answer::Done(*n)),
            _ => None,
        })
        .collect()
}

fn statements_seen(answers: &[Answer]) -> usize {
    answers
        .iter()
        .filter(|a| matches!(a, Answer::Done(_)))
        .count()
}

/// Text of a string body: letters, spaces, `;`, quotes, backslashes, `$`,
/// comment starters and newlines, the characters a splitter can trip on.
fn body() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just(" "),
            Just(";"),
            Just("'"),
            Just("\\"),
            Just("$"),
            Just("$$"),
            Just("--"),
            Just("/*"),
            Just("*/"),
            Just("\n"),
            Just("\""),
            Just("begin"),
            Just("END"),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

/// A plain string literal of `s`.
fn plain(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An escape string literal of `s` (quotes escaped one way or the other).
fn escaped(s: &str, backslash_quote: bool) -> String {
    let quote = if backslash_quote { "\\'" } else { "''" };
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', quote))
}

/// Between the parts of a continued string: whitespace with a newline, maybe line comments.
fn continuation() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("\n"),
        Just("  \n\t"),
        Just(" -- a comment; with 'quotes'\n"),
        Just("\n-- c\n  "),
        Just("\r\n"),
    ]
}

/// One item: the statements it consists of (`{n}` makes names unique).
fn item() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        body().prop_map(|s| vec![format!("SELECT {}", plain(&s))]),
        (body(), any::<bool>()).prop_map(|(s, bq)| vec![format!("SELECT {}", escaped(&s, bq))]),
        // E'' continued: the second part keeps escape mode (\' is a quote there).
        (body(), body(), continuation(), any::<bool>()).prop_map(|(a, b, gap, bq)| {
            let second = escaped(&b, bq);
            vec![format!("SELECT {}{gap}{}", escaped(&a, bq), &second[1..])]
        }),
        // A plain string continued: a backslash stays a character.
        (body(), body(), continuation())
            .prop_map(|(a, b, gap)| vec![format!("SELECT {}{gap}{}", plain(&a), plain(&b))]),
        // Not a continuation (no newline): two strings would be a syntax error, so concatenate.
        (body(), body()).prop_map(|(a, b)| vec![format!(
            "SELECT {} /* not continued */ || {}",
            escaped(&a, true),
            plain(&b)
        )]),
        body().prop_map(|s| vec![format!("SELECT U&{}", plain(&s.replace('\\', "\\\\")))]),
        body().prop_map(|s| vec![format!("SELECT 1 AS {}", {
            let id = format!(
                "x{}",
                s.replace('\\', "\\\\").replace('"', "\"\"").replace('\n', " ")
            );
            format!("U&\"{id}\" UNION ALL SELECT 2 AS \"{id}\"")
        })]),
        (body(), prop_oneof![Just(""), Just("t"), Just("a_b1"), Just("é")]).prop_map(|(s, tag)| {
            let close = format!("${tag}$");
            let mut s = s;
            while s.contains(&close) {
                s = s.replace(&close, "");
            }
            vec![format!("SELECT ${tag}${s} ${tag}$")]
        }),
        Just(vec![
            "PREPARE p{n} AS SELECT $1::int + $2::int".to_string(),
            "EXECUTE p{n}(1, 2)".to_string(),
            "DEALLOCATE p{n}".to_string()
        ]),
        Just(vec![
            "SELECT 1 /* nested /* comment; */ still ; comment */ + 1".to_string()
        ]),
        Just(vec!["SELECT 2 */* c; */ 3, 4 --- x;\n + 1".to_string()]),
        Just(vec!["SELECT B'101', X'1F', 0x1F, 1_000, 1.5e3".to_string()]),
        Just(vec![
            "CREATE TABLE b{n} (begin int, \"end\" text)".to_string(),
            "INSERT INTO b{n} (begin, \"end\") VALUES (1, ';')".to_string(),
            "SELECT begin, b.begin, b.\"end\" FROM b{n} AS b".to_string(),
        ]),
        Just(vec![
            "CREATE FUNCTION f{n}(begin timestamptz, finish timestamptz) RETURNS boolean \
             LANGUAGE sql AS $$ SELECT now() BETWEEN begin AND finish $$"
                .to_string(),
            "SELECT f{n}(now() - interval '1 day', now() + interval '1 day')".to_string(),
        ]),
        Just(vec![
            "CREATE FUNCTION g{n}(begin int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  \
             SELECT CASE WHEN begin > 0 THEN (CASE begin WHEN 1 THEN 10 ELSE 20 END) ELSE 2 END;\n  \
             SELECT t.end FROM (SELECT begin + 1 AS end) AS t;\nEND"
                .to_string(),
            "SELECT g{n}(1), g{n}(-1)".to_string(),
        ]),
        Just(vec![
            "CREATE TABLE log{n} (x int)".to_string(),
            "CREATE PROCEDURE p{n}(begin int) LANGUAGE sql BEGIN /* c; */ ATOMIC \
             INSERT INTO log{n} VALUES (begin); INSERT INTO log{n} VALUES (begin + 1); END"
                .to_string(),
            "CALL p{n}(5)".to_string(),
            "SELECT sum(x) FROM log{n}".to_string(),
        ]),
        Just(vec![
            "CREATE TABLE r{n} (x int)".to_string(),
            "CREATE TABLE rl{n} (x int)".to_string(),
            "CREATE RULE rr{n} AS ON INSERT TO r{n} DO ALSO (INSERT INTO rl{n} VALUES (NEW.x); \
             INSERT INTO rl{n} VALUES (NEW.x + 1))"
                .to_string(),
            "INSERT INTO r{n} VALUES (1)".to_string(),
            "SELECT count(*), sum(x) FROM rl{n}".to_string(),
        ]),
    ]
}

/// What goes after a statement's `;`: whitespace, comments, empty statements.
fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(";"),
        Just(";\n"),
        Just("; "),
        Just(";\n-- between; 'x'\n"),
        Just("; /* between; /* nested */ */\n"),
        Just(";;\n"),
        Just("\n;\n"),
    ]
}

/// A script and the number of statements it was built from.
fn script() -> impl Strategy<Value = (String, usize)> {
    proptest::collection::vec((item(), proptest::collection::vec(separator(), 4)), 1..6).prop_map(
        |items| {
            let mut text = String::new();
            let mut count = 0;
            for (n, (statements, seps)) in items.into_iter().enumerate() {
                for (k, statement) in statements.iter().enumerate() {
                    text.push_str(&statement.replace("{n}", &n.to_string()));
                    text.push_str(seps[k % seps.len()]);
                    count += 1;
                }
            }
            (text, count)
        },
    )
}

async fn run(client: &Client, texts: &[&str]) -> Result<Vec<Vec<Answer>>, String> {
    client
        .simple_query("BEGIN")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut failure = None;
    for text in texts {
        match client.simple_query(text).await {
            Ok(messages) => out.push(answers(&messages)),
            Err(e) => {
                failure = Some(format!("{}: {text:?}", common::db_message(&e)));
                break;
            }
        }
    }
    client
        .simple_query("ROLLBACK; DEALLOCATE ALL")
        .await
        .map_err(|e| e.to_string())?;
    match failure {
        Some(f) => Err(f),
        None => Ok(out),
    }
}

async fn check(client: &Client, script: &str, built_from: usize) -> Result<(), TestCaseError> {
    let pieces = sql::split(script).map_err(|e| TestCaseError::fail(format!("{e}: {script:?}")))?;
    let texts: Vec<&str> = pieces.iter().map(|p| p.text(script)).collect();
    let whole = run(client, &[script])
        .await
        .map_err(|e| TestCaseError::fail(format!("the server refused the generated script: {e}")))?
        .remove(0);
    let separately = run(client, &texts).await.map_err(|e| {
        TestCaseError::fail(format!(
            "a piece of the split fails on its own ({e}); pieces: {texts:#?}"
        ))
    })?;
    prop_assert_eq!(
        statements_seen(&whole),
        texts.len(),
        "the server saw {} statements, the split {}: {:#?}",
        statements_seen(&whole),
        texts.len(),
        texts
    );
    for (piece, answer) in texts.iter().zip(&separately) {
        prop_assert_eq!(
            statements_seen(answer),
            1,
            "a piece is not one statement for the server: {:?}",
            piece
        );
    }
    prop_assert_eq!(&separately.concat(), &whole);
    prop_assert_eq!(texts.len(), built_from, "{:#?}", texts);
    Ok(())
}

#[test]
fn the_split_is_what_postgresql_sees() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (db, conn) = rt.block_on(async {
        let db = TestDb::new("lexer").await;
        let conn = db.connect().await;
        (db, conn)
    });
    // Seeded: the same cases every run (proptest's default would vary them).
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 200,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let result = runner.run(&script(), |(text, count)| {
        rt.block_on(check(conn.client(), &text, count))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    drop(conn);
    drop(db);
}
