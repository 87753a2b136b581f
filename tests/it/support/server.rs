//! The real `kura` binary, for tests that must see what an operator sees: `kura demo`
//! started on a free loopback port (ready once it prints its Ctrl-C hint, killed when
//! the guard drops, so a failing test never leaves a server behind), and the command
//! itself for one-shot subcommands.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
