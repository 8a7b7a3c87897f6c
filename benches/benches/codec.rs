//! Encoding, decoding and hashing a 1,000-tx block.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stele_types::{codec, tx_hash, Block};

fn bench(c: &mut Criterion) {
    let block = stele_benches::block(1000);
    let bytes = codec::encode(&block);
    let mut g = c.benchmark_group("block of 1000 txs");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| b.iter(|| codec::encode(&block)));
    g.bench_function("decode", |b| {
        b.iter(|| codec::decode::<Block>(&bytes, bytes.len()).expect("decodes"))
    });
    g.bench_function("match (tx hashes, Merkle root, header)", |b| {
        b.iter(|| block.matches(block.height(), &block.digest()))
    });
    g.finish();
    // What every path that names a tx pays, once or several times per tx.
    let tx = &block.txs[0];
    let mut g = c.benchmark_group("one tx");
    g.bench_function("tx hash", |b| b.iter(|| tx_hash(tx)));
    g.bench_function("encoded length", |b| b.iter(|| codec::encoded_len(tx)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
