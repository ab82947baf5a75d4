#!/usr/bin/env bash
# Submit jobs/train.py as a Ray job to the head at $RAY_DASHBOARD_ADDRESS (default
# http://127.0.0.1:8265); if no head answers there, start one for this run and stop it afterwards.
#
#   scripts/submit_train.sh [configs/train_cpu.yaml] [extra jobs/train.py args...]
#
# Runs from the repository root with its .venv (override with PYTHON_BIN_DIR). Head and job run on
# this machine, so no --working-dir is uploaded: the job starts in the folder the head was started
# from (the repository root) and writes the run under storage_path (runs/ by default).
# The head is started with `ray start --block` in its own process group and stopped by signalling
# that group only: `ray stop` would also stop every other Ray instance on the machine.
# RAY_AUTH_MODE=disabled: Ray 2.60 turns token auth on by default (docs/TRAINING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-configs/train_cpu.yaml}"
shift || true
BIN="${PYTHON_BIN_DIR:-$PWD/.venv/bin}"
export PATH="$BIN:$PATH"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
ADDRESS="${RAY_DASHBOARD_ADDRESS:-http://127.0.0.1:8265}"
NUM_CPUS="${RAY_NUM_CPUS:-2}"
GCS_PORT="${RAY_HEAD_PORT:-6379}"

head_up() { python - "$ADDRESS" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/api/version", timeout=2)
PY
}

head_pid=""
cleanup() {
  if [ -n "$head_pid" ]; then
    echo "[submit] stopping the Ray head this script started (process group $head_pid)"
    kill -TERM -- "-$head_pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$head_pid" 2>/dev/null || break; sleep 1; done
    sleep 2
    kill -KILL -- "-$head_pid" 2>/dev/null || true  # whatever of the group ignored SIGTERM
  fi
}
trap cleanup EXIT

if ! head_up; then
  # Ports: the dashboard and GCS keep their usual 8265 / 6379 when free, else take free ones;
  # the per-node agents always take free ones: their fixed defaults (52365, ...) clash with any
  # other Ray instance on the machine, and the head then never accepts jobs ("No available agent").
  read -r DASH_PORT GCS_PORT P1 P2 P3 P4 < <(python - "${ADDRESS##*:}" "$GCS_PORT" <<'PY'
import socket, sys
def port(want=0):
    s = socket.socket()
    try:
        s.bind(("", want))
    except OSError:
        s.bind(("", 0))
    keep.append(s)
    return s.getsockname()[1]
keep = []
print(port(int(sys.argv[1])), port(int(sys.argv[2])), *[port() for _ in range(4)])
PY
)
  ADDRESS="http://127.0.0.1:$DASH_PORT"
  echo "[submit] starting a Ray head ($NUM_CPUS CPUs, GCS port $GCS_PORT, dashboard $ADDRESS)"
  setsid ray start --head --block --port="$GCS_PORT" --num-cpus="$NUM_CPUS" --dashboard-host=127.0.0.1 \
    --dashboard-port="$DASH_PORT" --dashboard-agent-listen-port="$P1" --dashboard-agent-grpc-port="$P2" \
    --metrics-export-port="$P3" --runtime-env-agent-port="$P4" --disable-usage-stats \
    >/tmp/lssr-ray-head-$$.log 2>&1 &
  head_pid=$!
  for _ in $(seq 120); do head_up && break; kill -0 "$head_pid" 2>/dev/null || break; sleep 1; done
  head_up || { echo "[submit] the Ray head did not come up; see /tmp/lssr-ray-head-$$.log" >&2; exit 1; }
fi

t0=$(date +%s)
# Submit (retried: a fresh head answers HTTP a few seconds before its job agent accepts jobs),
# then follow the logs and return the job's own status.
job_id=""
for attempt in $(seq 20); do
  id="lssr-train-$(date +%Y%m%d-%H%M%S)-$attempt"
  if ray job submit --address "$ADDRESS" --submission-id "$id" --no-wait -- \
      python jobs/train.py --config "$CONFIG" "$@" >/tmp/lssr-submit-$$.log 2>&1; then
    job_id="$id"; break
  fi
  grep -q "No available agent" /tmp/lssr-submit-$$.log || { cat /tmp/lssr-submit-$$.log >&2; exit 1; }
  sleep 2
done
[ -n "$job_id" ] || { echo "[submit] the cluster did not accept the job (its job agent is not up: see the" \
  "head's logs under /tmp/ray/session_latest/logs/dashboard_agent.log)" >&2; exit 1; }
echo "[submit] job $job_id submitted to $ADDRESS"
ray job logs --address "$ADDRESS" --follow "$job_id" || true
status=$(ray job status --address "$ADDRESS" "$job_id" 2>&1 | grep -io "succeeded\|failed\|stopped" | tail -1 | tr a-z A-Z || true)
echo "[submit] job $job_id ${status:-UNKNOWN} in $(( $(date +%s) - t0 )) s (wall, from submission)"
[ "$status" = "SUCCEEDED" ]
