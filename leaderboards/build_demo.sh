#!/usr/bin/env bash
# Regenerate leaderboards/demo.json from real runs of the demo task on the embedded model.
#
#   bash leaderboards/build_demo.sh            # LIMIT=2 items per run by default
#   LIMIT=16 bash leaderboards/build_demo.sh   # the task's default size
#
# Four runs (strategies pt and inline, splits chosen and rejected) go to runs/<derived>,
# the runner's default: the folder name carries a hash of the resolved config (task hash
# included), so a rerun resumes the same run, and a changed task gets fresh runs instead of
# mixing with stale ones. The page is rendered to runs/demo-leaderboard-site/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${LIMIT:-2}"
dirs=()
for strategy in pt inline; do
  for split in chosen rejected; do
    dir=$(persona-eval run --task demo --model hf:embedded --strategy "$strategy" --split "$split" \
            --limit "$LIMIT" --quiet --json \
          | python3 -c 'import json, sys; print(json.load(sys.stdin)["run_dir"])')
    echo "run: $dir"
    dirs+=("$dir")
  done
done
# The embedded judge ties every pair (the paper's dPQ is undefined), so the demo board is
# sorted by the probability-weighted dPQ, which its P(A) still gives.
persona-eval leaderboard build "${dirs[@]}" -o leaderboards/demo.json --sort weighted_dpq \
  --title "persona-eval demo: SmolLM2-135M judged by itself (smoke test, not a benchmark)"
persona-eval leaderboard show leaderboards/demo.json
persona-eval leaderboard render leaderboards/demo.json -o runs/demo-leaderboard-site
