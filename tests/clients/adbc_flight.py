"""A researcher's session with kura over Arrow Flight SQL, through the real ADBC Flight SQL
driver (the one pandas, polars and DuckDB users install), against a running `kura demo`.

    python adbc_flight.py --flight grpc://127.0.0.1:8815 --http http://127.0.0.1:8080 \
        --password '...'

It logs in, lists the tables of its application, runs a grouped count into a pandas
DataFrame, sees a suppressed cell as NULL together with the disclosure record, binds a
parameter, runs a DP query with its ε from a connection option, is refused on an
application it is not named on and on a DML statement (as a query and as an update), and
finally finds all of it in the audit log through the HTTP API as auditor1. Exit code 0
only if every check held; each check prints one line.
"""

import argparse
import json
import sys
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pandas as pd

HEADER = "adbc.flight.sql.rpc.call_header."


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def http(base, method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(req, data=data, timeout=60) as r:
        return json.loads(r.read() or b"null")


def connect(args, user, application):
    return flightsql.connect(
        args.flight,
        db_kwargs={"username": user, "password": args.password},
        # On the connection, not the database: set_header then adds to the same list, and
        # kura takes a header's last value.
        conn_kwargs={HEADER + "kura.application": application},
        autocommit=True,
    )


def set_header(conn, name, value):
    # A statement copies the connection's call headers when it is made: a changed header
    # applies to cursors made after it. ADBC appends the value; kura takes the last one.
    conn.adbc_connection.set_options(**{HEADER + name: value})


def refused(cur, sql, code):
    try:
        cur.execute(sql)
        cur.fetchall()
    except adbc_driver_manager.Error as e:
        return code in str(e), str(e)
    return False, "answered"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--flight", required=True)
    p.add_argument("--http", required=True)
    p.add_argument("--password", required=True)
    args = p.parse_args()
    query_ids = []

    conn = connect(args, "researcher1", "A-DEMO-0001")
    cur = conn.cursor()

    # 1. The tables of the application's scope, as the HTTP catalogue lists them.
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    tables = sorted(
        t["table_name"]
        for cat in objects
        for schema in cat["catalog_db_schemas"] or []
        for t in schema["db_schema_tables"] or []
    )
    token = http(args.http, "POST", "/api/v1/session",
                 body={"username": "researcher1", "password": args.password})["token"]
    catalog = http(args.http, "GET", "/api/v1/catalog?application=A-DEMO-0001", token)
    check(tables == sorted(t["name"] for t in catalog["tables"]),
          f"tables listed = the application's scope ({len(tables)} tables)")
    check("patient" in tables and "regen_treatment" not in tables,
          "patient listed, regen_treatment (outside the scope) not")
    schema = conn.adbc_get_table_schema("patient")
    check("pid" in schema.names and "sex" in schema.names, "patient's columns and types")

    # 2. A grouped count into a pandas DataFrame.
    cur.execute("SELECT sex, count(DISTINCT pid) AS patients FROM patient GROUP BY sex ORDER BY sex")
    counted = cur.fetch_arrow_table()
    query_ids.append(dict(counted.schema.metadata)[b"kura.query_id"].decode())
    df = counted.to_pandas()
    check(isinstance(df, pd.DataFrame) and list(df.columns) == ["sex", "patients"] and len(df) >= 2,
          f"grouped count as a DataFrame:\n{df}")

    # 3. A suppressed cell is NULL, and the disclosure record says which and why.
    cur.execute(
        "SELECT prefecture_code, count(DISTINCT pid) AS patients FROM nanbyo_survey "
        "WHERE disease_no = 2 GROUP BY prefecture_code ORDER BY prefecture_code")
    table = cur.fetch_arrow_table()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    disclosure = json.loads(meta["kura.disclosure"])
    query_ids.append(meta["kura.query_id"])
    frame = table.to_pandas()
    suppressed = disclosure["suppressed"]
    check(disclosure["mode"] == "suppression" and disclosure["threshold"] >= 5,
          f"disclosure record: mode suppression, k={disclosure['threshold']}")
    check(len(suppressed) > 0 and all(pd.isna(frame.iat[r, c]) for r, c in suppressed),
          f"{len(suppressed)} suppressed cell(s), each NULL in the DataFrame")
    check(all(v >= disclosure["threshold"] for v in frame["patients"].dropna()),
          "every released count reaches k")

    # 4. A parameter bound to a prepared statement (one audited query per execution).
    cur.execute("SELECT sex, count(DISTINCT pid) AS patients FROM patient WHERE sex = ? GROUP BY sex",
                parameters=("F",))
    bound = cur.fetch_arrow_table()
    query_ids.append(dict(bound.schema.metadata)[b"kura.query_id"].decode())
    # Every value of the key's public domain is listed (rows without data added, their
    # cells suppressed): only the bound value may carry a count.
    counted = {s for s, n in zip(bound.column("sex").to_pylist(),
                                 bound.column("patients").to_pylist()) if n is not None}
    check(counted == {"F"}, "a bound parameter filters as a literal")

    # 5. DP: the application and ε are connection options.
    set_header(conn, "kura.application", "A-DEMO-0002")
    set_header(conn, "kura.epsilon", "0.1")
    cur.close()
    cur = conn.cursor()
    cur.execute("SELECT sex, count(DISTINCT pid) AS patients FROM patient GROUP BY sex")
    dp = cur.fetch_arrow_table()
    dp_record = json.loads(dict(dp.schema.metadata)[b"kura.disclosure"])
    query_ids.append(dict(dp.schema.metadata)[b"kura.query_id"].decode())
    check(dp_record["mode"] == "dp" and abs(dp_record["epsilon_spent"] - 0.1) < 1e-9,
          f"DP answer spent ε=0.1 (left {dp_record['epsilon_remaining']})")

    # 6. Refusals: an application researcher1 is not named on, and DML.
    set_header(conn, "kura.application", "A-DEMO-0003")
    cur.close()
    cur = conn.cursor()
    ok, msg = refused(cur, "SELECT sex, count(DISTINCT pid) AS n FROM patient GROUP BY sex",
                      "not_named_user")
    check(ok, f"refused on an application researcher1 is not named on: {msg[:160]}")
    set_header(conn, "kura.application", "A-DEMO-0001")
    cur.close()
    cur = conn.cursor()
    ok, msg = refused(cur, "DELETE FROM patient", "statement_not_allowed")
    check(ok, f"DML as a query refused: {msg[:160]}")
    stmt = cur.adbc_statement
    stmt.set_sql_query("DELETE FROM patient")
    try:
        stmt.execute_update()
        ok, msg = False, "updated"
    except adbc_driver_manager.Error as e:
        ok, msg = "statement_not_allowed" in str(e), str(e)
    check(ok, f"DML as an update refused: {msg[:160]}")
    cur.close()
    conn.close()

    # 7. The auditor finds it all in the audit log.
    auditor = http(args.http, "POST", "/api/v1/session",
                   body={"username": "auditor1", "password": args.password})["token"]
    events = http(args.http, "GET",
                  "/api/v1/audit/events?user=researcher1&page_size=500", auditor)
    seen = [e["event"] for e in events]
    answered = {e.get("reference") for e in seen if e["action"] == "query.run" and e["outcome"] == "ok"}
    check(all(q in answered for q in query_ids), f"answered queries in the audit log: {query_ids}")
    codes = {(e["action"], e.get("code")) for e in seen if e["outcome"] == "denied"}
    check(("query.run", "not_named_user") in codes, "the out-of-scope attempt is audited")
    check(("query.run", "statement_not_allowed") in codes, "the DML query is audited")
    check(("flight.refused", "statement_not_allowed") in codes, "the DML update is audited")
    logins = [e for e in seen if e["action"] == "session.login" and e["detail"].get("via") == "flight"]
    check(len(logins) >= 1, "the Flight login is audited")
    verify = http(args.http, "GET", "/api/v1/audit/verify", auditor)
    check(verify["ok"], f"audit chain verifies ({verify['events']} events)")


if __name__ == "__main__":
    main()
