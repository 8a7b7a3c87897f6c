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
# Each run writes its own file and leaves it as test-output.log when it ends: two runs on
# one target directory at once (two clones, or CI beside a developer) used to write the
# same file, and each printed a summary of the mixture.
log=$(mktemp "$target/test-output.XXXXXX")
trap 'mv -f "$log" "$target/test-output.log"' EXIT

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
