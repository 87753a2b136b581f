//! The output airlock against the real `kura demo` (its query engine, disclosure check and
//! release ledger, over real HTTP): researcher1 releases a grouped count of A-DEMO-0001;
//! reviewer1 approves as the first of two checkers, reviewer2 as the second (the demo's
//! approval asks for two); the re-check reads the cells' contributor sets back from the
//! real ledger; researcher1 downloads files equal to the snapshot; nobody else can.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::http::{login_over, token_of};
use crate::support::server::Demo;

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn login(&self, user: &str) -> String {
        let r = login_over(&self.client, &self.base, user).await.unwrap();
        assert_eq!(r.status(), 200, "{user}");
        token_of(r).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .client
            .get(format!("{}/api/v1{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_release_needs_reviewer1_and_reviewer2_and_leaves_as_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("demo"), 3000, &[] as &[&str]);
    let api = Api {
        base: format!("http://127.0.0.1:{}", demo.port),
        client: reqwest::Client::new(),
    };
    let r1 = api.login("researcher1").await;
    let sql = "SELECT prefecture_code, sex, COUNT(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code, sex";
    let (s, q) = api
        .post(
            &r1,
            "/query",
            json!({"application": "A-DEMO-0001", "sql": sql}),
        )
        .await;
    assert_eq!(s, 200, "{q}");
    assert!(
        q["disclosure"]["suppressed_cells"].as_u64().unwrap() > 0,
        "3000 patients over 47 prefectures and 2 sexes leave small cells"
    );
    let body = json!({"query_ids": [q["query_id"]], "justification": "prefecture by sex for the annual report", "publication": "Annual report 2027"});
    let (s, rel) = api.post(&r1, "/releases", body).await;
    assert_eq!(s, 201, "{rel}");
    assert_eq!(rel["checkers_required"], 2);
    let id = rel["id"].as_str().unwrap().to_string();

    // The snapshot is the answer as released, with a record for every cell.
    let rv1 = api.login("reviewer1").await;
    let (s, detail) = api.get(&rv1, &format!("/releases/{id}")).await;
    assert_eq!(s, 200);
    let detail: Value = serde_json::from_slice(&detail).unwrap();
    let snap = &detail["outputs"][0];
    assert_eq!(snap["rows"], q["rows"]);
    assert_eq!(
        snap["disclosure"]["suppressed"],
        q["disclosure"]["suppressed"]
    );
    let cells = snap["cells"].as_array().unwrap();
    let mut released = 0;
    for (r, row) in cells.iter().enumerate() {
        let n = &row[2];
        let suppressed = q["disclosure"]["suppressed"]
            .as_array()
            .unwrap()
            .contains(&json!([r, 2]));
        if suppressed {
            assert_eq!(n["status"], "suppressed");
            assert!(
                n.get("contributors").is_none(),
                "no band for a suppressed cell"
            );
        } else {
            released += 1;
            assert_eq!(n["status"], "released");
            let low = n["contributors"]["low"].as_u64().unwrap();
            let value = q["rows"][r][2].as_u64().unwrap();
            assert!(
                low >= 5 && low <= value,
                "the band holds the count: {n} {value}"
            );
            assert!(
                n["rules"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"rule": "k", "outcome": "pass"}))
            );
        }
        assert_eq!(row[0]["status"], "key");
    }
    assert!(released > 0);
    for line in snap["csv"].as_str().unwrap().lines().skip(1) {
        let n = line.rsplit(',').next().unwrap();
        assert!(n == "<5" || n.parse::<u64>().unwrap() >= 5, "{line}");
    }

    // Two checkers: the first approval leaves it pending.
    let (s, v) = api
        .post(
            &rv1,
            &format!("/releases/{id}/decision"),
            json!({"decision": "approve", "comment": "small cells suppressed"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["release"]["status"], "pending");
    let (s, _) = api
        .get(&r1, &format!("/releases/{id}/files/result-1.csv"))
        .await;
    assert_eq!(s, 403);
    let rv2 = api.login("reviewer2").await;
    let (s, v) = api
        .post(
            &rv2,
            &format!("/releases/{id}/decision"),
            json!({"decision": "approve", "comment": "second check: agreed"}),
        )
        .await;
    assert_eq!(
        s, 200,
        "the re-check read every released cell's set from the real ledger: {v}"
    );
    assert_eq!(v["release"]["status"], "approved");

    let (s, csv) = api
        .get(&r1, &format!("/releases/{id}/files/result-1.csv"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        snap["csv"].as_str().unwrap()
    );
    let (s, png) = api
        .get(&r1, &format!("/releases/{id}/files/result-1.png"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(&png[1..4], b"PNG");
    let (s, record) = api
        .get(&r1, &format!("/releases/{id}/files/release.json"))
        .await;
    assert_eq!(s, 200);
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["checkers"].as_array().unwrap().len(), 2);
    // Nobody else: not researcher2, not a reviewer.
    for who in ["researcher2", "reviewer1"] {
        let t = api.login(who).await;
        let (s, _) = api
            .get(&t, &format!("/releases/{id}/files/result-1.csv"))
            .await;
        assert_eq!(s, 403, "{who}");
    }
    drop(demo);
}
