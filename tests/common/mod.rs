//! Shared by the integration tests: the dev topology, unique names, and the running servers.
//!
//! Tests talk to the real Kafka clusters and Cassandra that `dev/infra up` started (dev/test
//! starts them). They never restart servers; they isolate themselves by unique topic names,
//! regions and keyspaces.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use mot::config::Config;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The dev topology, as `dev/run` uses it.
pub fn dev_config() -> Config {
    Config::load(&repo_path("dev/mot.toml")).expect("dev/mot.toml is valid")
}

/// A name no other test (nor an earlier run) uses: `prefix_<pid>_<n>_<nanos>`, lowercase.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// dev/mot.toml with some text replaced, written to a temporary file.
pub fn dev_toml_with(replacements: &[(&str, &str)]) -> tempfile::NamedTempFile {
    let mut text = std::fs::read_to_string(repo_path("dev/mot.toml")).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "dev/mot.toml has no `{from}`");
        text = text.replace(from, to);
    }
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// The `mot` binary built for this test run.
pub fn mot_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mot")
}
