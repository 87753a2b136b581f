//! The Python of the real-client tests: `tests/clients/venv.sh` makes (once, cached under
//! the target directory) a venv with the ADBC Flight SQL driver, pyarrow, pandas and
//! nbformat from PyPI, and prints its interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python (made on first use; `tests/run.sh` makes it before the tests).
pub fn python() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("tests/clients/venv.sh"))
        .output()
        .expect("run tests/clients/venv.sh");
    assert!(
        out.status.success(),
        "tests/clients/venv.sh failed (needs python3 with venv and PyPI access):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Run `script` (under `tests/clients/`) with `args`; panics with its output unless it
/// exits 0; returns what it printed.
pub fn run(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(root().join("tests/clients").join(script))
        .args(args)
        .output()
        .expect("run the Python client");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{printed}");
    printed
}
