#!/usr/bin/env bash
# Regenerate leaderboards/demo.json from real runs of the demo task on the embedded model.
#
#   bash leaderboards/build_demo.sh            # LIMIT=2 items per run by default
#   LIMIT=16 bash leaderboards/build_demo.sh   # the task's default size
#
# Four runs (strategies pt and inline, splits chosen and rejected) go to
# runs/demo-leaderboard/; rerunning resumes them and the result cache skips finished work.
# The page is rendered to runs/demo-leaderboard/site/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${LIMIT:-2}"
RUNS=runs/demo-leaderboard
for strategy in pt inline; do
  for split in chosen rejected; do
    persona-eval run --task demo --model hf:embedded --strategy "$strategy" --split "$split" \
      --limit "$LIMIT" --quiet --output-dir "$RUNS/$strategy-$split" >/dev/null
  done
done
persona-eval leaderboard build "$RUNS"/*-chosen "$RUNS"/*-rejected -o leaderboards/demo.json \
  --title "persona-eval demo: SmolLM2-135M judged by itself (smoke test, not a benchmark)"
persona-eval leaderboard show leaderboards/demo.json
persona-eval leaderboard render leaderboards/demo.json -o "$RUNS/site"
