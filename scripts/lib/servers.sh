# Shared by scripts: make sure RabbitMQ and Redis answer on loopback, installing Debian's
# packages and starting them when they do not; remember what we started to stop it after.

STARTED_SERVERS=()

port_open() {  # port_open PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-
}

wait_port() {  # wait_port PORT SECONDS NAME
  local deadline=$((SECONDS + $2))
  until port_open "$1"; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "$3 did not come up on port $1 within $2 s" >&2; return 1; fi
    sleep 0.5
  done
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install $*" >&2; return 1; fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  port_open 6379 && return 0
  # A redis-server that is already running (busy, or loading) is not ours to start or stop.
  if pgrep -f 'redis-server [^ ]*:6379$' >/dev/null 2>&1 && wait_port 6379 30 redis 2>/dev/null; then return 0; fi
  command -v redis-server >/dev/null || apt_install redis-server
  echo "starting redis-server on 127.0.0.1:6379" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --pidfile /tmp/herald-test-redis.pid --logfile /tmp/herald-test-redis.log
  STARTED_SERVERS+=(redis)
  wait_port 6379 30 redis
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  # A node that runs with its port closed is restarting its application (as a fault test
  # does to the machine's broker): it is not ours to start, nor to stop at exit.
  if timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    echo "rabbitmq is running but not listening yet; waiting for it" >&2
    wait_port 5672 120 rabbitmq
    return
  fi
  echo "starting rabbitmq-server on 127.0.0.1:5672" >&2
  rabbitmq-server -detached
  STARTED_SERVERS+=(rabbitmq)
  wait_port 5672 120 rabbitmq
  # The port opens before the broker accepts logins; wait until it is fully booted.
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
}

stop_started_servers() {
  local server
  for server in "${STARTED_SERVERS[@]}"; do
    case "$server" in
      redis) redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true ;;
      rabbitmq) rabbitmqctl stop >/dev/null 2>&1 || true ;;
    esac
  done
}

# Headless Chromium for the browser tests. Not fatal: without it those tests are skipped
# and say why.
ensure_chromium() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then return 0; fi
  echo "installing chromium and chromium-driver for the browser tests ..." >&2
  apt_install chromium chromium-driver || echo "could not install Chromium: the browser tests will be skipped" >&2
}

# The binaries of the HA tests (tests/ha, the directory contract on Redis Cluster and
# Sentinel): redis-server and redis-cli to start a cluster of six and a sentinel setup,
# rabbitmq-server to start a cluster of three, each on ports of their own. The tests start
# and stop those processes themselves; installing must not start the packages' services
# (the machine's own servers may be other ones on 5672 and 6379), so a policy-rc.d keeps
# them from starting when there is none. Not fatal: without them those tests are skipped
# and say why.
ensure_ha_binaries() {
  local wanted=()
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || wanted+=(redis-server redis-tools)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || wanted+=(rabbitmq-server)
  [ ${#wanted[@]} -eq 0 ] && return 0
  echo "installing ${wanted[*]} for the HA tests ..." >&2
  local policy=/usr/sbin/policy-rc.d made=""
  if [ "$(id -u)" = 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
  fi
  apt_install "${wanted[@]}" || echo "could not install ${wanted[*]}: the HA tests will be skipped" >&2
  if [ -n "$made" ]; then rm -f "$policy"; fi
}
