#!/usr/bin/env bash
# bench/run.sh [PROFILE]: herald against the lean tokio server, `ws` and Socket.IO, on
# loopback; writes bench/results/PROFILE/ and the PROFILE tables of BENCHMARKS.md.
#
#   PROFILE 2core  (default) server on CPU 0, load tool on CPU 1, sweep 1k/5k/20k
#   PROFILE 16core server on CPUs 0-7, load tool on 8-15, sweep 1k/5k/20k/100k
#
# herald's main run also fires a schedule every second and takes a reload (SIGHUP) in its
# saturated phase; the tool records the fires' lag and the reload from /metrics.
#
# The host's speed drifts from minute to minute, so the p99 ratio is also measured on
# LAT_REPEATS more lean/herald pairs run back to back, and the status route ROUTE_RUNS times;
# the report gives every pair and run with their median.
#
# Overrides: SERVER_CPUS, TOOL_CPUS, SWEEP, NODE_SWEEP, CLIENTS, SECS, LAT_REPEATS, ROUTE_RUNS,
# BENCH_PERF=1 (records
# `perf record -g` of herald and lean during the saturated phase into bench/results/PROFILE/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=${1:-${BENCH_PROFILE:-2core}}
case "$PROFILE" in
  2core)  : "${SERVER_CPUS:=0}"   "${TOOL_CPUS:=1}"    "${SWEEP:=1000 5000 20000}"        "${NODE_SWEEP:=1000 5000}" ;;
  16core) : "${SERVER_CPUS:=0-7}" "${TOOL_CPUS:=8-15}" "${SWEEP:=1000 5000 20000 100000}" "${NODE_SWEEP:=1000 5000 20000}" ;;
  *) echo "bench/run.sh: unknown profile $PROFILE (2core or 16core)" >&2; exit 2 ;;
esac
: "${CLIENTS:=2000}" "${SECS:=10}" "${PAYLOAD:=64}"
LAT_RATE=20                          # 20 msgs/s x 2,000 clients = 40k deliveries/s
USER_RATE=5000                       # user sends/s at two connection counts (below the route's limit)
: "${LAT_REPEATS:=4}"                # more lean/herald pairs of the latency phase (medians)
: "${ROUTE_RUNS:=3}"                 # status route runs (median)
SAT_DELIVERIES=400000                # asked deliveries/s in the saturated and sweep runs
SAT_RATE=$((SAT_DELIVERIES / CLIENTS))
API_KEY=bench-api-key-0123456789abcdef-0123456789
ACCESS_KEY=bench-access-key-0123456789abcdef
OUT=bench/results/$PROFILE
RESULTS=$OUT/results.jsonl
export BENCH_API_KEY=$API_KEY BENCH_ACCESS_KEY=$ACCESS_KEY

# File descriptors: one per connection on each side, plus slack.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
NOTE=${BENCH_NOTE:-}
cap=$((NOFILE - 300))
capped=""
for n in $SWEEP; do
  if [ "$n" -gt "$cap" ]; then capped+="$cap "; NOTE+=" The open-file limit ($NOFILE, hard) caps the $n-connection point at $cap."; else capped+="$n "; fi
done
SWEEP=$capped

echo "== building (release)" >&2
cargo build --release --quiet
cargo build --release --quiet --manifest-path bench/Cargo.toml
(cd bench/peers && npm ci --no-audit --no-fund --silent)
HERALD=$ROOT/target/release/herald
TOOL=$ROOT/bench/target/release/herald-bench
LEAN=$ROOT/bench/target/release/lean-server

mkdir -p "$OUT"
: > "$RESULTS"
printf '{"kind":"conditions","date":"%s","host":"%s","cpus":"%s","server_cpus":"%s","tool_cpus":"%s","nofile":"%s","loadavg":"%s","note":"%s"}\n' \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(uname -srm)" "$(nproc)" "$SERVER_CPUS" "$TOOL_CPUS" "$NOFILE" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$NOTE" >> "$RESULTS"

PID=""
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
stop() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi; }
trap stop EXIT
start() { # NAME
  stop
  case "$1" in
    herald)
      export BENCH_STATE; BENCH_STATE=$(mktemp -d /tmp/herald-bench-state.XXXXXX)
      # A copy, so that the reload step can edit it.
      cp bench/herald.yaml "$BENCH_STATE/herald.yaml"
      taskset -c "$SERVER_CPUS" "$HERALD" run -c "$BENCH_STATE/herald.yaml" --no-watch 2>>"$OUT/herald.log" & PID=$!
      wait_port 7071; wait_port 8888 ;;
    lean)     taskset -c "$SERVER_CPUS" "$LEAN" --ws 127.0.0.1:9001 --http 127.0.0.1:9101 2>>"$OUT/lean.log" & PID=$!; wait_port 9001; wait_port 9101 ;;
    ws)       PORT=9002 taskset -c "$SERVER_CPUS" node bench/peers/ws-server.js 2>>"$OUT/ws.log" & PID=$!; wait_port 9002 ;;
    socketio) PORT=9003 taskset -c "$SERVER_CPUS" node bench/peers/socketio-server.js 2>>"$OUT/socketio.log" & PID=$!; wait_port 9003 ;;
  esac
}
tool() { taskset -c "$TOOL_CPUS" "$TOOL" "$@"; }
fanout() { # NAME ARGS...: one fan-out run against a fresh server
  local name=$1; shift
  start "$name"
  local perf_pid=""
  if [ "${BENCH_PERF:-0}" = 1 ] && { [ "$name" = herald ] || [ "$name" = lean ]; } && [[ " $* " == *" --tag main "* ]]; then
    ( sleep $((SECS + 15)); timeout "$SECS" perf record -g -o "$OUT/perf-$name.data" -p "$PID" >/dev/null 2>&1 ) & perf_pid=$!
  fi
  # A reload in the middle of herald's saturated phase (an edit, then SIGHUP: an unchanged
  # file is not reloaded): no connection may drop.
  if [ "$name" = herald ] && [[ " $* " == *" --tag main "* ]]; then
    ( sleep $((SECS + 8)); echo "# edited under load" >> "$BENCH_STATE/herald.yaml"; kill -HUP "$PID" 2>/dev/null ) &
  fi
  case "$name" in
    herald) tool fanout --server herald --pid "$PID" --out "$RESULTS" --payload "$PAYLOAD" \
              --connect http://127.0.0.1:7071/api/negotiate --api-key "$API_KEY" --access-key "$ACCESS_KEY" "$@" ;;
    lean)     tool fanout --server lean --proto raw --pid "$PID" --out "$RESULTS" --payload "$PAYLOAD" \
              --connect ws://127.0.0.1:9001/ --publish http://127.0.0.1:9101/publish "$@" ;;
    ws)       tool fanout --server ws --proto raw --pid "$PID" --out "$RESULTS" --payload "$PAYLOAD" \
              --connect ws://127.0.0.1:9002/ --publish http://127.0.0.1:9002/publish "$@" ;;
    socketio) tool fanout --server socketio --proto socketio --pid "$PID" --out "$RESULTS" --payload "$PAYLOAD" \
              --connect 'ws://127.0.0.1:9003/socket.io/?EIO=4&transport=websocket' --publish http://127.0.0.1:9003/publish "$@" ;;
  esac || echo "run failed: $name $*" >&2
  [ -n "$perf_pid" ] && wait "$perf_pid" 2>/dev/null || true
}

for name in lean herald ws socketio; do
  echo "== $name: broadcast, $CLIENTS clients, $LAT_RATE then $SAT_RATE msgs/s" >&2
  if [ "$name" = herald ]; then
    fanout herald --proto signalr-json --publish http://127.0.0.1:7071/api/bench --clients "$CLIENTS" --phases "$LAT_RATE:$SECS,$SAT_RATE:$SECS" --tag main \
      --metrics http://127.0.0.1:7071/metrics
    fanout herald --proto signalr-msgpack --publish http://127.0.0.1:7071/api/bench --clients "$CLIENTS" --phases "$LAT_RATE:$SECS" --tag msgpack
    echo "== herald: group and user sends" >&2
    fanout herald --proto signalr-json --publish http://127.0.0.1:7071/api/bench/group --scenario group --group-size 100 \
      --clients "$CLIENTS" --phases "$((SAT_DELIVERIES / 100)):$SECS" --tag group
    fanout herald --proto signalr-json --publish http://127.0.0.1:7071/api/bench/user --scenario user \
      --clients "$CLIENTS" --phases "20000:$SECS" --tag user
    # The same user-send rate at two connection counts: the cost per send must not grow.
    for n in $CLIENTS $(printf '%s\n' $SWEEP | tail -1); do
      fanout herald --proto signalr-json --publish http://127.0.0.1:7071/api/bench/user --scenario user \
        --clients "$n" --phases "$USER_RATE:$SECS" --tag user-scale --connect-concurrency 100
    done
  else
    fanout "$name" --clients "$CLIENTS" --phases "$LAT_RATE:$SECS,$SAT_RATE:$SECS" --tag main
  fi
  sweep=$SWEEP; case "$name" in ws|socketio) sweep=$NODE_SWEEP ;; esac
  for n in $sweep; do
    echo "== $name: sweep $n connections" >&2
    rate=$((SAT_DELIVERIES / n)); [ "$rate" -lt 1 ] && rate=1
    if [ "$name" = herald ]; then
      fanout herald --proto signalr-json --publish http://127.0.0.1:7071/api/bench --clients "$n" --phases "$rate:$SECS" --tag sweep --connect-concurrency 100
    else
      fanout "$name" --clients "$n" --phases "$rate:$SECS" --tag sweep --connect-concurrency 100
    fi
  done
done

echo "== p99 at $LAT_RATE msgs/s: $LAT_REPEATS more lean/herald pairs" >&2
for _ in $(seq 1 "$LAT_REPEATS"); do
  fanout lean --clients "$CLIENTS" --phases "$LAT_RATE:$SECS" --tag latency-repeat
  fanout herald --proto signalr-json --publish http://127.0.0.1:7071/api/bench --clients "$CLIENTS" --phases "$LAT_RATE:$SECS" --tag latency-repeat \
    --metrics http://127.0.0.1:7071/metrics
done

echo "== herald: negotiate and status route request rates" >&2
start herald
tool http --server herald --what "negotiate (POST /api/negotiate)" --url http://127.0.0.1:7071/api/negotiate --pid "$PID" --out "$RESULTS" --secs 5
for _ in $(seq 1 "$ROUTE_RUNS"); do
  tool http --server herald --what "status route (POST /api/bench, outbox on)" --url http://127.0.0.1:7071/api/bench --body --api-key "$API_KEY" --pid "$PID" --out "$RESULTS" --secs 5
done
stop

"$TOOL" report --results "$RESULTS" --profile "$PROFILE" --markdown BENCHMARKS.md \
  --svg "$OUT/sweep.svg" --svg-link "$OUT/sweep.svg" --latency-rate "$LAT_RATE" --saturated-rate "$SAT_RATE"
echo "== done: BENCHMARKS.md, $OUT/" >&2
