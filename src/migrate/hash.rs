//! The `MigrationsHash`: one definition, used by the runtime, by `build.rs`
//! (which also compiles this file) and, in TypeScript, by the CDK construct.

/// The hash the CDK construct (infra/lib/db-setup.ts, `hashMigrations`)
/// puts in the `MigrationsHash` property: SHA-256 over the `.sql` files in
/// file-name order, each as `<name length>:<name>:<content length>:<content>`
/// (raw bytes). Equal hashes mean the template and this code hold the same
/// migrations.
pub fn set_hash(files: &[(String, Vec<u8>)]) -> String {
    use sha2::{Digest, Sha256};
    let mut sql: Vec<&(String, Vec<u8>)> =
        files.iter().filter(|(n, _)| n.ends_with(".sql")).collect();
    sql.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (name, content) in sql {
        hasher.update(format!("{}:{}:{}:", name.len(), name, content.len()).as_bytes());
        hasher.update(content);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
