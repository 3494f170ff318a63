#!/usr/bin/env bash
# Start the local services the test suite talks to, if they are not already up.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do up "$port" && return 0; sleep 1; done
  echo "services: $name did not come up on port $port" >&2
  return 1
}

if ! up 5432 && command -v pg_ctlcluster >/dev/null; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for postgres 5432
fi
if ! up 6379 && command -v redis-server >/dev/null; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_for redis 6379
fi
if ! up 5672 && command -v rabbitmq-server >/dev/null; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for rabbitmq 5672
fi
if ! up 3306 && [ -x /usr/sbin/mariadbd ]; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_for mariadb 3306
fi
exit 0
