//! Tidy tests: the architecture invariants that a grep can check
//! (ARCHITECTURE.md, "Architecture invariants"), so that a change that
//! breaks one fails here, with the file and line.

use std::path::{Path, PathBuf};

fn rust_files(under: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if under.is_file() {
        out.push(under.to_owned());
        return out;
    }
    for entry in std::fs::read_dir(under).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn src(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path)
}

/// `(file, line number, line)` of every line under `paths` containing one
/// of `needles`, comments included (a comment naming the client is a hint
/// that something leaked).
fn occurrences(paths: &[&str], needles: &[&str]) -> Vec<(String, usize, String)> {
    let mut found = Vec::new();
    for path in paths {
        for file in rust_files(&src(path)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                if needles.iter().any(|n| line.contains(n)) {
                    found.push((file.display().to_string(), i + 1, line.trim().to_owned()));
                }
            }
        }
    }
    found
}

/// The request path never awaits Redis, and the data model knows nothing
/// of how it is synced: nothing under `src/proxy`, `src/server.rs` or
/// `src/routes` names the Redis client or the sync module.
#[test]
fn the_request_path_and_the_data_model_never_name_redis_or_sync() {
    let found = occurrences(
        &["proxy", "server.rs", "routes"],
        &["fred", "crate::sync", "super::sync", "switchyard::sync"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

/// Only the sync module stores into the `ArcSwap` (the snapshot loader it
/// runs at start included; `state.rs` defines it). Unit-test modules
/// (`tests.rs`) set tables up directly.
#[test]
fn only_sync_swaps_the_table() {
    let found: Vec<_> = occurrences(&[""], &["swap_table("])
        .into_iter()
        .filter(|(file, _, line)| {
            let allowed = [
                "/src/sync/",
                "/src/state.rs",
                "/src/snapshot/mod.rs",
                "/tests.rs",
            ];
            !allowed.iter().any(|a| file.contains(a)) && !line.starts_with("//")
        })
        .collect();
    assert!(found.is_empty(), "{found:#?}");
    // And it stays crate-private.
    let state = std::fs::read_to_string(src("state.rs")).unwrap();
    assert!(state.contains("pub(crate) fn swap_table("));
}

/// Only the sync module stores the ACME challenge table (the table type
/// defines the method).
#[test]
fn only_sync_installs_the_challenge_table() {
    let found: Vec<_> = occurrences(&[""], &["install_challenge_table("])
        .into_iter()
        .filter(|(file, _, line)| {
            let allowed = ["/src/sync/", "/src/acme/challenges.rs"];
            !allowed.iter().any(|a| file.contains(a)) && !line.starts_with("//")
        })
        .collect();
    assert!(found.is_empty(), "{found:#?}");
    let challenges = std::fs::read_to_string(src("acme/challenges.rs")).unwrap();
    assert!(challenges.contains("pub(crate) fn install_challenge_table("));
}

/// The sync module cites the repo's own documents, not a design document
/// outside it.
#[test]
fn sync_cites_the_repos_own_documents() {
    let found = occurrences(&["sync", "state.rs", "admin.rs", "lib.rs"], &["DESIGN "]);
    assert!(found.is_empty(), "{found:#?}");
}

/// Only the sync module installs certificate tables (its snapshot restore
/// included; `tls/resolver.rs` defines it). Unit-test modules set tables
/// up directly.
#[test]
fn only_sync_installs_certificate_tables() {
    let found: Vec<_> = occurrences(&[""], &["install_table("])
        .into_iter()
        .filter(|(file, line_no, line)| {
            let allowed = ["/src/sync/", "/src/tls/resolver.rs"];
            !allowed.iter().any(|a| file.contains(a))
                && !line.starts_with("//")
                && !in_test_module(file, *line_no)
        })
        .collect();
    assert!(found.is_empty(), "{found:#?}");
    let resolver = std::fs::read_to_string(src("tls/resolver.rs")).unwrap();
    assert!(resolver.contains("pub(crate) fn install_table("));
}

/// Whether line `line_no` of `file` comes after the file's `#[cfg(test)]`
/// module.
fn in_test_module(file: &str, line_no: usize) -> bool {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().take(line_no).collect();
    lines
        .windows(2)
        .any(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests"))
}
