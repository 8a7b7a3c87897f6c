#!/usr/bin/env bash
# Runs every test of the workspace and then prints how many each suite ran (make unit,
# and so make test and CI). With cargo-nextest installed the test binaries run side by
# side under .config/nextest.toml's groups; without it, `cargo test` runs them one after
# another. Same tests, same assertions: nextest only fills the second core. Set
# STELE_TEST_RUNNER=cargo to use `cargo test` anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
read -r -a flags <<< "${CARGO_FLAGS:-}"
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
log=$target/test-output.log

# Every runner goes to the end and the summary is printed even when a test failed; the
# script then fails with the first failing runner's status.
rc=0
if [ "${STELE_TEST_RUNNER:-}" != cargo ] && $CARGO nextest --version >/dev/null 2>&1; then
    echo "unit-tests: cargo nextest run (STELE_TEST_RUNNER=cargo for cargo test)" >&2
    # --status-level skip: a line per passed and skipped test, which the summary counts.
    $CARGO nextest run --workspace "${flags[@]}" --status-level skip 2>&1 | tee "$log" || rc=$?
    # Nextest does not run doc-tests.
    $CARGO test --workspace --doc "${flags[@]}" 2>&1 | tee -a "$log" || { r=$?; [ $rc -ne 0 ] || rc=$r; }
else
    $CARGO test --workspace --no-fail-fast "${flags[@]}" 2>&1 | tee "$log" || rc=$?
fi
bash scripts/test-summary.sh < "$log" || { r=$?; [ $rc -ne 0 ] || rc=$r; }
exit $rc
