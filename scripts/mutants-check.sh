#!/usr/bin/env bash
# After `cargo mutants`: every missed mutant must be listed in mutants-equivalent.txt with
# the reason it changes nothing a user can see; anything else is an unexplained survivor.
# Prints the counts, exits 1 when one is unexplained.
set -euo pipefail
cd "$(dirname "$0")/.."
out=mutants.out
[ -f "$out/outcomes.json" ] || { echo "error: no $out: run cargo mutants first" >&2; exit 1; }
explained=$(grep -v '^\s*#' mutants-equivalent.txt | sed -n 's/^\(.*\) *| .*/\1/p' | sed 's/ *$//')
unexplained=0
while IFS= read -r mutant; do
  [ -n "$mutant" ] || continue
  # Line and column move as code moves: compare without them.
  key=$(printf '%s' "$mutant" | sed -E 's/:[0-9]+:[0-9]+:/:/')
  if ! printf '%s\n' "$explained" | sed -E 's/:[0-9]+:[0-9]+:/:/' | grep -qxF "$key"; then
    echo "unexplained: $mutant"
    unexplained=$((unexplained + 1))
  fi
done <"$out/missed.txt"
for f in caught missed timeout unviable; do
  printf '%s: %s\n' "$f" "$(wc -l <"$out/$f.txt" 2>/dev/null || echo 0)"
done
echo "unexplained missed: $unexplained"
[ "$unexplained" -eq 0 ]
