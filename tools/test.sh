#!/usr/bin/env bash
# Installs what the tests need, runs every test project and ends with one line:
#   Tests: N passed, N failed, N skipped
# GPU tests are reported as skipped on machines without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || exit 1
dotnet build KvFetcher.slnx -c Release --no-restore --verbosity quiet -nologo || exit 1

log=$(mktemp)
dotnet test KvFetcher.slnx -c Release --no-build -nologo 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# Each test project prints: "Passed!  - Failed: 0, Passed: 42, Skipped: 1, Total: 43, Duration: ..."
sum() { grep -oE "$1: +[0-9]+" "$log" | awk '{s += $2} END {print s + 0}'; }
passed=$(sum Passed)
failed=$(sum Failed)
skipped=$(sum Skipped)
projects=$(grep -cE "(Passed|Failed)! +- " "$log")
expected=$(find tests -name '*.Tests.csproj' | wc -l)
rm -f "$log"
if [ "$projects" -ne "$expected" ]; then
  echo "test.sh: $projects of $expected test projects reported results" >&2
  status=1
fi
echo "Tests: $passed passed, $failed failed, $skipped skipped"
exit $status
