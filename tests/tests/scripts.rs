//! The test runner's own script (`scripts/unit-tests.sh`, what `make test` runs), driven
//! by a stand-in for cargo so that it runs in a second, not the whole suite.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Answers like `cargo nextest` would: one PASS line per name in `$FAKE_TESTS`, a second
/// apart, so that two runs started together overlap the whole time.
const FAKE_CARGO: &str = r#"#!/usr/bin/env bash
if [ "$1" = nextest ] && [ "$2" = --version ]; then echo "cargo-nextest 0.9.0"; exit 0; fi
if [ "$1" = nextest ]; then
    n=0
    for t in $FAKE_TESTS; do
        echo "        PASS [   0.010s] fake::suite $t"; n=$((n + 1)); sleep 1
    done
    echo "     Summary [   1.000s] $n tests run: $n passed, 0 skipped"
    exit 0
fi
if [ "$1" = test ]; then
    echo "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
    exit 0
fi
exit 2
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The passed-test count on the summary's `total` row.
fn total(out: &Output) -> u32 {
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no total row in:\n{text}"));
    row.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {row:?}"))
}

/// Waits (up to a minute) until a file in `dir` holds `line`.
fn started(dir: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let logged = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|text| text.contains(line)));
        if logged {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no file in {} logged {line:?} within a minute",
        dir.display()
    );
}

/// Two `make unit` runs on one target directory at once (two clones, or CI beside a
/// developer) each summarise their own tests. They used to share one log file, and each
/// printed a count of the mixture (the run of six counted 4 here).
#[test]
fn two_runs_on_one_target_directory_each_count_their_own_tests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cargo = dir.path().join("cargo");
    std::fs::write(&cargo, FAKE_CARGO).expect("fake cargo");
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = dir.path().join("target");
    let run = |tests: &str| {
        Command::new("bash")
            .arg("scripts/unit-tests.sh")
            .current_dir(repo())
            .env("CARGO", &cargo)
            .env("CARGO_TARGET_DIR", &target)
            .env("FAKE_TESTS", tests)
            .env_remove("STELE_TEST_RUNNER")
            .env_remove("CARGO_FLAGS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("bash")
    };
    let six = run("a b c d e f");
    // The second run starts once the first has logged its first test, five of its six
    // seconds still to go: the two overlap for the whole of the second.
    started(&target, "fake::suite a");
    let two = run("x y");
    let two = two.wait_with_output().expect("second run");
    let six = six.wait_with_output().expect("first run");
    assert!(six.status.success() && two.status.success());
    assert_eq!(total(&six), 6, "the run of six counted another run's lines");
    assert_eq!(total(&two), 2, "the run of two counted another run's lines");
    // The run that ends last leaves its own log as test-output.log (the run of six, unless
    // the machine stalled the other for seconds), and no other file behind.
    let left: Vec<_> = std::fs::read_dir(&target)
        .expect("target dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("test-output.log")]);
    let log = std::fs::read_to_string(target.join("test-output.log")).expect("log");
    let lines = log.matches("fake::suite").count();
    let mixed = log.contains("suite a") && log.contains("suite x");
    assert!((lines == 6 || lines == 2) && !mixed, "{log}");
}
