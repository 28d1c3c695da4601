#!/usr/bin/env bash
# Runs every fuzz target of the repository for $FUZZTIME each (default 30s).
# New crashers land in the package's testdata/fuzz/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
count=0
while IFS= read -r file; do
  pkg=./$(dirname "$file")
  for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | cut -d' ' -f2); do
    echo "fuzz: $pkg $target ($fuzztime)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/keymesh-fuzz.log 2>&1 || {
      cat /tmp/keymesh-fuzz.log
      echo "fuzz: $pkg $target failed"
      exit 1
    }
    count=$((count + 1))
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
echo "fuzz: $count targets ran for $fuzztime each"
