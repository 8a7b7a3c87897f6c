//! `make test`'s sample of the fuzz run: a fixed seed, every target, 100,000 cases in
//! total (about a second). `make fuzz` runs a million.

use stele_fuzz::alloc::Counting;
use stele_fuzz::{run, targets};

#[global_allocator]
static ALLOC: Counting = Counting;

const SAMPLE_CASES: u64 = 100_000;

#[test]
fn every_decoder_survives_a_sample_of_fuzz_cases_within_its_heap_bound() {
    let targets = targets::all();
    let per = SAMPLE_CASES.div_ceil(targets.len() as u64);
    let mut stats = Vec::new();
    for t in &targets {
        match run::target(t, 0x5eed, per) {
            Ok(s) => stats.push(s),
            Err(f) => panic!("{}{f}", run::table(&stats)),
        }
    }
    let total: u64 = stats.iter().map(|s| s.cases).sum();
    assert!(total >= SAMPLE_CASES, "{total} cases");
    for s in &stats {
        // Mutations that keep an input valid are rare but must happen: otherwise the
        // harness feeds only garbage and never reaches the decoder's depths.
        assert!(s.accepted > 0, "{}: no case accepted", s.target);
    }
    eprint!("{}", run::table(&stats));
}
