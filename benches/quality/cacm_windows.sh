#!/usr/bin/env bash
# nDCG@10 of TextIndex on the CACM development collection (../shared/data/dev-cacm) for
# each document window, with MiniLM (models/all-MiniLM-L6-v2), and with k' = 200 against
# k' = every document (the exact MaxSim over the same vectors). The numbers go to
# docs/QUALITY.md beside the needle test's.
#
#   bash benches/quality/cacm_windows.sh [CACM_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
cacm=${1:-../shared/data/dev-cacm}
out=${2:-target/cacm-windows}
mkdir -p "$out"
cargo build --release -q -p lemur-cli --features text
lemur=target/release/lemur
for window in 32 64 128 256; do
  printf 'document_window = %s\n' "$window" > "$out/w$window.toml"
  rm -rf "$out/index-$window"
  "$lemur" -q text index --model models/all-MiniLM-L6-v2 --docs "$cacm/docs.jsonl" \
    --config "$out/w$window.toml" --out "$out/index-$window"
  for candidates in 200 4000; do
    "$lemur" -q text search "$out/index-$window" --queries "$cacm/queries.jsonl" -k 100 \
      --candidates "$candidates" --out "$out/run-$window-$candidates.tsv"
    printf 'window %s, k'"'"' %s: ' "$window" "$candidates"
    python3 "$cacm/score.py" "$out/run-$window-$candidates.tsv" --query-lines
  done
done
