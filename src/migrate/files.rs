//! Reading a migrations directory into `(file name, content)` pairs: one
//! walk shared by `build.rs` (through `#[path]`, so std only) and
//! [`super::MigrationSet::from_dir`].

use std::path::Path;

/// A directory entry that could not be read: what (the directory or the
/// file's name) and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what}: {error}")]
pub struct Unreadable {
    /// The directory, or the name of the file in it.
    pub what: String,
    /// What the system said.
    pub error: std::io::Error,
}

/// Every entry of `dir` as `(file name, content)`, sorted by name. A
/// subdirectory is listed with empty content: the parser classifies (and
/// refuses) it by its name, as it does any other entry.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, Unreadable> {
    let unreadable_dir = |error| Unreadable {
        what: dir.display().to_string(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable_dir)? {
        let entry = entry.map_err(unreadable_dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = if entry.path().is_dir() {
            Vec::new()
        } else {
            match std::fs::read(entry.path()) {
                Ok(bytes) => bytes,
                Err(error) => return Err(Unreadable { what: name, error }),
            }
        };
        files.push((name, bytes));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_sorted_with_directories_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("002_b.sql"), "SELECT 2;").unwrap();
        std::fs::write(dir.path().join("001_a.sql"), "SELECT 1;").unwrap();
        std::fs::create_dir(dir.path().join("003_dir.sql")).unwrap();
        let files = read_dir(dir.path()).unwrap();
        assert_eq!(
            files,
            vec![
                ("001_a.sql".to_string(), b"SELECT 1;".to_vec()),
                ("002_b.sql".to_string(), b"SELECT 2;".to_vec()),
                ("003_dir.sql".to_string(), Vec::new()),
            ]
        );
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = read_dir(&missing).unwrap_err();
        assert_eq!(e.what, missing.display().to_string());
        assert_eq!(e.error.kind(), std::io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{e}"
        );
    }
}
