# A throwaway PostgreSQL cluster for the test suites (sourced by tests/run.sh; also usable
# by hand: `source tests/pg-cluster.sh && pg_cluster_start`, then `pg_cluster_stop`).
#
# Installs Debian's `postgresql` when missing (idempotent, quiet), initialises a cluster in
# a temporary directory, starts it on a free loopback port as an unprivileged user (CI runs
# as root; PostgreSQL refuses to run as root, so the server runs as `postgres`, or `nobody`
# when that account does not exist), and exports KURA_TEST_PG_URL for the tests, which
# create one database per test on it. Durability settings are off: the cluster lives for
# one test run.

pg_cluster_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_cluster_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_cluster_install() {
  if [ -z "$(pg_cluster_bin)" ]; then
    echo "== installing postgresql (the store suite also runs on PostgreSQL)"
    pg_cluster_as_root apt-get update -qq
    pg_cluster_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
}

# Run a command as the cluster's owner.
pg_cluster_run() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_CLUSTER_USER" -- "$@"
  else
    "$@"
  fi
}

pg_cluster_start() {
  pg_cluster_install
  local bin
  bin=$(pg_cluster_bin)
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then PG_CLUSTER_USER=postgres; else PG_CLUSTER_USER=nobody; fi
  else
    PG_CLUSTER_USER=$(id -un)
  fi
  PG_CLUSTER_DIR=$(mktemp -d /tmp/kura-pg.XXXXXX)
  chmod 755 "$PG_CLUSTER_DIR"
  [ "$(id -u)" = 0 ] && chown "$PG_CLUSTER_USER" "$PG_CLUSTER_DIR"
  pg_cluster_run "$bin/initdb" -D "$PG_CLUSTER_DIR/data" -U kura --auth=trust --no-locale -E UTF8 >/dev/null
  local port
  for _ in $(seq 1 20); do
    port=$((20000 + RANDOM % 30000))
    if pg_cluster_run "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/log" -w -t 30 \
      -o "-p $port -k $PG_CLUSTER_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null; then
      export KURA_TEST_PG_URL="postgres://kura@127.0.0.1:$port/postgres"
      echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') test cluster on 127.0.0.1:$port"
      return 0
    fi
  done
  echo "cannot start the PostgreSQL test cluster; its log:" >&2
  cat "$PG_CLUSTER_DIR/log" >&2 || true
  return 1
}

pg_cluster_stop() {
  if [ -n "${PG_CLUSTER_DIR:-}" ] && [ -d "$PG_CLUSTER_DIR/data" ]; then
    pg_cluster_run "$(pg_cluster_bin)/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_CLUSTER_DIR"
  fi
}
