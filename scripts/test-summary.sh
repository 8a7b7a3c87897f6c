#!/usr/bin/env bash
# Reads `cargo test` output on stdin and prints how many tests each suite ran, passed,
# failed and ignored (CI's log shows at a glance that no suite skipped its tests).
set -euo pipefail
awk '
    /^ *Running / {
        # "Running unittests src/lib.rs (target/debug/deps/stele_node-0123abcd)"
        # "Running tests/faults.rs (target/debug/deps/faults-0123abcd)"
        bin = $NF; gsub(/[()]/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin)
        suite = ($2 == "unittests") ? bin " " $3 : bin " " $2
        next
    }
    /^ *Doc-tests / { suite = "doc-tests " $2; next }
    /^test result:/ {
        passed = $4; failed = $6; ignored = $8
        gsub(/;/, "", passed); gsub(/;/, "", failed); gsub(/;/, "", ignored)
        rows[++n] = sprintf("%-58s %6d %6d %6d %7d", suite, passed + failed, passed, failed, ignored)
        tp += passed; tf += failed; ti += ignored
    }
    END {
        printf "%-58s %6s %6s %6s %7s\n", "suite", "ran", "passed", "failed", "ignored"
        for (i = 1; i <= n; i++) print rows[i]
        printf "%-58s %6d %6d %6d %7d\n", "total", tp + tf, tp, tf, ti
    }
'
