#!/usr/bin/env bash
# make audit: known vulnerabilities in what Kiln builds and ships.
#   - govulncheck over the server module and the Go SDK: only vulnerabilities in code that Kiln
#     actually calls are findings (the Go standard library included: those are fixed by building
#     with Go's latest patch release).
#   - npm audit over both lockfiles (the TypeScript SDK and the spec tools).
# Exits non-zero when anything is found.
#
# Offline: VULNDB=DIR checks Go code against a local vulnerability database (the v1 format that
# govulncheck reads). `scripts/audit.sh --build-db DIR` builds one from the golang.org/x/vulndb
# module, so a machine that reaches only a Go module proxy can make it. npm has no offline
# advisory database: without the registry's audit endpoint the npm part is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}" # the approved toolchain, as in the Makefile
# The vulnerability reports as published in golang.org/x/vulndb; move it forward to get newer ones.
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018

if [[ ${1:-} == --build-db ]]; then
  out=${2:?usage: scripts/audit.sh --build-db DIR}
  src=$($GO mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  rm -rf "$out"
  $GO run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$src/data/osv" -out "$out"
  echo "vulnerability database written to $out; run: make audit VULNDB=$out"
  exit 0
fi

db=()
if [[ -n ${VULNDB:-} ]]; then
  [[ -f $VULNDB/index/db.json ]] || { echo "VULNDB=$VULNDB is not a vulnerability database (no index/db.json)" >&2; exit 2; }
  db=(-db "file://$(cd "$VULNDB" && pwd)")
fi

failed=0
govulncheck() { $GO tool -modfile="$PWD/tools/go.mod" govulncheck "${db[@]}" -C "$1" ./...; }
for mod in . sdk/go; do
  echo "== govulncheck $mod"
  govulncheck "$mod" || failed=1
done

for lock in sdk/typescript tools; do
  echo "== npm audit $lock"
  log=$(mktemp)
  if npm audit --prefix "$lock" --package-lock-only --audit-level=low >"$log" 2>&1; then
    cat "$log"
  elif grep -q 'audit endpoint returned an error' "$log"; then
    echo "skipped: the registry's audit endpoint is not reachable (npm has no offline database)"
  else
    cat "$log"; failed=1
  fi
  rm -f "$log"
done

exit "$failed"
