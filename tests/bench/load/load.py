"""N concurrent sessions against kura over HTTP (standard library only).

Each session logs in on its own (researcher1, one token per session) and sends the same
small grouped count to the demo's suppression application in a loop for --duration
seconds; latencies of answered queries are collected. Prints, per N: answered queries,
errors, p50, p99 and p99 relative to N = 1.
"""

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request

SQL = "SELECT sex, count(*) AS n FROM patient GROUP BY sex"


def call(base, path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def session(base, password, until, out, errors):
    token = call(base, "/api/v1/session", {"username": "researcher1", "password": password})["token"]
    while time.monotonic() < until:
        t = time.perf_counter()
        try:
            call(base, "/api/v1/query", {"application": "A-DEMO-0001", "sql": SQL}, token)
            out.append(time.perf_counter() - t)
        except urllib.error.HTTPError as e:
            errors.append(e.code)


def level(base, password, n, duration):
    out, errors = [], []
    until = time.monotonic() + duration
    threads = [threading.Thread(target=session, args=(base, password, until, out, errors))
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, errors


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 5, 10, 25, 50])
    a = ap.parse_args()
    level(a.base, a.password, 1, 2)  # warm-up
    print("| sessions | answered | errors | p50 ms | p99 ms | p99 / p99 at 1 |")
    print("|---:|---:|---:|---:|---:|---:|")
    base_p99 = None
    for n in a.levels:
        out, errors = level(a.base, a.password, n, a.duration)
        if not out:
            print(f"| {n} | 0 | {len(errors)} | - | - | - |")
            continue
        p50, p99 = statistics.median(out) * 1e3, pct(out, 99) * 1e3
        base_p99 = base_p99 or p99
        print(f"| {n} | {len(out)} | {len(errors)} | {p50:.1f} | {p99:.1f} | {p99 / base_p99:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
