#!/usr/bin/env bash
# What one PostgreSQL 15 primary sustains on this machine for the statement shapes of the login
# path, measured with pgbench against its own temporary server (stopped and removed at the end):
#   read:    a successful login: one SELECT of the user by key, its password hashes aggregated
#            (LATERAL array_agg) and its throttle row (LEFT JOIN), as service/store/logins.py does
#   failure: a failed login: one INSERT ... ON CONFLICT DO UPDATE of a throttle row (one commit,
#            synchronous_commit on, fsync on: PostgreSQL's defaults)
#   mix:     95 % read, 5 % failure
# Usage: deploy/pgbench.sh   (PGBENCH_SECONDS, PGBENCH_CLIENTS, PGBENCH_USERS to change the run)
set -euo pipefail
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SECONDS_EACH=${PGBENCH_SECONDS:-10}
CLIENTS=${PGBENCH_CLIENTS:-8}
USERS=${PGBENCH_USERS:-100000}
PORT=${PGBENCH_PORT:-25450}
WORK=$(mktemp -d /tmp/authsvc-pgbench.XXXXXX)
AS_PG=()
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK"; AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi
pg() { "${AS_PG[@]}" "$@"; }
cleanup() {
  pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres -A trust --locale=C -E UTF8 >/dev/null
pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses=''" start >/dev/null
PSQL=("$PG_BIN/psql" -h "$WORK" -p "$PORT" -U postgres -d postgres -qX -v ON_ERROR_STOP=1)
pg "${PSQL[@]}" <<SQL
CREATE TABLE users (id bigint PRIMARY KEY, username_key text UNIQUE NOT NULL, salt bytea NOT NULL);
CREATE TABLE passwords (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users,
  hash text NOT NULL, last_used_at timestamptz);
CREATE INDEX ON passwords (user_id);
CREATE TABLE login_throttle (username_key text NOT NULL, source text NOT NULL,
  failures integer NOT NULL, next_attempt_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
  PRIMARY KEY (username_key, source));
INSERT INTO users SELECT i, 'user' || i, decode(md5(i::text), 'hex') FROM generate_series(1, $USERS) i;
INSERT INTO passwords (user_id, hash)
  SELECT i, '\$argon2id\$v=19\$m=65536,t=3,p=4\$' || md5(i::text) || md5((-i)::text) FROM generate_series(1, $USERS) i;
VACUUM ANALYZE;
SQL
cat >"$WORK/read.sql" <<SQL
\set id random(1, $USERS)
SELECT u.id, u.salt, p.hashes, t.failures
FROM (SELECT) AS one
LEFT JOIN users u ON u.username_key = 'user' || :id
LEFT JOIN LATERAL (SELECT array_agg(hash ORDER BY id) AS hashes FROM passwords WHERE user_id = u.id) p ON u.id IS NOT NULL
LEFT JOIN login_throttle t ON t.username_key = 'user' || :id AND t.source = '';
SQL
cat >"$WORK/failure.sql" <<SQL
\set id random(1, $USERS)
INSERT INTO login_throttle AS t VALUES ('user' || :id, '', 1, now() + interval '1 s', now())
ON CONFLICT (username_key, source) DO UPDATE SET failures = t.failures + 1,
  next_attempt_at = now() + interval '1 s', updated_at = now();
SQL
chmod a+r "$WORK"/*.sql

echo "pgbench-primary: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores (shared), PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}'), $USERS users, $CLIENTS clients, ${SECONDS_EACH} s each, -M prepared"
run() {  # run NAME SCRIPT...
  local name=$1; shift
  local out
  out=$(pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -n -M prepared -c "$CLIENTS" -j 2 \
    -T "$SECONDS_EACH" "$@" postgres 2>&1)
  printf '%-8s %s tps, latency average %s ms\n' "$name" \
    "$(awk '/^tps/ {print $3}' <<<"$out" | cut -d. -f1)" "$(awk '/^latency average/ {print $4; exit}' <<<"$out")"
}
run read -f "$WORK/read.sql"
run failure -f "$WORK/failure.sql"
run mix -f "$WORK/read.sql@95" -f "$WORK/failure.sql@5"
