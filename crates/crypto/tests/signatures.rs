//! Domain separation, Signed/Verified, and agreement of the batch path with the single
//! path (ZIP-215) on edge-case vectors; zip215.rs has the full vector set.

#![allow(clippy::unwrap_used)]

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::traits::Identity;
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::{SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha512};
use stele_crypto::sim::{MacScheme, MacSigner};
use stele_crypto::{
    signing_message, ChainBinding, ChainId, Digest, Ed25519, KeyPair, PublicKey, Scheme, Signable,
    Signature, SignatureError, Signed, Signer,
};

#[derive(Clone, Debug, PartialEq)]
struct Vote(u64);
impl Signable for Vote {
    const DOMAIN: &'static str = "test/vote";
    fn signing_bytes(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Ballot(u64);
impl Signable for Ballot {
    const DOMAIN: &'static str = "test/ballot";
    fn signing_bytes(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
}

/// Chain `s` that started from the genesis whose digest is `Digest::of(s)`.
fn chain(s: &str) -> ChainBinding {
    ChainBinding::new(ChainId::new(s).unwrap(), Digest::of(s.as_bytes()))
}

#[test]
fn signature_verifies_only_for_its_kind_chain_and_value() {
    let k = KeyPair::from_seed([1; 32]);
    let c = chain("stele-a");
    let v = Signed::sign(Vote(7), &c, &k);
    assert!(v.clone().verify(&c, &k.public(), &Ed25519).is_ok());
    // another chain
    assert_eq!(
        v.clone()
            .verify(&chain("stele-b"), &k.public(), &Ed25519)
            .unwrap_err(),
        SignatureError::Invalid
    );
    // the same chain id with another genesis: a chain written again under the same name
    let again = ChainBinding::new(c.id().clone(), Digest::of(b"another genesis"));
    assert_eq!(
        v.clone().verify(&again, &k.public(), &Ed25519).unwrap_err(),
        SignatureError::Invalid
    );
    // another kind with the very same payload bytes
    let moved = Signed {
        value: Ballot(7),
        signature: v.signature,
    };
    assert!(moved.verify(&c, &k.public(), &Ed25519).is_err());
    // another value
    let other = Signed {
        value: Vote(8),
        signature: v.signature,
    };
    assert!(other.verify(&c, &k.public(), &Ed25519).is_err());
    // another key
    assert!(v
        .verify(&c, &KeyPair::from_seed([2; 32]).public(), &Ed25519)
        .is_err());
}

#[test]
fn chain_ids_are_checked() {
    assert!(ChainId::new("stele-testnet-1").is_ok());
    for bad in ["", "Upper", "has space", "slash/", &"x".repeat(65)] {
        assert!(ChainId::new(bad).is_err(), "{bad:?}");
    }
}

/// A chain id is held inline: its text, equality and order must still be the string's.
#[test]
fn chain_ids_compare_and_print_as_their_text() {
    let long = "z".repeat(64);
    let ids = ["a", "a.", "a-b", "ab", "b", "net-1", "0", long.as_str()];
    for x in ids {
        let cx = ChainId::new(x).unwrap();
        assert_eq!(cx.as_str(), x);
        assert_eq!(cx.to_string(), x);
        let json = serde_json::to_string(&cx).unwrap();
        assert_eq!(json, format!("\"{x}\""));
        assert_eq!(serde_json::from_str::<ChainId>(&json).unwrap(), cx);
        for y in ids {
            let cy = ChainId::new(y).unwrap();
            assert_eq!(cx == cy, x == y, "{x:?} == {y:?}");
            assert_eq!(cx.cmp(&cy), x.cmp(y), "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn verified_derefs_to_the_value_and_keeps_the_signature() {
    let k = KeyPair::from_seed([3; 32]);
    let c = chain("c");
    let s = Signed::sign(Vote(9), &c, &k);
    let v = s.clone().verify(&c, &k.public(), &Ed25519).unwrap();
    assert_eq!(v.0, 9);
    assert_eq!(v.signed(), &s);
}

#[test]
fn sim_scheme_detects_forgery() {
    let a = MacSigner::new([1; 32]);
    let b = MacSigner::new([2; 32]);
    let scheme = MacScheme::new([&a, &b]);
    let c = chain("sim");
    let s = Signed::sign(Vote(1), &c, &a);
    assert!(s.clone().verify(&c, &a.public_key(), &scheme).is_ok());
    assert!(s.clone().verify(&c, &b.public_key(), &scheme).is_err());
    let mut forged = s.clone();
    forged.signature.0[0] ^= 1;
    assert!(forged.verify(&c, &a.public_key(), &scheme).is_err());
    let stranger = MacSigner::new([9; 32]);
    let s = Signed::sign(Vote(1), &c, &stranger);
    assert_eq!(
        s.verify(&c, &stranger.public_key(), &scheme).unwrap_err(),
        SignatureError::BadPublicKey
    );
}

// ---- edge-case vectors -------------------------------------------------------------

struct Vector {
    name: &'static str,
    key: PublicKey,
    msg: Vec<u8>,
    sig: Signature,
}

fn k_scalar(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

fn sig_bytes(r: [u8; 32], s: [u8; 32]) -> Signature {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&r);
    out[32..].copy_from_slice(&s);
    Signature(out)
}

fn vectors() -> Vec<Vector> {
    let sk = SigningKey::from_bytes(&[42; 32]);
    let a = sk.verifying_key().to_bytes();
    let key = PublicKey(a);
    let msg = b"edge".to_vec();
    let kp = KeyPair::from_seed([42; 32]);
    let good = kp.sign_raw(&msg);
    let mut v = vec![Vector {
        name: "valid",
        key,
        msg: msg.clone(),
        sig: good,
    }];

    // Small-order public key (the identity) with R = identity and s = 0: the
    // cofactorless equation holds for every message, so plain `verify` accepts it.
    let identity = EdwardsPoint::identity().compress().to_bytes();
    v.push(Vector {
        name: "small-order key",
        key: PublicKey(identity),
        msg: msg.clone(),
        sig: sig_bytes(identity, [0; 32]),
    });

    // Small-order R with s = k·a: valid under the cofactored equation too.
    let k = k_scalar(&identity, &a, &msg);
    let s = k * sk.to_scalar();
    v.push(Vector {
        name: "small-order R",
        key,
        msg: msg.clone(),
        sig: sig_bytes(identity, s.to_bytes()),
    });

    // Non-canonical s: s + l encodes the same scalar mod l.
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&good.0[32..]);
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    let mut s_plus_l = [0u8; 32];
    for i in 0..32 {
        let t = s_bytes[i] as u16 + l[i] as u16 + carry;
        s_plus_l[i] = t as u8;
        carry = t >> 8;
    }
    let mut r = [0u8; 32];
    r.copy_from_slice(&good.0[..32]);
    v.push(Vector {
        name: "non-canonical s",
        key,
        msg: msg.clone(),
        sig: sig_bytes(r, s_plus_l),
    });

    // Non-canonical R encodings: y ≥ p, for the few small y that decompress.
    for y0 in 2u8..19 {
        let mut enc = [0xffu8; 32];
        enc[0] = 0xed + y0; // p = 2^255 - 19, so p + y0 has low byte 0xed + y0
        enc[31] = 0x7f;
        if CompressedEdwardsY(enc).decompress().is_some() {
            v.push(Vector {
                name: "non-canonical R",
                key,
                msg: msg.clone(),
                sig: sig_bytes(enc, good.0[32..].try_into().unwrap()),
            });
        }
    }

    // A key that is not a curve point.
    let mut not_point = [0u8; 32];
    for y in 2u8..=255 {
        not_point[0] = y;
        if CompressedEdwardsY(not_point).decompress().is_none() {
            break;
        }
    }
    v.push(Vector {
        name: "key off the curve",
        key: PublicKey(not_point),
        msg: msg.clone(),
        sig: good,
    });

    // Wrong message, flipped bits.
    v.push(Vector {
        name: "wrong message",
        key,
        msg: b"other".to_vec(),
        sig: good,
    });
    let mut flipped = good;
    flipped.0[40] ^= 4;
    v.push(Vector {
        name: "flipped s bit",
        key,
        msg: msg.clone(),
        sig: flipped,
    });

    // More valid ones so a batch has honest company.
    for i in 0..4u8 {
        let kp = KeyPair::from_seed([i + 100; 32]);
        let m = vec![i; 10 + i as usize];
        v.push(Vector {
            name: "valid",
            key: kp.public(),
            sig: kp.sign_raw(&m),
            msg: m,
        });
    }
    v
}

#[test]
fn edge_vectors_are_what_they_claim() {
    let v = vectors();
    let lax = |x: &Vector| {
        VerifyingKey::from_bytes(&x.key.0)
            .map(|k| {
                k.verify(&x.msg, &ed25519_dalek::Signature::from_bytes(&x.sig.0))
                    .is_ok()
            })
            .unwrap_or(false)
    };
    let find = |n: &str| v.iter().find(|x| x.name == n).unwrap();
    // The small-order vectors pass the cofactorless check, and ZIP-215 accepts them as
    // well: a small-order key is refused where it enters the ledger, not here.
    for name in ["small-order key", "small-order R"] {
        let x = find(name);
        assert!(lax(x), "{name}");
        assert_eq!(Ed25519.verify(&x.key, &x.msg, &x.sig), Ok(()), "{name}");
    }
    assert!(find("small-order key").key.is_small_order());
    assert!(!find("valid").key.is_small_order());
    assert!(v.iter().any(|x| x.name == "non-canonical R"));
}

#[test]
fn batch_and_single_paths_agree_on_edge_vectors() {
    let v = vectors();
    let single: Vec<_> = v
        .iter()
        .map(|x| Ed25519.verify(&x.key, &x.msg, &x.sig))
        .collect();
    // The five honest ones and the two small-order ones ZIP-215 accepts.
    assert_eq!(single.iter().filter(|r| r.is_ok()).count(), 7, "{single:?}");

    // The whole set as one batch, each vector alone among valid ones, and each pair.
    let items: Vec<_> = v
        .iter()
        .map(|x| (&x.key, x.msg.as_slice(), &x.sig))
        .collect();
    assert_eq!(Ed25519.verify_batch(&items), single);
    let valid: Vec<usize> = (0..v.len()).filter(|&i| single[i].is_ok()).collect();
    for i in 0..v.len() {
        let mut idx = valid.clone();
        idx.push(i);
        let sub: Vec<_> = idx.iter().map(|&j| items[j]).collect();
        let want: Vec<_> = idx.iter().map(|&j| single[j]).collect();
        assert_eq!(Ed25519.verify_batch(&sub), want, "vector {}", v[i].name);
        for j in 0..v.len() {
            let pair = [items[i], items[j]];
            assert_eq!(
                Ed25519.verify_batch(&pair),
                vec![single[i], single[j]],
                "{} + {}",
                v[i].name,
                v[j].name
            );
        }
    }
}

#[test]
fn batch_finds_the_bad_items_among_many() {
    let c = chain("batch");
    let keys: Vec<KeyPair> = (0..64u8).map(|i| KeyPair::from_seed([i; 32])).collect();
    let mut items: Vec<(Signed<Vote>, PublicKey)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (Signed::sign(Vote(i as u64), &c, k), k.public()))
        .collect();
    items[5].0.value = Vote(999);
    items[40].0.signature.0[3] ^= 1;
    let before = stele_crypto::verify_time();
    let out = Signed::verify_batch(items, &c, &Ed25519);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 5 && i != 40, "item {i}");
    }
    // The batch failed, so 64 single checks followed: far more than 100 µs of this
    // thread's CPU, counted for the node's verify-share metric.
    let spent = stele_crypto::verify_time() - before;
    assert!(spent >= std::time::Duration::from_micros(100), "{spent:?}");
}

#[test]
fn grouped_check_finds_a_bad_item_and_keeps_the_other_groups() {
    let c = chain("groups");
    let keys: Vec<KeyPair> = (0..48u8).map(|i| KeyPair::from_seed([i; 32])).collect();
    let signed = |range: std::ops::Range<usize>| -> Vec<(Signed<Vote>, PublicKey)> {
        range
            .map(|i| (Signed::sign(Vote(i as u64), &c, &keys[i]), keys[i].public()))
            .collect()
    };
    let good = Signed::verify_groups(
        vec![signed(0..16), signed(16..40), signed(40..48)],
        &c,
        &Ed25519,
    );
    assert_eq!(good.iter().map(Vec::len).collect::<Vec<_>>(), [16, 24, 8]);
    assert!(good.iter().flatten().all(Result::is_ok));

    let mut groups = vec![signed(0..16), signed(16..40), signed(40..48)];
    groups[1][7].0.signature.0[3] ^= 1;
    let out = Signed::verify_groups(groups, &c, &Ed25519);
    for (g, verdicts) in out.iter().enumerate() {
        for (i, r) in verdicts.iter().enumerate() {
            assert_eq!(r.is_ok(), !(g == 1 && i == 7), "group {g} item {i}");
        }
    }
    // A group may be empty.
    let out = Signed::verify_groups(vec![vec![], signed(0..3), vec![]], &c, &Ed25519);
    assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [0, 3, 0]);
}

#[test]
fn signing_message_separates_every_part() {
    let c = chain("c");
    assert_ne!(
        signing_message(&c, "a", b"bc"),
        signing_message(&c, "ab", b"c")
    );
    assert_ne!(
        signing_message(&chain("c1"), "a", b""),
        signing_message(&c, "1a", b"")
    );
    let again = ChainBinding::new(c.id().clone(), Digest::of(b"another genesis"));
    assert_ne!(
        signing_message(&c, "a", b"bc"),
        signing_message(&again, "a", b"bc")
    );
}

/// The layout is what anyone signing without this library must build, byte for byte.
#[test]
fn signing_message_layout_is_the_documented_one() {
    let genesis = Digest([7; 32]);
    let c = ChainBinding::new(ChainId::new("net-1").unwrap(), genesis);
    let mut want = b"stele/sig/v2".to_vec();
    want.push(5);
    want.extend_from_slice(b"net-1");
    want.extend_from_slice(&[7; 32]);
    want.push(8);
    want.extend_from_slice(b"stele/tx");
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(b"abc");
    assert_eq!(signing_message(&c, "stele/tx", b"abc"), want);
}
