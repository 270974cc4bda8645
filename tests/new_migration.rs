//! `make migration NAME=...` (scripts/new-migration.sh): the next numbered
//! file with a header the parser reads as no directive at all, and clear
//! refusals of bad names. Run in a temporary copy of migrations/, so nothing
//! is left behind in the embedded set.

use std::path::Path;
use std::process::Command;

use db_setup::migrate::MigrationSet;
use db_setup::migrate::parse::Directives;

fn copy_of_migrations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir("migrations").expect("migrations/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    dir
}

fn new_migration(name: &str, dir: &Path) -> (bool, String, String) {
    let out = Command::new("scripts/new-migration.sh")
        .arg(name)
        .arg(dir)
        .output()
        .expect("run scripts/new-migration.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn sql_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("dir").count()
}

#[test]
fn creates_the_next_numbered_file_with_a_header_that_parses() {
    let dir = copy_of_migrations();
    let before = MigrationSet::from_dir(dir.path()).expect("the copy parses");
    let last: u32 = before.migrations().last().expect("some").name[..3]
        .parse()
        .expect("number");
    let (ok, created, err) = new_migration("add_course_tags", dir.path());
    assert!(ok, "{err}");
    let expected = dir
        .path()
        .join(format!("{:03}_add_course_tags.sql", last + 1));
    assert_eq!(Path::new(&created), expected);
    let header = std::fs::read_to_string(&expected).expect("created");
    for word in ["no-transaction", "statement-timeout=", "lock-timeout="] {
        assert!(header.contains(word), "the header explains {word}");
    }
    // Without SQL the build refuses it (it cannot be deployed empty)...
    let err = MigrationSet::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("add_course_tags"), "{err}");
    // ... and with SQL, the header turns on no directive.
    std::fs::write(&expected, format!("{header}SELECT 1;\n")).expect("write");
    let set = MigrationSet::from_dir(dir.path()).expect("parses with SQL");
    let added = set.migrations().last().expect("added");
    assert_eq!(added.name, format!("{:03}_add_course_tags", last + 1));
    assert_eq!(added.directives, Directives::default());
    // The next one gets the next number.
    let (ok, created, _) = new_migration("add_more", dir.path());
    assert!(ok && created.ends_with(&format!("{:03}_add_more.sql", last + 2)));
}

#[test]
fn bad_names_are_refused_with_a_reason_and_nothing_is_created() {
    let dir = copy_of_migrations();
    let count = sql_files(dir.path());
    for (name, reason) in [
        ("", "give a name"),
        ("Add_Tags", "lower-case letters, digits and _"),
        ("add-tags", "lower-case letters, digits and _"),
        ("add tags", "lower-case letters, digits and _"),
        ("../x", "lower-case letters, digits and _"),
        ("013_add_tags", "starts with a number"),
        ("query_embeddings_ivfflat", "exists already"),
    ] {
        let (ok, _, err) = new_migration(name, dir.path());
        assert!(!ok, "{name} accepted");
        assert!(err.contains(reason), "{name}: {err}");
    }
    assert_eq!(sql_files(dir.path()), count);
}
