//! Fault and load tests with the real binary on loopback (issue 14), bounded in count and
//! time: kill -9 at each step of a query and of an extract build, 100 concurrent
//! sessions, a full disk, backup and restore. The pause points are the debug build's
//! `durable::pause_point` (`KURA_TEST_PAUSE_AT`); each test prints what it cost.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fixtures::PASSWORD;
use crate::support::server::{
    Demo, Serve, config, free_port, kura, live_extract, login, post, prepared,
};

/// Patients of the synthetic registry of these tests (small: the cost is the binary's).
const PATIENTS: u32 = 2000;

async fn get(client: &reqwest::Client, base: &str, token: &str, path: &str) -> Value {
    client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Leftovers of interrupted builds (patient rows) anywhere under `extracts`.
fn leftovers(extracts: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![extracts.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name.starts_with('.') && (name.contains(".tmp-") || name.contains(".old-")) {
                    out.push(p.clone());
                }
                dirs.push(p);
            }
        }
    }
    out
}

/// After a restart: the chain verifies, and `A-DEMO-0002` has at least `charged` ε spent.
async fn check_after_restart(data: &Path, charged: f64) -> Value {
    let s = Serve::start(data, "", &[]);
    let client = reqwest::Client::new();
    let auditor = login(&client, &s.base, "auditor1").await;
    let v = get(&client, &s.base, &auditor, "/api/v1/audit/verify").await;
    assert_eq!(v["ok"], json!(true), "{v}");
    let r1 = login(&client, &s.base, "researcher1").await;
    let me = get(&client, &s.base, &r1, "/api/v1/me").await;
    let dp = me["applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "A-DEMO-0002")
        .unwrap()
        .clone();
    let spent = dp["epsilon_spent"].as_f64().unwrap();
    assert!(
        spent + 1e-9 >= charged,
        "ε under-charged: {spent} < {charged}"
    );
    assert!(
        leftovers(&data.join("extracts")).is_empty(),
        "a temp folder with patient rows remains"
    );
    get(
        &client,
        &s.base,
        &auditor,
        "/api/v1/audit/events?action=query.run&page_size=500",
    )
    .await
}

/// kill -9 at each step of a query, then restart: the chain verifies, no answer left
/// without its event, no ε under-charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_each_step_of_a_query_loses_nothing() {
    let started = Instant::now();
    let (_dir, data) = prepared(PATIENTS);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut charged = 0.0;
    for (i, point) in ["query.reserved", "query.scanning", "query.recorded"]
        .into_iter()
        .enumerate()
    {
        let marker = data.join(format!("paused-{i}"));
        let marker_s = marker.to_string_lossy().into_owned();
        let s = Serve::start(
            &data,
            "",
            &[
                ("KURA_TEST_PAUSE_AT", point),
                ("KURA_TEST_PAUSE_FILE", &marker_s),
            ],
        );
        let token = login(&client, &s.base, "researcher1").await;
        let eps = 0.05;
        let sql = format!(
            "SELECT sex, count(DISTINCT pid) AS n FROM patient WHERE {i} = {i} GROUP BY sex"
        );
        let body = json!({"application": "A-DEMO-0002", "sql": sql, "epsilon": eps});
        let (base, c) = (s.base.clone(), client.clone());
        let asked = tokio::spawn(async move {
            c.post(format!("{base}/api/v1/query"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !marker.exists() {
            assert!(Instant::now() < deadline, "never paused at {point}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.kill9();
        let reply = asked.await.unwrap();
        assert!(
            reply.is_err(),
            "{point}: an answer left the process: {reply:?}"
        );
        // Reserved before each pause point: it must be charged after the restart.
        charged += eps;
        let events = check_after_restart(&data, charged).await;
        let recorded = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["detail"]["sql"].as_str() == Some(sql.as_str()))
            .count();
        let expected = usize::from(point == "query.recorded");
        assert_eq!(
            recorded, expected,
            "{point}: query.run events of the killed query"
        );
    }
    eprintln!("kill -9 at 3 query steps: {:?}", started.elapsed());
}

/// kill -9 between the two renames of an extract build: the temporary directory (patient
/// rows) is swept at the next start, and the extract is rebuilt whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_inside_an_extract_build_leaves_no_patient_rows_behind() {
    let started = Instant::now();
    let (_dir, data) = prepared(PATIENTS);
    // Remove the live extract: the next start of the demo rebuilds it.
    let live = live_extract(&data, "A-DEMO-0001");
    std::fs::remove_dir_all(&live).unwrap();
    let marker = data.join("paused-build");
    let mut child = kura()
        .args(["demo", "--data-dir"])
        .arg(&data)
        .args([
            "--port",
            &free_port().to_string(),
            "--patients",
            &PATIENTS.to_string(),
        ])
        .args(["--demo-password", PASSWORD])
        .env("KURA_TEST_PAUSE_AT", "extract.between_renames")
        .env("KURA_TEST_PAUSE_FILE", &marker)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "never paused inside the build");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let left = leftovers(&data.join("extracts"));
    assert!(
        !left.is_empty(),
        "control: the kill left the temporary build behind"
    );
    assert!(
        left[0].join("patient.parquet").exists(),
        "with patient rows in it"
    );
    // The restarted server sweeps it before serving, and the demo rebuilds the extract.
    let demo = Demo::start(&data, PATIENTS, &[] as &[&str]);
    assert!(
        leftovers(&data.join("extracts")).is_empty(),
        "{:?}",
        leftovers(&data.join("extracts"))
    );
    assert!(
        live_extract(&data, "A-DEMO-0001")
            .join("extract.json")
            .exists()
    );
    demo.kill9();
    eprintln!("kill -9 inside an extract build: {:?}", started.elapsed());
}

/// Percentile `p` (0–100) of `samples` (sorted here).
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p / 100.0).round() as usize;
    samples[i]
}

/// 100 concurrent sessions (logins, small and heavy queries) for a bounded time: no
/// 5xx; small queries answered within a bound set from a single-user run of this test;
/// heavy ones answered, queued or refused with `resource_limit`; the queries' memory
/// never above the global pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_sessions_get_no_5xx_and_small_queries_stay_quick() {
    let (_dir, data) = prepared(PATIENTS);
    let secs: u64 = std::env::var("KURA_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let token = "t".repeat(40);
    let cap_mib = 64;
    let s = Serve::start(
        &data,
        &format!(
            "login_per_minute = 0\nquery_per_user = 200\nmemory_pool_mib = {cap_mib}\nquery_memory_mib = 16\n"
        ),
        &[("KURA_METRICS_TOKEN", &token)],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let small = |app: &str| json!({"application": app, "sql": "SELECT sex, count(*) AS n FROM patient GROUP BY sex"});
    let heavy = json!({"application": "A-DEMO-0001", "sql":
        "SELECT birth_year, prefecture_code, sex, count(DISTINCT pid) AS n FROM patient GROUP BY birth_year, prefecture_code, sex"});
    // The single-user run this test's bound comes from.
    let r1 = login(&client, &s.base, "researcher1").await;
    let mut alone = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (st, v) = post(&client, &s.base, &r1, small("A-DEMO-0001")).await;
        assert_eq!(st, 200, "{v}");
        alone.push(t.elapsed());
    }
    let single_p99 = percentile(&mut alone, 99.0);
    let mut alone_heavy = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (st, v) = post(&client, &s.base, &r1, heavy.clone()).await;
        assert!(st == 200 || st == 422, "{v}");
        alone_heavy.push(t.elapsed());
    }
    let heavy_p99 = percentile(&mut alone_heavy, 99.0);
    let sessions = 100usize;
    // Suppression queries of one extract run one at a time (the release ledger), so under
    // N sessions a small query can wait for every other session's query, each slower than
    // alone while 100 argon2 logins and other builds share the two cores. The bound is 8N
    // times a small plus a heavy query's single-user p99, plus a second: it catches
    // starvation (a small query stuck behind heavy ones or the request timeout), not speed
    // (measured here: small p99 0.2-0.4 of it; docs/performance.md).
    let bound = (single_p99 + heavy_p99) * (8 * sessions as u32) + Duration::from_secs(1);
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks = (0..sessions).map(|i| {
        let (client, base, heavy) = (client.clone(), s.base.clone(), heavy.clone());
        let small = small("A-DEMO-0001");
        tokio::spawn(async move {
            let token = login(&client, &base, "researcher1").await;
            let mut seen = Vec::new();
            let mut n = 0usize;
            while Instant::now() < until {
                // About a third heavy, spread over sessions and turns.
                let is_heavy = (i + n) % 3 == 1;
                let t = Instant::now();
                let body = if is_heavy {
                    heavy.clone()
                } else {
                    small.clone()
                };
                let (st, v) = post(&client, &base, &token, body).await;
                seen.push((
                    is_heavy,
                    st,
                    v["error"]["code"].as_str().unwrap_or("").to_string(),
                    t.elapsed(),
                ));
                n += 1;
            }
            seen
        })
    });
    // Sample the metrics while the load runs.
    let (mc, mbase, mtoken) = (client.clone(), s.base.clone(), token.clone());
    let sampler = tokio::spawn(async move {
        let mut peak = 0f64;
        while Instant::now() < until {
            let text = mc
                .get(format!("{mbase}/metrics"))
                .bearer_auth(&mtoken)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for l in text
                .lines()
                .filter(|l| l.starts_with("kura_query_memory_reserved_bytes "))
            {
                peak = peak.max(l.split_whitespace().nth(1).unwrap().parse().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak
    });
    let all: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let peak = sampler.await.unwrap();
    let five_xx: Vec<_> = all.iter().filter(|(_, st, _, _)| *st >= 500).collect();
    assert!(five_xx.is_empty(), "5xx under load: {five_xx:?}");
    let mut small_times: Vec<Duration> = all
        .iter()
        .filter(|(h, st, _, _)| !h && *st == 200)
        .map(|(_, _, _, t)| *t)
        .collect();
    assert_eq!(
        small_times.len(),
        all.iter().filter(|(h, _, _, _)| !h).count(),
        "every small query answered"
    );
    let p99 = percentile(&mut small_times, 99.0);
    assert!(
        p99 <= bound,
        "small-query p99 {p99:?} above the bound {bound:?}"
    );
    for (_, st, code, _) in all.iter().filter(|(h, _, _, _)| *h) {
        assert!(
            *st == 200 || (*st == 422 && code == "resource_limit"),
            "a heavy query ended with {st} {code}"
        );
    }
    assert!(
        peak <= (cap_mib << 20) as f64,
        "query memory {peak} above the pool"
    );
    eprintln!(
        "load: {sessions} sessions, {secs} s, {} queries ({} heavy), single-user p99 {single_p99:?} \
         (heavy {heavy_p99:?}), small p99 {p99:?} (bound {bound:?}), peak query memory {peak} bytes",
        all.len(),
        all.iter().filter(|(h, _, _, _)| *h).count()
    );
}

/// 50 parallel wrong passwords against one account over real HTTP: locked after 5, and
/// the right password is refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_guesses_lock_one_account_over_http() {
    let (_dir, data) = prepared(PATIENTS);
    let s = Serve::start(&data, "login_per_minute = 0\n", &[]);
    let client = reqwest::Client::new();
    let guesses = (0..50).map(|_| {
        let (client, base) = (client.clone(), s.base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/session"))
                .json(&json!({"username": "researcher2", "password": "not the password"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let r = client
        .post(format!("{}/api/v1/session", s.base))
        .json(&json!({"username": "researcher2", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "account_locked");
    // The per-address limit (control of the configuration above): with 10 a minute, the
    // eleventh attempt from this address is refused before any password is checked.
    drop(s);
    let s = Serve::start(&data, "login_per_minute = 10\n", &[]);
    let mut last = 0;
    for _ in 0..11 {
        last = client
            .post(format!("{}/api/v1/session", s.base))
            .json(&json!({"username": "nobody", "password": "not the password"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
}

/// Whether this process may mount a tmpfs (root).
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The data directory on a small filesystem that fills up: queries are refused with a
/// clear error and nothing is answered without its audit event; when space returns the
/// server answers again. Needs root for the tmpfs (CI runs as root); without root the
/// same guarantee is tested with a write-failure injection (`api::no_audit_no_answer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_withholds_answers_and_the_server_recovers() {
    if !is_root() {
        eprintln!(
            "not root: no tmpfs; covered by the injected write failure of api::no_audit_no_answer"
        );
        return;
    }
    let (dir, prepared_data) = prepared(PATIENTS);
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("demo");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&prepared_data)
        .arg(&data)
        .status()
        .unwrap();
    assert!(copied.success());
    // The store (and the audit log in it) lives on the small filesystem; the extracts
    // stay registered at their first place and are only read.
    let s = Serve::start(&data, "", &[]);
    let client = reqwest::Client::new();
    let token = login(&client, &s.base, "researcher1").await;
    let q = json!({"application": "A-DEMO-0001", "sql": "SELECT sex, count(*) AS n FROM patient GROUP BY sex"});
    let (st, _) = post(&client, &s.base, &token, q.clone()).await;
    assert_eq!(st, 200, "control: answered while there is space");
    // Fill the filesystem.
    let filler = mnt.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let mut refused = 0;
    for _ in 0..5 {
        let (st, v) = post(&client, &s.base, &token, q.clone()).await;
        assert!(
            v.get("rows").is_none(),
            "an answer without its audit event: {v}"
        );
        if st == 503 {
            assert_eq!(v["error"]["code"], "storage_full", "{v}");
            refused += 1;
        }
    }
    assert!(refused > 0, "the full disk was never noticed");
    std::fs::remove_file(&filler).unwrap();
    let (st, v) = post(&client, &s.base, &token, q).await;
    assert_eq!(st, 200, "the server recovers when space returns: {v}");
    let auditor = login(&client, &s.base, "auditor1").await;
    let v = get(&client, &s.base, &auditor, "/api/v1/audit/verify").await;
    assert_eq!(v["ok"], json!(true), "{v}");
}

/// `kura backup`, then `kura restore` into an empty directory: the chain verifies, the
/// extracts are found at their new place; a damaged backup is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_an_empty_directory_and_verifies() {
    let (dir, data) = prepared(PATIENTS);
    let out = dir.path().join("backup");
    let cfg = config(&data, free_port(), "");
    let backup = kura()
        .args(["backup", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let target = dir.path().join("restored");
    std::fs::create_dir_all(&target).unwrap();
    for k in ["audit.key", "extract.key"] {
        std::fs::copy(data.join(k), target.join(k)).unwrap();
    }
    let restore = |from: &Path, to: &Path| {
        let cfg = config(to, free_port(), "");
        kura()
            .args(["restore", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(to.join("data-dir"))
            .arg("--from")
            .arg(from)
            .output()
            .unwrap()
    };
    let restored = restore(&out, &target);
    let stdout = String::from_utf8_lossy(&restored.stdout);
    assert!(
        restored.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    // The restored directory serves: the live extract is where the store says.
    let data2 = target.join("data-dir");
    assert!(
        live_extract(&data2, "A-DEMO-0001")
            .join("extract.json")
            .exists()
    );
    // Control: one byte changed in the backup and the restore refuses it.
    let log = out.join("store").join("audit_log.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text = text.replacen("researcher1", "researcher9", 1);
    std::fs::write(&log, text).unwrap();
    let target2 = dir.path().join("restored2");
    std::fs::create_dir_all(&target2).unwrap();
    for k in ["audit.key", "extract.key"] {
        std::fs::copy(data.join(k), target2.join(k)).unwrap();
    }
    let refused = restore(&out, &target2);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("differs from the backup manifest"));
}
