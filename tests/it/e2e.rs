//! End to end: the real `kura` binary runs `kura demo` on loopback; over HTTP,
//! researcher1 logs in and runs a suppressed query, researcher2 is refused with
//! `not_named_user`, and auditor1 sees both events and a verified chain.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const PASSWORD: &str = "e2e-demo-password-1";

/// Start `kura demo` on `data_dir` and wait until it prints its credentials.
fn start_demo(data_dir: &std::path::Path, port: u16) -> (Kill, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["demo", "--data-dir"])
        .arg(data_dir)
        .args([
            "--port",
            &port.to_string(),
            "--demo-password",
            PASSWORD,
            "--patients",
            "3000",
        ])
        .env("KURA_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kura demo");
    let stdout = child.stdout.take().unwrap();
    let guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut printed = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                // The credentials follow the URL; the Ctrl-C hint is the last line.
                let ready = line.contains("Ctrl-C");
                printed.push(line);
                if ready {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => panic!("kura demo exited early; output: {printed:#?}"),
        }
        assert!(
            Instant::now() < deadline,
            "kura demo did not start in time; output: {printed:#?}"
        );
    }
    (guard, printed)
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_binary_serves_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let port = free_port();
    let (guard, printed) = start_demo(&data_dir, port);
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        printed.iter().any(|l| l.contains(&base)),
        "URL printed: {printed:#?}"
    );
    let http = reqwest::Client::new();
    let login = |user: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .post(format!("{base}/api/v1/session"))
                .json(&json!({"username": user, "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "login {user}");
            r.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let r1 = login("researcher1").await;
    let sql = "SELECT sex, COUNT(DISTINCT pid) AS n FROM patient GROUP BY sex";
    let r = http
        .post(format!("{base}/api/v1/query"))
        .bearer_auth(&r1)
        .json(&json!({"application": "A-DEMO-0001", "sql": sql}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disclosure"]["mode"], "suppression");
    assert_eq!(body["disclosure"]["threshold"], 5);
    assert!(!body["rows"].as_array().unwrap().is_empty());

    let r2 = login("researcher2").await;
    let r = http
        .post(format!("{base}/api/v1/query"))
        .bearer_auth(&r2)
        .json(&json!({"application": "A-DEMO-0001", "sql": sql}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let denied: Value = r.json().await.unwrap();
    assert_eq!(denied["error"]["code"], "not_named_user");

    let aud = login("auditor1").await;
    let v: Value = http
        .get(format!("{base}/api/v1/audit/verify"))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let evs: Value = http
        .get(format!(
            "{base}/api/v1/audit/events?action=query.run&application=A-DEMO-0001"
        ))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let evs = evs.as_array().unwrap();
    assert!(
        evs.iter()
            .any(|e| e["event"]["actor"] == "researcher1" && e["event"]["outcome"] == "ok"),
        "{evs:?}"
    );
    assert!(evs.iter().any(|e| e["event"]["actor"] == "researcher2" && e["event"]["code"] == "not_named_user"), "{evs:?}");
    drop(guard);

    // Re-running on the same directory reuses data, accounts and applications.
    let port = free_port();
    let (_guard, printed) = start_demo(&data_dir, port);
    assert!(
        !printed.iter().any(|l| l.contains("generating")),
        "data were regenerated: {printed:#?}"
    );
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/session"))
        .json(&json!({"username": "researcher1", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `kura user add/disable/reset-password` and `kura audit verify` on one data dir.
#[test]
fn operator_commands_manage_accounts_and_verify_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let kura = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kura"));
        c.args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("KURA_AUDIT_KEY", "ab".repeat(32))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = kura(&["user", "add", "alice", "--role", "researcher"], None);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("password: "),
        "a generated password is printed: {out}"
    );
    let (code, _, err) = kura(&["user", "add", "bob", "--role", "pms"], None);
    assert_eq!(code, Some(1), "pms needs a manufacturer");
    assert!(err.contains("--manufacturer"), "{err}");
    let (code, _, err) = kura(
        &["user", "reset-password", "alice", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("12"), "{err}");
    let (code, out, _) = kura(
        &["user", "reset-password", "alice", "--password-stdin"],
        Some("a long enough password\n"),
    );
    assert_eq!(code, Some(0));
    assert!(!out.contains("password: "));
    let (code, _, _) = kura(&["user", "disable", "alice"], None);
    assert_eq!(code, Some(0));
    let (code, out, _) = kura(&["audit", "verify"], None);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"], 3, "create, reset, disable");
    // Without the audit key the commands refuse and say how to create one.
    let out = Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .env_remove("KURA_AUDIT_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/urandom"));
}
