#!/usr/bin/env bash
# After `cargo mutants`: every missed mutant must be listed in mutants-equivalent.txt with
# the reason it changes nothing a user can see; anything else is an unexplained survivor.
# Prints the counts, exits 1 when one is unexplained.
set -euo pipefail
cd "$(dirname "$0")/.."
out=mutants.out
[ -f "$out/outcomes.json" ] || { echo "error: no $out: run cargo mutants first" >&2; exit 1; }
# Line and column move as code moves: mutants are compared without them. A line of the file
# is the mutant, " | ", and the reason (which may hold " | " itself, as a mutant's name may:
# so the mutant is matched as the line's start, not split off).
strip_position() { sed -E 's/:[0-9]+:[0-9]+:/:/'; }
explained=$(grep -v '^\s*#' mutants-equivalent.txt | strip_position)
is_explained() {
  local line
  while IFS= read -r line; do
    [[ $line == "$1 | "* ]] && return 0
  done <<<"$explained"
  return 1
}
unexplained=0
while IFS= read -r mutant; do
  [ -n "$mutant" ] || continue
  if ! is_explained "$(printf '%s' "$mutant" | strip_position)"; then
    echo "unexplained: $mutant"
    unexplained=$((unexplained + 1))
  fi
done <"$out/missed.txt"
for f in caught missed timeout unviable; do
  printf '%s: %s\n' "$f" "$(wc -l <"$out/$f.txt" 2>/dev/null || echo 0)"
done
echo "unexplained missed: $unexplained"
[ "$unexplained" -eq 0 ]
