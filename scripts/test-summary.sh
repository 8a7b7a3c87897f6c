#!/usr/bin/env bash
# Reads the test output of `cargo test` or of `cargo nextest run --status-level skip` on
# stdin and prints how many tests each suite ran, passed, failed and ignored (CI's log
# shows at a glance that no suite skipped its tests). Exits non-zero if it found no
# test at all, so a runner whose output format changed cannot pass unnoticed.
set -euo pipefail
awk '
    function row(suite, p, f, i) {
        if (!(suite in seen)) { seen[suite] = 1; order[++n] = suite }
        passed[suite] += p; failed[suite] += f; ignored[suite] += i
    }
    # cargo test: "Running unittests src/lib.rs (target/debug/deps/stele_node-0123abcd)",
    # "Running tests/faults.rs (target/debug/deps/faults-0123abcd)", then a result line.
    /^ *Running / {
        bin = $NF; gsub(/[()]/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin)
        suite = ($2 == "unittests") ? bin " " $3 : bin " " $2
        next
    }
    /^ *Doc-tests / { suite = "doc-tests " $2; next }
    /^test result:/ {
        p = $4; f = $6; i = $8
        gsub(/;/, "", p); gsub(/;/, "", f); gsub(/;/, "", i)
        row(suite, p, f, i)
        next
    }
    # nextest: one status line per test, "PASS [   0.004s] (12/481) stele-types::codec
    # name" (a skipped one "SKIP [         ] (───────) ..."). A failed test is named
    # again at the end of the run, so each (binary, test) counts once, with its last
    # status.
    /^ *[A-Z][A-Z0-9-]* +\[[^]]*\] / {
        status = $1
        if (status == "SLOW" || status == "START" || status == "RETRY") next
        # LEAK: passed, but left a handle open past the leak timeout (LEAK-FAIL fails).
        if (status == "LEAK") status = "PASS"
        line = $0; sub(/^[^]]*\] */, "", line); sub(/^\([^)]*\) */, "", line)
        split(line, w, " ")
        key = w[1] " " w[2]
        if (!(key in last)) keys[++k] = key
        last[key] = status
        binary[key] = w[1]
        next
    }
    END {
        for (j = 1; j <= k; j++) {
            s = last[keys[j]]
            row(binary[keys[j]], s == "PASS", s != "PASS" && s != "SKIP", s == "SKIP")
        }
        printf "%-58s %6s %6s %6s %7s\n", "suite", "ran", "passed", "failed", "ignored"
        for (j = 1; j <= n; j++) {
            s = order[j]
            printf "%-58s %6d %6d %6d %7d\n", s, passed[s] + failed[s], passed[s], failed[s], ignored[s]
            tp += passed[s]; tf += failed[s]; ti += ignored[s]
        }
        printf "%-58s %6d %6d %6d %7d\n", "total", tp + tf, tp, tf, ti
        if (tp + tf + ti == 0) { print "test-summary: no test result found in the output" > "/dev/stderr"; exit 1 }
    }
'
