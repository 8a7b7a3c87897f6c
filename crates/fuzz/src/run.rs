//! Runs cases against the targets: each case's input comes from an RNG seeded by (run
//! seed, target name, case number), so any one case replays alone. A case fails if the
//! decoder panics, if a valid seed is refused, or if the decode's heap peak passes the
//! target's bound.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::alloc;
use crate::mutate;
use crate::targets::Target;

/// A case that failed, with what replays it.
#[derive(Debug)]
pub struct Failure {
    pub target: String,
    pub seed: u64,
    pub case: u64,
    pub input: Vec<u8>,
    pub problem: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: case {} of seed {}: {}",
            self.target, self.case, self.seed, self.problem
        )?;
        writeln!(
            f,
            "input ({} bytes): {}",
            self.input.len(),
            hex::encode(&self.input)
        )?;
        write!(
            f,
            "replay: cargo run -p stele-fuzz -- --seed {} --target {} --case {}",
            self.seed, self.target, self.case
        )
    }
}

/// What one target's cases did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub target: String,
    pub cases: u64,
    pub accepted: u64,
    pub max_input: usize,
    pub max_peak: usize,
    /// The case with the largest peak.
    pub max_peak_case: u64,
    /// The largest share of its bound a case's peak reached, in percent.
    pub max_bound_pct: f64,
    pub elapsed: Duration,
}

/// How a case's input was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A valid seed, unchanged: it must be accepted.
    Seed(usize),
    Arbitrary,
    Structured,
    Mutated,
}

fn case_rng(seed: u64, target: &str, case: u64) -> ChaCha8Rng {
    // FNV-1a of the name: the stream does not depend on the order of the targets.
    let name = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&name.to_le_bytes());
    s[16..24].copy_from_slice(&case.to_le_bytes());
    ChaCha8Rng::from_seed(s)
}

/// The input of case `case` of `target` in run `seed`.
pub fn input(t: &Target, seed: u64, case: u64) -> (Origin, Vec<u8>) {
    if let Some(s) = usize::try_from(case).ok().and_then(|i| t.seeds.get(i)) {
        return (Origin::Seed(case as usize), s.clone());
    }
    let mut rng = case_rng(seed, &t.name, case);
    match rng.gen_range(0..10) {
        0 | 1 => {
            let mut b = mutate::arbitrary(&mut rng, t.text);
            if rng.gen() {
                b.splice(0..0, t.prefix.iter().copied());
            }
            (Origin::Arbitrary, b)
        }
        2 if t.structured.is_some() => {
            let b = t.structured.map(|g| g(&mut rng)).unwrap_or_default();
            (Origin::Structured, b)
        }
        _ => {
            let base = &t.seeds[rng.gen_range(0..t.seeds.len())];
            let b = mutate::mutate(&mut rng, base, &t.seeds, t.text);
            (Origin::Mutated, b)
        }
    }
}

/// What one case did.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub accepted: bool,
    pub len: usize,
    /// Heap bytes the decode held at its peak.
    pub peak: usize,
    pub bound: usize,
}

/// Runs one case.
pub fn case(t: &Target, seed: u64, case: u64) -> Result<Done, Failure> {
    let (origin, input) = input(t, seed, case);
    let fail = |problem: String, input: Vec<u8>| Failure {
        target: t.name.clone(),
        seed,
        case,
        input,
        problem,
    };
    let (outcome, peak) =
        alloc::measure(|| panic::catch_unwind(AssertUnwindSafe(|| (t.decode)(&input))));
    let accepted = match outcome {
        Ok(a) => a,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Err(fail(format!("panicked: {msg}"), input));
        }
    };
    if let Origin::Seed(i) = origin {
        if !accepted {
            return Err(fail(format!("valid seed {i} refused"), input));
        }
    }
    let bound = t.bound.for_len(input.len());
    if peak > bound {
        return Err(fail(
            format!(
                "decoding {} bytes peaked at {peak} heap bytes, the bound is {bound} ({} per byte + {})",
                input.len(),
                t.bound.per_byte,
                t.bound.fixed
            ),
            input,
        ));
    }
    Ok(Done {
        accepted,
        len: input.len(),
        peak,
        bound,
    })
}

/// Runs cases `0..cases` of `t`, stopping at the first failure.
pub fn target(t: &Target, seed: u64, cases: u64) -> Result<Stats, Failure> {
    assert!(
        alloc::installed(),
        "the counting allocator must be the global allocator"
    );
    let start = Instant::now();
    let mut s = Stats {
        target: t.name.clone(),
        ..Stats::default()
    };
    for c in 0..cases {
        let d = case(t, seed, c)?;
        s.cases += 1;
        s.accepted += u64::from(d.accepted);
        if d.peak > s.max_peak {
            s.max_peak = d.peak;
            s.max_peak_case = c;
        }
        s.max_input = s.max_input.max(d.len);
        s.max_bound_pct = s.max_bound_pct.max(100.0 * d.peak as f64 / d.bound as f64);
    }
    s.elapsed = start.elapsed();
    Ok(s)
}

/// A table of the stats, one line per target and a total.
pub fn table(stats: &[Stats]) -> String {
    let mut out = format!(
        "{:<30} {:>9} {:>9} {:>10} {:>12} {:>9} {:>8} {:>9}\n",
        "target", "cases", "accepted", "max input", "max peak", "(case)", "% bound", "seconds"
    );
    for s in stats {
        out += &format!(
            "{:<30} {:>9} {:>9} {:>10} {:>12} {:>9} {:>8.1} {:>9.2}\n",
            s.target,
            s.cases,
            s.accepted,
            s.max_input,
            s.max_peak,
            s.max_peak_case,
            s.max_bound_pct,
            s.elapsed.as_secs_f64()
        );
    }
    let cases: u64 = stats.iter().map(|s| s.cases).sum();
    let secs: f64 = stats.iter().map(|s| s.elapsed.as_secs_f64()).sum();
    out += &format!("{:<30} {:>9} {:>60.2}\n", "total", cases, secs);
    out
}
