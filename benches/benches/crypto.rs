//! Signing, verification (single and batched), and SHA-256 throughput.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stele_crypto::{Digest, Ed25519, KeyPair, PublicKey, Signed};
use stele_types::TxBody;

fn bench(c: &mut Criterion) {
    let txs = stele_benches::transfers(256, 256);
    let chain = stele_benches::chain();
    let key = KeyPair::from_seed([1; 32]);
    let body = txs[0].value.clone();

    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign tx", |b| {
        b.iter(|| Signed::sign(body.clone(), &chain, &key))
    });
    let signed = Signed::sign(body.clone(), &chain, &key);
    g.bench_function("verify tx", |b| {
        b.iter_batched(
            || signed.clone(),
            |s| s.verify(&chain, &key.public(), &Ed25519),
            BatchSize::SmallInput,
        )
    });
    for n in [64usize, 256] {
        let items: Vec<(Signed<TxBody>, PublicKey)> =
            txs[..n].iter().map(|t| (t.clone(), t.sender)).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("batch verify {n}"), |b| {
            b.iter_batched(
                || items.clone(),
                |i| Signed::verify_batch(i, &chain, &Ed25519),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mib = vec![0xa5u8; 1 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(mib.len() as u64));
    g.bench_function("1 MiB", |b| b.iter(|| Digest::of(&mib)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
