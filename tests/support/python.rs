//! The official Databricks SDK for Python in a cached virtualenv.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tokio::sync::OnceCell;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static VENV: OnceCell<PathBuf> = OnceCell::const_new();

/// A virtualenv with the pinned SDK, under the project cache so later runs reuse it.
pub async fn venv() -> &'static Path {
    VENV.get_or_init(|| async {
        let requirements = std::fs::read_to_string(manifest_dir().join("tests/python/requirements.txt"))
            .expect("requirements");
        let pin = requirements.trim().replace("==", "-");
        let cache = std::env::var_os("DOO_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/databricks-oauth-operator")
        });
        let dir = cache.join("python").join(pin);
        let python = dir.join("bin/python");
        if !dir.join(".complete").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&dir),
                "creating the virtualenv (python3 -m venv)",
            );
            run(
                Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(manifest_dir().join("tests/python/requirements.txt")),
                "installing databricks-sdk from PyPI",
            );
            std::fs::write(dir.join(".complete"), requirements).expect("marking the virtualenv complete");
        }
        dir
    })
    .await
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
