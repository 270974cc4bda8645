//! Makes cargo rebuild when a migration is added, removed or edited, and
//! refuses a bad `migrations/` directory at compile time with the same
//! checks the runtime applies (the directory walk and the parser are shared,
//! not copied). Passes the set's `MigrationsHash` (the same function as the
//! runtime's) to the crate as `DB_SETUP_MIGRATIONS_SHA256`: the binary carries it as a marker, which
//! `make package` writes beside the bootstrap for the CDK construct.

use std::path::Path;

#[allow(dead_code)]
#[path = "src/migrate/breaking.rs"]
mod breaking;
#[allow(dead_code)]
#[path = "src/duration.rs"]
mod duration;
#[path = "src/migrate/files.rs"]
mod files;
#[path = "src/migrate/hash.rs"]
mod hash;
#[allow(dead_code)]
#[path = "src/migrate/parse.rs"]
mod parse;
#[allow(dead_code)]
#[path = "src/migrate/sql.rs"]
mod sql;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    // A directory here makes cargo scan every file below it for changes.
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=src/migrate/parse.rs");
    println!("cargo:rerun-if-changed=src/migrate/sql.rs");
    println!("cargo:rerun-if-changed=src/migrate/breaking.rs");
    println!("cargo:rerun-if-changed=src/migrate/hash.rs");
    println!("cargo:rerun-if-changed=src/migrate/files.rs");

    let files = files::read_dir(&dir).unwrap_or_else(|e| fail(&e.to_string()));
    println!(
        "cargo:rustc-env=DB_SETUP_MIGRATIONS_SHA256={}",
        hash::set_hash(&files)
    );
    if let Err(errors) = parse::parse_set(files) {
        fail(&errors.to_string());
    }
}

fn fail(message: &str) -> ! {
    for line in message.lines() {
        println!("cargo:warning={line}");
    }
    eprintln!("error: migrations/ is not valid:\n{message}");
    std::process::exit(1);
}
