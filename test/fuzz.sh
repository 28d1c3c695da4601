#!/usr/bin/env bash
# Runs every fuzz target of the repository for $FUZZTIME each (default 30s;
# a count such as 5000x runs that many inputs). New crashers land in the
# package's testdata/fuzz/ and fail the run.
#
# Go 1.26's fuzz coordinator can end a time-bounded run with a bare
# "context deadline exceeded" and no crasher (golang/go#75804, fixed in Go
# 1.27): such a run is reported as a flake, not a failure. A failure that
# wrote a reproducer always fails.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
count=0
flakes=0
files() { if [ -d "$1" ]; then find "$1" -type f | wc -l; else echo 0; fi; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while IFS= read -r file; do
  pkg=./$(dirname "$file")
  for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | cut -d' ' -f2); do
    corpus="$pkg/testdata/fuzz/$target"
    before=$(files "$corpus")
    echo "fuzz: $pkg $target ($fuzztime)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
      after=$(files "$corpus")
      if [ "$after" -eq "$before" ] && grep -q 'context deadline exceeded' "$log"; then
        echo "fuzz: $pkg $target: the fuzz coordinator's deadline race (golang/go#75804), no crasher; counted as a flake"
        flakes=$((flakes + 1))
      else
        cat "$log"
        echo "fuzz: $pkg $target failed; the reproducer is in $corpus"
        exit 1
      fi
    fi
    count=$((count + 1))
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
echo "fuzz: $count targets ran for $fuzztime each ($flakes coordinator flakes)"
