#!/usr/bin/env bash
# A production-shaped authsvc stack on loopback, from Debian's packages:
#   etcd (one member) <- Patroni x2 (PostgreSQL 15, streaming replication, synchronous mode)
#   HAProxy :PG  -> the Patroni leader (REST check GET /primary)
#   PgBouncer (transaction mode) -> HAProxy :PG
#   3 x `authsvc serve` (pool through PgBouncer, LISTEN through HAProxy :PG)
#   HAProxy :REST (HTTP/1.1) and :GRPC (h2c, checked through grpc.health.v1) -> the replicas
# Usage: deploy/cluster.sh up|down|status|drill|bench. State (data, logs, pids) under $CLUSTER_DIR.
# `down` stops exactly the processes whose pid files `up` wrote (checked against /proc).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
STATE=${CLUSTER_DIR:-$ROOT/.cluster}
BASE=${CLUSTER_PORT_BASE:-25000}
REPLICAS=${CLUSTER_REPLICAS:-3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
AUTHSVC=${AUTHSVC:-$ROOT/.venv/bin/authsvc}
PACKAGES=(patroni etcd-server pgbouncer haproxy postgresql-15 curl)

ETCD_PORT=$((BASE + 79)); ETCD_PEER=$((BASE + 80))
PG_PORTS=($((BASE + 32)) $((BASE + 33))); REST_PORTS=($((BASE + 8)) $((BASE + 9)))
HAPROXY_PG=$((BASE + 100)); PGBOUNCER_PORT=$((BASE + 101))
HAPROXY_REST=$((BASE + 180)); HAPROXY_GRPC=$((BASE + 151)); HAPROXY_STATS=$((BASE + 199))
grpc_port() { echo $((BASE + 200 + $1)); }
http_port() { echo $((BASE + 300 + $1)); }
metrics_port() { echo $((BASE + 400 + $1)); }

DB_URL="postgresql://postgres@127.0.0.1:$PGBOUNCER_PORT/authsvc"
LISTEN_URL="postgresql://postgres@127.0.0.1:$HAPROXY_PG/authsvc"

log() { echo "cluster: $*" >&2; }

install_missing() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} with apt"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# PostgreSQL, Patroni and PgBouncer refuse root: as root they run as the `postgres` user.
AS_PG=()
[ "$(id -u)" = 0 ] && AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)

# start NAME COMMAND...: detached, in its own session, logging to $STATE/log/NAME.log.
start() {
  local name=$1; shift
  setsid "$@" >>"$STATE/log/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/pids/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
  local what=$1 seconds=$2; shift 2
  local until=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > until)); then log "$what did not come up; see $STATE/log"; return 1; fi
    sleep 0.3
  done
}

write_patroni() {  # write_patroni INDEX
  local i=$1 name="pg$(( $1 + 1 ))"
  mkdir -p "$STATE/$name"
  cat >"$STATE/$name/patroni.yml" <<YAML
scope: authsvc
name: $name
restapi:
  listen: 127.0.0.1:${REST_PORTS[$i]}
  connect_address: 127.0.0.1:${REST_PORTS[$i]}
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    # Tuned for the drill: a dead leader's key lapses after ttl; a crashed postmaster fails over
    # at once (master_start_timeout 0) instead of being restarted in place.
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    master_start_timeout: 0
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_log_hints: "on"
        shared_preload_libraries: pg_stat_statements
        pg_stat_statements.track: all
  initdb:
    - encoding: UTF8
    - locale: C
    - auth-host: trust
    - auth-local: trust
postgresql:
  listen: 127.0.0.1:${PG_PORTS[$i]}
  connect_address: 127.0.0.1:${PG_PORTS[$i]}
  data_dir: $STATE/$name/data
  bin_dir: $PG_BIN
  pgpass: $STATE/$name/pgpass
  # Loopback only, trusted: this is a drill on one machine, not a deployment template for auth.
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
  authentication:
    superuser: {username: postgres}
    replication: {username: postgres}
    rewind: {username: postgres}
  parameters:
    unix_socket_directories: $STATE/$name
YAML
}

write_pgbouncer() {
  cat >"$STATE/pgbouncer/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$HAPROXY_PG user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = any
# SHOW STATS for make bench-cluster (transactions and queries per login, as the pooler counts them)
stats_users = postgres
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
server_check_delay = 1
server_connect_timeout = 3
# After a failed server login PgBouncer waits this long before trying again (default 15 s):
# during a failover that wait, not Patroni, would decide when logins come back.
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
logfile = $STATE/pgbouncer/pgbouncer.log
INI
}

write_haproxy() {
  local i servers_grpc="" servers_rest=""
  for ((i = 1; i <= REPLICAS; i++)); do
    servers_grpc+="  server r$i 127.0.0.1:$(grpc_port $i) check proto h2"$'\n'
    servers_rest+="  server r$i 127.0.0.1:$(http_port $i) check"$'\n'
  done
  cat >"$STATE/haproxy.cfg" <<CFG
global
  maxconn 4096
  external-check
  insecure-fork-wanted
  pidfile $STATE/pids/haproxy.pidfile
defaults
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout check 2s
  default-server inter 1s fall 2 rise 1
listen stats
  bind 127.0.0.1:$HAPROXY_STATS
  mode http
  stats enable
  stats uri /
# PostgreSQL: only the leader passes Patroni's GET /primary; sessions to a demoted node are cut.
listen postgres
  bind 127.0.0.1:$HAPROXY_PG
  mode tcp
  option httpchk GET /primary
  http-check expect status 200
  server pg1 127.0.0.1:${PG_PORTS[0]} check port ${REST_PORTS[0]} on-marked-down shutdown-sessions
  server pg2 127.0.0.1:${PG_PORTS[1]} check port ${REST_PORTS[1]} on-marked-down shutdown-sessions
frontend rest
  bind 127.0.0.1:$HAPROXY_REST
  mode http
  default_backend authsvc_rest
backend authsvc_rest
  mode http
  balance roundrobin
  option httpchk GET /healthz
  http-check expect status 200
$servers_rest
frontend grpc
  bind 127.0.0.1:$HAPROXY_GRPC proto h2
  mode http
  default_backend authsvc_grpc
backend authsvc_grpc
  mode http
  balance roundrobin
  option external-check
  external-check path "/usr/bin:/bin"
  external-check command $HERE/grpc-health-check
$servers_grpc
CFG
}

pg_ready() { curl -sf "http://127.0.0.1:$1/$2" >/dev/null; }

up() {
  install_missing
  if [ -d "$STATE/pids" ] && ls "$STATE"/pids/*.pid >/dev/null 2>&1; then
    log "already up (state in $STATE); run 'make cluster-down' first"; exit 1
  fi
  test -x "$AUTHSVC" || { log "no $AUTHSVC: run 'make install'"; exit 1; }
  rm -rf "$STATE"; mkdir -p "$STATE"/{log,pids,etcd,pgbouncer}
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$STATE" "$STATE/log" "$STATE/pgbouncer"

  start etcd etcd --name e1 --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "e1=http://127.0.0.1:$ETCD_PEER" --listen-metrics-urls "http://127.0.0.1:$((BASE + 81))"
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  for i in 0 1; do
    write_patroni $i
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$STATE/pg$((i + 1))"
    start "patroni-pg$((i + 1))" "${AS_PG[@]}" patroni "$STATE/pg$((i + 1))/patroni.yml"
    # the first node bootstraps (becomes leader) before the second clones it
    if [ $i = 0 ]; then wait_for "leader pg1" 90 pg_ready "${REST_PORTS[0]}" primary; fi
  done
  wait_for "replica pg2" 120 pg_ready "${REST_PORTS[1]}" replica
  wait_for "synchronous standby" 60 pg_ready "${REST_PORTS[1]}" sync

  write_haproxy
  start haproxy haproxy -db -f "$STATE/haproxy.cfg"
  wait_for "haproxy to the leader" 30 "$PG_BIN/psql" -h 127.0.0.1 -p "$HAPROXY_PG" -U postgres -d postgres -Atc "SELECT 1"
  "$PG_BIN/psql" -h 127.0.0.1 -p "$HAPROXY_PG" -U postgres -d postgres -qc "CREATE DATABASE authsvc" \
    -c "\\c authsvc" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null

  write_pgbouncer
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$STATE/pgbouncer"
  start pgbouncer "${AS_PG[@]}" pgbouncer "$STATE/pgbouncer/pgbouncer.ini"
  wait_for pgbouncer 30 "$PG_BIN/psql" -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres -d authsvc -Atc "SELECT 1"

  # The schema first, once, by the CLI (replicas starting together would also agree).
  replica_env 1 "$AUTHSVC" migrate >/dev/null
  for ((i = 1; i <= REPLICAS; i++)); do
    start "authsvc-$i" env $(replica_env_vars "$i") "$AUTHSVC" serve
  done
  for ((i = 1; i <= REPLICAS; i++)); do
    wait_for "authsvc replica $i" 60 curl -sf "http://127.0.0.1:$(http_port "$i")/healthz"
  done
  wait_for "haproxy REST" 20 curl -sf "http://127.0.0.1:$HAPROXY_REST/healthz"
  status
}

replica_env_vars() {
  local i=$1
  echo "AUTHSVC_DATABASE_URL=$DB_URL AUTHSVC_DB_STATEMENT_CACHE=0 AUTHSVC_DB_LISTEN_URL=$LISTEN_URL" \
    "AUTHSVC_GRPC_ADDR=127.0.0.1:$(grpc_port "$i") AUTHSVC_HTTP_ADDR=127.0.0.1:$(http_port "$i")" \
    "AUTHSVC_METRICS_ADDR=127.0.0.1:$(metrics_port "$i")" \
    "AUTHSVC_DATA_DIR=$STATE/authsvc-$i AUTHSVC_TRUSTED_PROXIES=127.0.0.1 ${CLUSTER_AUTHSVC_ENV:-}"
}
replica_env() { local i=$1; shift; env $(replica_env_vars "$i") "$@"; }

status() {
  echo "state:      $STATE"
  echo "REST:       http://127.0.0.1:$HAPROXY_REST   (HAProxy -> $REPLICAS replicas)"
  echo "gRPC:       127.0.0.1:$HAPROXY_GRPC          (HAProxy h2c -> $REPLICAS replicas)"
  echo "PostgreSQL: 127.0.0.1:$HAPROXY_PG (leader), PgBouncer 127.0.0.1:$PGBOUNCER_PORT"
  echo "Patroni:    http://127.0.0.1:${REST_PORTS[0]}/cluster"
  curl -s "http://127.0.0.1:${REST_PORTS[0]}/cluster" | python3 -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    print("  %s: %s %s port %s" % (m["name"], m["role"], m["state"], m["port"]))' || true
}

# Stop what `up` started: each pid file's process, if it is still the one we started (its
# command line mentions the state dir or our ports), children with it (own session).
down() {
  local f pid name
  [ -d "$STATE/pids" ] || { log "nothing started under $STATE"; return 0; }
  for name in authsvc-3 authsvc-2 authsvc-1 haproxy pgbouncer patroni-pg2 patroni-pg1 etcd; do
    f="$STATE/pids/$name.pid"; [ -f "$f" ] || continue
    pid=$(cat "$f")
    if grep -qa -- "$STATE" "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
      [ -d "/proc/$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
    fi
    rm -f "$f"
  done
  # Patroni stops its PostgreSQL on SIGTERM; a postmaster left by a killed Patroni is ours too.
  for name in pg1 pg2; do
    f="$STATE/$name/data/postmaster.pid"
    if [ -f "$f" ]; then
      pid=$(head -1 "$f")
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$STATE/$name/data"; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
      fi
    fi
  done
  log "stopped (state kept in $STATE)"
}

drill() {
  CLUSTER_DIR=$STATE CLUSTER_REST_PORT=$HAPROXY_REST CLUSTER_PATRONI_PORTS="${REST_PORTS[*]}" \
    AUTHSVC=$AUTHSVC replica_env 1 "$ROOT/.venv/bin/python" "$HERE/failover_drill.py"
}

bench() {
  CLUSTER_DIR=$STATE CLUSTER_GRPC_PORT=$HAPROXY_GRPC CLUSTER_STATS_PORT=$HAPROXY_STATS \
    CLUSTER_PGBOUNCER_PORT=$PGBOUNCER_PORT PG_BIN=$PG_BIN \
    CLUSTER_PATRONI_PORTS="${REST_PORTS[*]}" CLUSTER_REPLICAS=$REPLICAS AUTHSVC=$AUTHSVC \
    replica_env 1 "$ROOT/.venv/bin/python" "$ROOT/bench/cluster.py"
}

case "${1:-}" in
  up) up ;;
  bench) bench ;;
  drill) drill ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|drill|bench" >&2; exit 2 ;;
esac
