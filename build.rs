//! Builds the web console (`src/console/web`) so that `cargo run -- demo` and `cargo test` work on
//! a fresh clone with no extra step: `npm install` (which keeps to the committed lockfile; `npm ci` trips over optional
//! platform packages with the npm 11 here) when `node_modules` is missing or older than the
//! lockfile, then `npm run build` (type check + Vite) when a web source is newer than the bundle.
//! `src/console/mod.rs` embeds the result (`dist/`) with rust-embed.
//!
//! Cargo reruns this script only when a listed input changes, and the script itself skips both
//! steps when their outputs are already newer than their inputs, so a build with nothing changed
//! costs a few `stat` calls.
//!
//! Set `KURA_SKIP_WEB_BUILD=1` to use an existing `dist/` as is (e.g. one built elsewhere).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const WEB: &str = "src/console/web";
/// Inputs of the bundle (not `node_modules` or `dist`, which would retrigger the build).
const SOURCES: &[&str] = &[
    "src",
    "public",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
    "../../../queries/pms",
];

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join(WEB);
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", web.join(s).display());
    }
    println!("cargo:rerun-if-env-changed=KURA_SKIP_WEB_BUILD");

    let index = web.join("dist/index.html");
    if std::env::var_os("KURA_SKIP_WEB_BUILD").is_some_and(|v| v == "1") {
        if !index.exists() {
            fail(&format!(
                "KURA_SKIP_WEB_BUILD=1 but {} is missing; unset it or build the console with `npm install && npm run build` in {WEB}.",
                index.display()
            ));
        }
        return;
    }

    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    if newest(std::slice::from_ref(&lock)) > mtime(&installed) {
        npm(&web, &["install", "--no-audit", "--no-fund"]);
    }

    let inputs: Vec<PathBuf> = SOURCES
        .iter()
        .map(|s| web.join(s))
        .chain([installed])
        .collect();
    if newest(&inputs) > mtime(&index) {
        npm(&web, &["run", "build"]);
        if !index.exists() {
            fail("`npm run build` finished but produced no dist/index.html.");
        }
    }
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new("npm").args(args).current_dir(dir).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "`npm {}` in {} failed ({s}); run it there by hand to see why.",
            args.join(" "),
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(
            "npm was not found. The web console is built with Node.js: install it \
             (Debian/Ubuntu: `apt-get install nodejs npm`, Node 20.19 or newer) and build again.\n\
             npm が見つかりません。Node.js をインストールしてください（例: `apt-get install nodejs npm`）。",
        ),
        Err(e) => fail(&format!("could not start npm: {e}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: kura web console build: {msg}");
    std::process::exit(1);
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Newest modification time among the paths, walking directories.
fn newest(paths: &[PathBuf]) -> Option<SystemTime> {
    let mut best: Option<SystemTime> = None;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = meta.modified() {
            best = best.max(Some(m));
        }
    }
    best
}
