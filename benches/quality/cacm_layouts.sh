#!/usr/bin/env bash
# nDCG@10 of TextIndex on the CACM development collection (../shared/data/dev-cacm) with
# MiniLM (models/all-MiniLM-L6-v2) for each storage layout and first stage an index can
# have: everything in f32 (what 3,204 documents get by default), the compressed layout
# that large indexes get by default (int4 tokens with the 32 leaders scored again in f32,
# int8 W), and the compressed layout searched through the graph first stage. All three
# are built over the same vectors with the same seed. The numbers go to docs/QUALITY.md.
#
#   bash benches/quality/cacm_layouts.sh [CACM_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
cacm=${1:-../shared/data/dev-cacm}
out=${2:-target/cacm-layouts}
mkdir -p "$out"
cargo build --release -q -p lemur-cli --features text
lemur=target/release/lemur
# A `[build]` table starts from BuildConfig's defaults (100 training epochs), not from
# TextIndexConfig's, so each file names the text index's random-feature map again.
printf '[build]\nepochs = 0\n' > "$out/f32.toml"
printf '[build]\nepochs = 0\n[build.storage]\ncompress_min_docs = 0\n' > "$out/compressed.toml"
printf '[build]\nepochs = 0\n[build.storage]\ncompress_min_docs = 0\n[build.first_stage]\ngraph_min_docs = 0\n' \
  > "$out/graph.toml"
for layout in f32 compressed graph; do
  rm -rf "$out/index-$layout"
  "$lemur" -q text index --model models/all-MiniLM-L6-v2 --docs "$cacm/docs.jsonl" \
    --config "$out/$layout.toml" --out "$out/index-$layout"
  "$lemur" -q text search "$out/index-$layout" --queries "$cacm/queries.jsonl" -k 100 \
    --candidates 200 --out "$out/run-$layout.tsv"
  printf '%s: ' "$layout"
  python3 "$cacm/score.py" "$out/run-$layout.tsv" --query-lines
done
