//! Embeds `migrations/*.cql` into the binary, so a deployed `mot migrate` carries its schema.

use std::fs;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("migrations/ exists")
        .map(|entry| entry.expect("readable migrations/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "cql"))
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push(']');
    let target = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    fs::write(target, out).expect("OUT_DIR is writable");
}
