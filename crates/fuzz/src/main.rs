//! `stele-fuzz`: the long fuzz run (`make fuzz`), or one case replayed.
//!
//! `FUZZ_CASES` (default 1,000,000) cases in total, shared evenly by the targets, from
//! `FUZZ_SEED` (default 1). `--seed S --target NAME --case N` replays one case, printing
//! its input, without catching a panic.

use std::process::ExitCode;
use std::time::Instant;

use stele_fuzz::alloc::Counting;
use stele_fuzz::{run, targets};

#[global_allocator]
static ALLOC: Counting = Counting;

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{name}={v:?}: {e}")),
        Err(_) => Ok(default),
    }
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stele-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn main_inner() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let targets = targets::all();
    if let Some(name) = flag("--target") {
        let seed = flag("--seed").unwrap_or_else(|| "1".into());
        let seed: u64 = seed.parse().map_err(|e| format!("--seed {seed}: {e}"))?;
        let case = flag("--case").ok_or("--target needs --case")?;
        let case: u64 = case.parse().map_err(|e| format!("--case {case}: {e}"))?;
        let t = targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("no target {name}"))?;
        let (origin, input) = run::input(t, seed, case);
        println!(
            "{origin:?} input ({} bytes): {}",
            input.len(),
            hex::encode(&input)
        );
        let d = run::case(t, seed, case).map_err(|f| f.to_string())?;
        println!("{d:?}");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.is_empty() {
        return Err(format!("unknown arguments {args:?}; see the module doc"));
    }
    let total = env_u64("FUZZ_CASES", 1_000_000)?;
    let seed = env_u64("FUZZ_SEED", 1)?;
    let per = total.div_ceil(targets.len() as u64);
    println!(
        "{} targets, {per} cases each, seed {seed} (FUZZ_CASES, FUZZ_SEED)",
        targets.len()
    );
    let start = Instant::now();
    let mut stats = Vec::new();
    let mut failures = Vec::new();
    for t in &targets {
        // A target stops at its first failure; the others still run.
        match run::target(t, seed, per) {
            Ok(s) => stats.push(s),
            Err(f) => failures.push(f),
        }
    }
    print!("{}", run::table(&stats));
    let cases = stats.iter().map(|s| s.cases).sum::<u64>();
    let secs = start.elapsed().as_secs_f64();
    if failures.is_empty() {
        println!("{cases} cases in {secs:.1} s: no panic, every peak within its bound");
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("FAILED {f}\n");
    }
    eprintln!("{} of {} targets failed", failures.len(), targets.len());
    Ok(ExitCode::FAILURE)
}
