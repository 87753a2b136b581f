//! The real `kura` binary, for tests that must see what an operator sees: `kura demo`
//! started on a free loopback port (ready once it prints its Ctrl-C hint, killed when
//! the guard drops, so a failing test never leaves a server behind), and the command
//! itself for one-shot subcommands.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fixtures::PASSWORD;

/// The `kura` binary of this build.
pub fn kura() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kura"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The live extract directory of `application` under a data directory: the one version
/// directory (`extracts/<application>/<extract id>`) the server keeps.
pub fn live_extract(data_dir: &Path, application: &str) -> std::path::PathBuf {
    let app_dir = data_dir.join("extracts").join(application);
    let versions: Vec<_> = std::fs::read_dir(&app_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(
        versions.len(),
        1,
        "one live version in {}: {versions:?}",
        app_dir.display()
    );
    versions.into_iter().next().unwrap()
}

/// A running `kura demo`; killed when dropped.
pub struct Demo {
    child: Child,
    pub port: u16,
    /// Its Flight SQL port (a free one: the default 8815 would collide between tests).
    pub flight_port: u16,
    /// What it printed up to the ready line (URL, accounts, the Ctrl-C hint).
    pub printed: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// The process id (fault tests kill it at a chosen moment).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill with SIGKILL now (no shutdown path runs) and reap it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start `kura demo` over `data_dir` with `patients` synthetic patients, the fixture
    /// password and `extra` arguments, and wait until it is ready.
    pub fn start<S: AsRef<OsStr>>(data_dir: &Path, patients: u32, extra: &[S]) -> Demo {
        Self::start_with(data_dir, patients, extra, &[])
    }

    /// [`Demo::start`] with extra environment variables (fault tests set
    /// `KURA_TEST_PAUSE_AT`).
    pub fn start_with<S: AsRef<OsStr>>(
        data_dir: &Path,
        patients: u32,
        extra: &[S],
        env: &[(&str, &str)],
    ) -> Demo {
        let port = free_port();
        let flight_port = free_port();
        let mut child = kura()
            .args(["demo", "--data-dir"])
            .arg(data_dir)
            .args(["--port", &port.to_string()])
            .args(["--flight-port", &flight_port.to_string()])
            .args(["--patients", &patients.to_string()])
            .args(["--demo-password", PASSWORD])
            .args(extra)
            .envs(env.iter().copied())
            .env("KURA_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kura demo");
        let stdout = child.stdout.take().unwrap();
        let mut demo = Demo {
            child,
            port,
            flight_port,
            printed: Vec::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(600);
        // The credentials follow the URL; the Ctrl-C hint is the last line.
        while !demo.printed.iter().any(|l| l.contains("Ctrl-C")) {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => demo.printed.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => panic!("kura demo exited early; output: {:#?}", demo.printed),
            }
            assert!(
                Instant::now() < deadline,
                "kura demo did not start in time; output: {:#?}",
                demo.printed
            );
        }
        demo
    }

    /// Stop it with SIGTERM (the way systemd does) and wait up to 30 s; `None` if it
    /// did not stop and had to be killed.
    pub fn stop(mut self) -> Option<ExitStatus> {
        stop_child(&mut self.child)
    }
}

/// SIGTERM (the way systemd stops kura), then wait up to 30 s; `None` if it had to be
/// killed.
fn stop_child(child: &mut Child) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kura serve` over a prepared data directory with a configuration file; killed when
/// dropped.
pub struct Serve {
    child: Child,
    pub base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration for `kura serve` over the demo's data directory and keys.
pub fn config(data_dir: &Path, port: u16, extra: &str) -> PathBuf {
    let file = data_dir.join(format!("serve-{port}.toml"));
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{d}\"\naudit_key_file = \"{d}/audit.key\"\n\
         extract_key_file = \"{d}/extract.key\"\nlog_format = \"text\"\n{extra}\n",
        d = data_dir.display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

impl Serve {
    /// Start `kura serve` and wait until it listens (or its marker file appears when a
    /// pause point stops it during start-up; then `None`).
    pub fn start(data_dir: &Path, extra: &str, env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let cfg = config(data_dir, port, extra);
        let child = kura()
            .args(["serve", "--config"])
            .arg(&cfg)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kura serve");
        let s = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "kura serve did not listen in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop it with SIGTERM and wait for its exit (up to 30 s); `None` if it had to be
    /// killed.
    pub fn stop(mut self) -> Option<ExitStatus> {
        stop_child(&mut self.child)
    }
}

/// A demo data directory, prepared once by `kura demo` and then stopped.
pub fn prepared(patients: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    Demo::start(&data, patients, &[] as &[&str]).kill9();
    (dir, data)
}

/// Log `user` in over HTTP (the fixture password); the session token.
pub async fn login(client: &reqwest::Client, base: &str, user: &str) -> String {
    let r = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login of {user}");
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// POST a query body over HTTP with `token`: the status and the JSON body.
pub async fn post(client: &reqwest::Client, base: &str, token: &str, body: Value) -> (u16, Value) {
    let r = client
        .post(format!("{base}/api/v1/query"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
