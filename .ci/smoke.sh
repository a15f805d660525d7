#!/usr/bin/env bash
# Smoke test of an installed pushrl (a wheel in a fresh virtualenv), run from a directory
# outside the checkout: the commands a new user types first, at a small size.
# Usage: .ci/smoke.sh VENV_DIR WORK_DIR
set -euo pipefail
VENV=$1
WORK=$2
mkdir -p "$WORK"
cd "$WORK"
unset PYTHONPATH
export PATH="$VENV/bin:$PATH"
PY="$VENV/bin/python"

pushrl --version
"$PY" - <<'PYEOF'
import pushrl, gymnasium as gym
env = gym.make("pushrl/PushTiming-v1")  # the packaged default scenario and its data
obs, _ = env.reset(seed=0)
assert obs.shape == env.observation_space.shape, obs.shape
print("gym.make ok:", pushrl.__file__)
PYEOF
pushrl data synth --out data/world --users 300 --days 7 --seed 1
pushrl data validate data/world
pushrl sim fit data/world --out sim/world
pushrl train bandit --data data/world --out policies/vw
pushrl data synth --out data/heldout --users 300 --days 7 --seed 2
rc=0
pushrl evaluate --data data/heldout --policy policies/vw --out ope/vw || rc=$?
if [ "$rc" -gt 1 ]; then echo "FAIL: pushrl evaluate exited $rc" >&2; exit 1; fi
pushrl compare -p most-active-hour -p fixed-hour:hour=19 --users 100 --days 2 --out compare

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pushrl serve --registry policies --host 127.0.0.1 --port "$PORT" --state state \
    --catalog data/world > serve.log 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
ready=0
for _ in $(seq 300); do
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "FAIL: pushrl serve exited; its log ends:" >&2
    tail -n 5 serve.log >&2
    exit 1
  fi
  if "$PY" -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:$PORT/readyz', timeout=2).status_code != 200)" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 1
done
if [ "$ready" -ne 1 ]; then echo "FAIL: the server was not ready within 300 s" >&2; exit 1; fi
"$PY" - "$PORT" <<'PYEOF'
import sys
import httpx
base = f"http://127.0.0.1:{sys.argv[1]}"
r = httpx.put(f"{base}/v1/users/u42", json={"timezone": "Europe/Berlin"}, timeout=10)
assert r.status_code == 200, (r.status_code, r.text)
r = httpx.post(f"{base}/v1/decide", json={"user_id": "u42", "horizon_hours": 24}, timeout=10)
assert r.status_code == 200, (r.status_code, r.text)
d = r.json()
assert 0 < d["pscore"] <= 1 and d["policy"], d
print("decide ok:", d)
PYEOF
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true
trap - EXIT
echo "smoke test passed"
