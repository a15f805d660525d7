#!/bin/bash
# held-out worlds first (each once), then dev worlds; one process per world
cd /work/wt/gen
for W in taste-clicks fatigue-heavy commuter night-owls; do
  echo "[$(date -u +%H:%M:%S)] start $W $(uptime)" >> out/gen_final/uptime.log
  PYTHONPATH=/work/wt/gen /work/venv/bin/python benchmarks/generalization.py --served --reuse \
    --worlds $W --seed 2612 --ppo-seeds 0 --ppo-timesteps 1000000 --val-users 3000 \
    --eval-users 3000 --served-users 1000 --out out/gen_final > out/gen_final/$W.log 2>&1
  echo "[$(date -u +%H:%M:%S)] end $W rc=$? $(uptime)" >> out/gen_final/uptime.log
done
