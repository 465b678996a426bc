#!/usr/bin/env bash
# The local test bed: PostgreSQL (TLS) and Apache Kafka (KRaft, one node) on 127.0.0.1.
#
#   testbed.sh start   start both (reuses them when they already run), write the env file
#   testbed.sh stop    stop both, keep nothing running
#   testbed.sh status  say what runs
#   testbed.sh env     print the env file (source it to point tests at the test bed)
#
# Kafka listens three ways, as users meet it:
#   PLAINTEXT  (no security)           CK_TEST_KAFKA_PLAINTEXT
#   SSL        (mutual TLS, as Aiven)  CK_TEST_KAFKA_SSL     certs: ca.pem service.cert service.key
#   SASL_SSL   (PLAIN, SCRAM-SHA-256/512 over TLS, no client cert)  CK_TEST_KAFKA_SASL
# Certificates are made fresh at each start in the PEM shapes Aiven hands out and are
# never committed. Everything lives in $CHECKSITE_TESTBED_DIR (default /tmp/checksite-testbed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${CHECKSITE_TESTBED_DIR:-/tmp/checksite-testbed}
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
JARS=${CHECKSITE_KAFKA_JARS:-$HOME/.cache/checksite/kafka-$KAFKA_VERSION/libs}
PORT_PLAIN=${CHECKSITE_TESTBED_KAFKA_PORT:-19092}
PORT_SSL=$((PORT_PLAIN + 1))
PORT_SASL=$((PORT_PLAIN + 2))
PORT_CTRL=$((PORT_PLAIN + 3))
PORT_PG=${CHECKSITE_TESTBED_PG_PORT:-54329}
CERTS=$STATE/certs
PGDATA=$STATE/pg
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

say() { echo "testbed: $*" >&2; }
die() { echo "testbed: error: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
  say "$what is up"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(head -n 1 "$1")" 2>/dev/null; }

kafka_running() { pid_alive "$STATE/kafka.pid"; }
pg_running() { [ -f "$PGDATA/postmaster.pid" ] && pid_alive "$PGDATA/postmaster.pid"; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is missing: $2"
}

fetch_jars() {
  if [ -f "$JARS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    return
  fi
  need mvn "install Maven (apt-get install -y maven) to fetch Kafka's jars"
  say "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $JARS"
  mkdir -p "$JARS"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$JARS" -DincludeScope=runtime ||
    die "could not fetch Kafka's jars with Maven (see above)"
}

make_certs() {
  rm -rf "$CERTS"
  mkdir -p "$CERTS"
  cd "$CERTS"
  local days=30
  ca() { # ca NAME CN
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days $days -subj "/CN=$2" \
      -keyout "$1.key" -out "$1.pem" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  }
  leaf() { # leaf NAME CN EXTENDED_KEY_USAGE
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "$3" >"$1.ext"
    openssl x509 -req -sha256 -days $days -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile "$1.ext" -out "$1.cert" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  ca ca "checksite test CA"
  ca other-ca "checksite unrelated CA" # signs nothing: for "untrusted server" tests
  leaf server localhost serverAuth
  leaf service checksite-client clientAuth # the client pair Aiven calls service.cert/service.key
  cat server.key server.cert >broker.pem
  site_certs
  rm -f ca.srl
  chmod 600 ./*.key broker.pem
  cd - >/dev/null
}

# Certificates of checked sites that are wrong the ways real ones are (the HTTP verdict
# test) or that expire soon (the certificate alert tests).
site_certs() {
  local ext='subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n'
  csr() { openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null; }
  signed() { # signed NAME DAYS [EXT]
    csr "$1" localhost
    printf "${3:-$ext}" >"$1.ext"
    openssl x509 -req -sha256 -days "$2" -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile "$1.ext" -out "$1.cert" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  signed site-wrong-name $days 'subjectAltName=DNS:wrong.example\nbasicConstraints=CA:FALSE\n'
  signed site-soon-a 5
  signed site-soon-b 9
  # Expired: `openssl ca` is the one command of OpenSSL 3.0 that takes a start and end date.
  local db=$CERTS/expired-ca
  mkdir -p "$db"
  : >"$db/index.txt"
  printf '%s\n' 1000 >"$db/serial"
  printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\nserial=%s/serial\nnew_certs_dir=%s\ndefault_md=sha256\npolicy=p\ncopy_extensions=none\n[p]\ncommonName=supplied\n' \
    "$db" "$db" "$db" >"$db/ca.cnf"
  csr site-expired localhost
  printf "$ext" >site-expired.ext
  openssl ca -batch -config "$db/ca.cnf" -cert ca.pem -keyfile ca.key -notext \
    -startdate 20200101000000Z -enddate 20200201000000Z -extfile site-expired.ext \
    -in site-expired.csr -out site-expired.cert 2>/dev/null
  rm -rf "$db" site-expired.csr site-expired.ext
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days $days -subj "/CN=localhost" \
    -keyout site-self-signed.key -out site-self-signed.cert \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
}

start_pg() {
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found: apt-get install -y postgresql"
  rm -rf "$PGDATA" "$STATE/pgsock"
  mkdir -p "$PGDATA" "$STATE/pgsock"
  cp "$CERTS/server.cert" "$STATE/pg-server.crt"
  cp "$CERTS/server.key" "$STATE/pg-server.key"
  local pwfile=$STATE/pg-pw
  printf '%s\n' "$PG_PASSWORD" >"$pwfile"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$PGDATA" "$STATE/pgsock" "$STATE/pg-server.crt" "$STATE/pg-server.key" "$pwfile"
    as=(runuser -u postgres --)
  fi
  chmod 600 "$STATE/pg-server.key"
  "${as[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U checksite --pwfile="$pwfile" -A scram-sha-256 -E UTF8 >"$STATE/pg-initdb.log" 2>&1 ||
    die "initdb failed: see $STATE/pg-initdb.log"
  rm -f "$pwfile"
  cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT_PG
unix_socket_directories = '$STATE/pgsock'
ssl = on
ssl_cert_file = '$STATE/pg-server.crt'
ssl_key_file = '$STATE/pg-server.key'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
# just bench reads each row's commit time (pg_xact_commit_timestamp): end-to-end latency.
track_commit_timestamp = on
EOF
  cat >"$PGDATA/pg_hba.conf" <<EOF
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
EOF
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 30 start >/dev/null ||
    die "PostgreSQL did not start: see $PGDATA/server.log"
}

start_kafka() {
  need java "install a Java 17+ runtime (apt-get install -y openjdk-17-jre-headless)"
  fetch_jars
  local k=$STATE/kafka
  rm -rf "$k"
  mkdir -p "$k/data"
  cat >"$k/log4j2.properties" <<EOF
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = $k/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
EOF
  cat >"$k/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$PORT_CTRL
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT_PLAIN,SSL://127.0.0.1:$PORT_SSL,SASL_SSL://127.0.0.1:$PORT_SASL,CONTROLLER://127.0.0.1:$PORT_CTRL
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT_PLAIN,SSL://127.0.0.1:$PORT_SSL,SASL_SSL://127.0.0.1:$PORT_SASL
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$k/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
ssl.keystore.type=PEM
ssl.keystore.location=$CERTS/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_checksite="$SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  local cluster
  cluster=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  # `--cluster-id=`: an id starting with "-" (one in 64) is otherwise read as an option.
  java -cp "$JARS/*" -Dlog4j2.configurationFile="$k/log4j2.properties" kafka.tools.StorageTool format \
    --cluster-id="$cluster" -c "$k/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=checksite,password=$SASL_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=checksite,password=$SASL_PASSWORD]" >"$k/format.log" 2>&1 ||
    die "formatting Kafka's storage failed: see $k/format.log"
  # setsid: the broker outlives this script, and a Ctrl-C in the caller's terminal does not reach it.
  launch_kafka
  broker_ready() {
    kafka_running || die "Kafka exited while starting: see $k/stdout.log and $k/server.log"
    grep -q "Kafka Server started" "$k/server.log" 2>/dev/null && port_open "$PORT_SASL"
  }
  wait_for 90 "Kafka (127.0.0.1:$PORT_PLAIN plaintext, :$PORT_SSL mTLS, :$PORT_SASL SASL_SSL)" broker_ready ||
    die "Kafka did not start within 90 s: see $k/server.log"
}

write_env() {
  local url="postgres://checksite:$PG_PASSWORD@127.0.0.1:$PORT_PG/postgres?sslmode=verify-full&sslrootcert=$CERTS/ca.pem"
  cat >"$STATE/env" <<EOF
# Written by scripts/testbed/testbed.sh: where the test bed's services are.
export CK_TEST_KAFKA_PLAINTEXT=127.0.0.1:$PORT_PLAIN
export CK_TEST_KAFKA_SSL=127.0.0.1:$PORT_SSL
export CK_TEST_KAFKA_SASL=127.0.0.1:$PORT_SASL
export CK_TEST_KAFKA_SASL_USER=checksite
export CK_TEST_KAFKA_SASL_PASSWORD=$SASL_PASSWORD
export CK_TEST_CERTS=$CERTS
export CK_TEST_POSTGRES_URL='$url'
export CK_TEST_KAFKA_PID_FILE=$STATE/kafka.pid
export CK_TEST_TESTBED=$here/testbed.sh
EOF
  chmod 600 "$STATE/env"
}

stop() {
  # The status pages `just demo` leaves running (one per port) read the test bed's PostgreSQL.
  local page
  for page in "$STATE"/demo-page*.pid; do
    [ -e "$page" ] || continue
    if pid_alive "$page"; then
      kill "$(cat "$page")" 2>/dev/null || true
      say "the demo's status page stopped"
    fi
    rm -f "$page"
  done
  if pid_alive "$STATE/kafka.pid"; then
    local pid
    pid=$(cat "$STATE/kafka.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    say "Kafka stopped"
  fi
  rm -f "$STATE/kafka.pid"
  # a broker left by an interrupted run whose pid file is gone
  pkill -9 -f "kafka.Kafka $STATE/kafka/server.properties" 2>/dev/null || true
  if pg_running; then
    local as=()
    [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
    "${as[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 20 stop >/dev/null 2>&1 ||
      kill -9 "$(head -n 1 "$PGDATA/postmaster.pid")" 2>/dev/null || true
    say "PostgreSQL stopped"
  fi
}

# Kafka only, in place (tests that take the broker away mid-stream): data, certificates and
# passwords are kept.
launch_kafka() {
  local k=$STATE/kafka
  setsid java -Xms256m -Xmx512m -XX:+UseSerialGC -cp "$JARS/*" \
    -Dlog4j2.configurationFile="$k/log4j2.properties" \
    kafka.Kafka "$k/server.properties" >"$k/stdout.log" 2>&1 </dev/null &
  echo $! >"$STATE/kafka.pid"
}

stop_kafka_only() {
  if pid_alive "$STATE/kafka.pid"; then
    local pid
    pid=$(cat "$STATE/kafka.pid")
    kill -9 "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  say "Kafka stopped (in place)"
}

start_kafka_only() {
  local k=$STATE/kafka
  [ -f "$k/server.properties" ] || die "the test bed was never started"
  kafka_running && return
  : >"$k/server.log"
  launch_kafka
  broker_ready() {
    kafka_running || die "Kafka exited while starting: see $k/stdout.log and $k/server.log"
    grep -q "Kafka Server started" "$k/server.log" 2>/dev/null && port_open "$PORT_SASL"
  }
  wait_for 90 "Kafka (in place)" broker_ready || die "Kafka did not start within 90 s: see $k/server.log"
}

pg_ctl_as_owner() {
  local as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" "$@"
}

start() {
  need openssl "apt-get install -y openssl"
  mkdir -p "$STATE"
  chmod 755 "$STATE"
  if kafka_running && pg_running && [ -f "$STATE/env" ] && port_open "$PORT_SASL" && port_open "$PORT_PG"; then
    say "already running (reusing it); 'testbed.sh stop' stops it"
    return
  fi
  stop
  for p in $PORT_PLAIN $PORT_SSL $PORT_SASL $PORT_CTRL $PORT_PG; do
    port_open "$p" && die "port $p on 127.0.0.1 is taken by another program: free it, or set CHECKSITE_TESTBED_KAFKA_PORT / CHECKSITE_TESTBED_PG_PORT"
  done
  PG_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')
  SASL_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')
  make_certs
  start_pg
  say "PostgreSQL is up (127.0.0.1:$PORT_PG, TLS)"
  start_kafka
  write_env
  say "env written to $STATE/env"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
stop-kafka) stop_kafka_only ;;
# A broker that hangs (a long GC pause, a frozen VM): connections stay open, nothing is answered.
pause-kafka) kafka_running && kill -STOP "$(cat "$STATE/kafka.pid")" && say "Kafka paused (SIGSTOP)" ;;
resume-kafka) kafka_running && kill -CONT "$(cat "$STATE/kafka.pid")" && say "Kafka resumed (SIGCONT)" ;;
start-kafka) start_kafka_only ;;
stop-postgres) pg_ctl_as_owner -m immediate -w -t 20 stop >/dev/null && say "PostgreSQL stopped (in place)" ;;
start-postgres) pg_ctl_as_owner -l "$PGDATA/server.log" -w -t 30 start >/dev/null && say "PostgreSQL started (in place)" ;;
status)
  kafka_running && echo "kafka: running (pid $(cat "$STATE/kafka.pid"))" || echo "kafka: stopped"
  pg_running && echo "postgresql: running" || echo "postgresql: stopped"
  ;;
env) cat "$STATE/env" ;;
*)
  echo "usage: $0 start|stop|status|env|stop-kafka|start-kafka|pause-kafka|resume-kafka|stop-postgres|start-postgres" >&2
  exit 2
  ;;
esac
