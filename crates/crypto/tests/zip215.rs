//! One signature rule, ZIP-215, on every path: the single check and the batch check give
//! the same verdict for every signature, including the ones built to split them
//! (torsion in R, small-order and mixed-order keys, non-canonical encodings).
//!
//! The 196 small-order vectors are ZIP-215's own: every pair of the 14 encodings of
//! small-order points (canonical or not) as A and R, with s = 0. ZIP-215 accepts all of
//! them; a rule that refuses some on one path and not on another splits the validators.

#![allow(clippy::unwrap_used)]

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use sha2::{Digest as _, Sha512};
use stele_crypto::{Ed25519, KeyPair, PublicKey, Scheme, Signature, SignatureError, Signer};

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

/// Every 32-byte string that decodes (ZIP-215: y may be ≥ p) to a point of small order.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for t in EIGHT_TORSION.iter() {
        let c = t.compress().to_bytes();
        for sign in [0u8, 0x80] {
            let mut e = c;
            e[31] = (e[31] & 0x7f) | sign;
            if CompressedEdwardsY(e)
                .decompress()
                .is_some_and(|p| p.is_small_order())
                && !out.contains(&e)
            {
                out.push(e);
            }
        }
    }
    // Non-canonical y: y + p fits in 255 bits only for y < 19.
    for y in 0u8..19 {
        for sign in [0u8, 0x80] {
            let mut e = [0xffu8; 32];
            e[0] = 0xed + y;
            e[31] = 0x7f | sign;
            if CompressedEdwardsY(e)
                .decompress()
                .is_some_and(|p| p.is_small_order())
                && !out.contains(&e)
            {
                out.push(e);
            }
        }
    }
    out
}

struct Item {
    key: PublicKey,
    msg: Vec<u8>,
    sig: Signature,
}

fn single(items: &[Item]) -> Vec<Result<(), SignatureError>> {
    items
        .iter()
        .map(|x| Ed25519.verify(&x.key, &x.msg, &x.sig))
        .collect()
}

fn batch(items: &[Item]) -> Vec<Result<(), SignatureError>> {
    let refs: Vec<_> = items
        .iter()
        .map(|x| (&x.key, x.msg.as_slice(), &x.sig))
        .collect();
    Ed25519.verify_batch(&refs)
}

fn valid(seed: u8, msg: &[u8]) -> Item {
    let k = KeyPair::from_seed([seed; 32]);
    Item {
        key: k.public(),
        msg: msg.to_vec(),
        sig: k.sign_raw(msg),
    }
}

/// A signature by an ordinary key whose R carries a torsion component: R' = rB + T,
/// s = r + H(R'‖A‖M)·a. The cofactored equation accepts it; the cofactorless one does not.
fn torsion_in_r(seed: u8, msg: &[u8], r: Scalar, torsion: usize) -> Item {
    let sk = SigningKey::from_bytes(&[seed; 32]);
    let a = sk.to_scalar();
    let a_enc = sk.verifying_key().to_bytes();
    let big_r = r * ED25519_BASEPOINT_POINT + EIGHT_TORSION[torsion];
    let r_enc = big_r.compress().to_bytes();
    let s = r + k_scalar(&r_enc, &a_enc, msg) * a;
    Item {
        key: PublicKey(a_enc),
        msg: msg.to_vec(),
        sig: sig_bytes(r_enc, s.to_bytes()),
    }
}

/// A mixed-order key A' = aB + T signing with a: accepted by the cofactored equation.
fn mixed_order_key(seed: u8, msg: &[u8], torsion: usize) -> Item {
    let sk = SigningKey::from_bytes(&[seed; 32]);
    let a = sk.to_scalar();
    let big_a: EdwardsPoint = a * ED25519_BASEPOINT_POINT + EIGHT_TORSION[torsion];
    let a_enc = big_a.compress().to_bytes();
    let r = Scalar::from_bytes_mod_order_wide(&[seed.wrapping_add(7); 64]);
    let r_enc = (r * ED25519_BASEPOINT_POINT).compress().to_bytes();
    let s = r + k_scalar(&r_enc, &a_enc, msg) * a;
    Item {
        key: PublicKey(a_enc),
        msg: msg.to_vec(),
        sig: sig_bytes(r_enc, s.to_bytes()),
    }
}

#[test]
fn there_are_fourteen_small_order_encodings() {
    // The 8 points' canonical encodings, x = 0 with the sign bit set (identity, order 2),
    // and y + p for y = 0 and 1 (both signs): ZIP-215's vectors use these 14.
    assert_eq!(small_order_encodings().len(), 14);
}

#[test]
fn zip215_small_order_vectors_are_accepted_on_single_and_batch_paths() {
    let enc = small_order_encodings();
    let msg = b"Zcash".to_vec();
    let mut items = Vec::new();
    for a in &enc {
        for r in &enc {
            items.push(Item {
                key: PublicKey(*a),
                msg: msg.clone(),
                sig: sig_bytes(*r, [0; 32]),
            });
        }
    }
    assert_eq!(items.len(), 196);
    assert!(single(&items).iter().all(|v| v.is_ok()), "single path");
    assert!(batch(&items).iter().all(|v| v.is_ok()), "whole batch");
    // Each among honest company.
    for (i, x) in items.iter().enumerate() {
        let pair = [
            Item {
                key: x.key,
                msg: x.msg.clone(),
                sig: x.sig,
            },
            valid(1, b"honest"),
        ];
        assert_eq!(batch(&pair), vec![Ok(()), Ok(())], "vector {i}");
    }
}

#[test]
fn torsion_in_r_gets_the_same_verdict_alone_and_in_any_batch() {
    // The split found in review: the single path refused it while a batch with one valid
    // item accepted it whenever the batch weight cancelled T (half the time for the
    // order-2 point). Try many messages and every torsion point.
    for m in 0..32u8 {
        for t in 1..8 {
            let msg = vec![m; 1 + m as usize];
            let r = Scalar::from_bytes_mod_order_wide(&[m ^ 0x5a; 64]);
            let items = vec![torsion_in_r(3, &msg, r, t), valid(4, b"a"), valid(5, b"b")];
            assert_eq!(batch(&items[..2]), single(&items[..2]), "msg {m}, T{t}");
            assert_eq!(batch(&items), single(&items), "msg {m}, T{t}");
        }
    }
}

#[test]
fn torsion_in_r_is_accepted_as_zip215_says() {
    for t in 1..8 {
        let x = torsion_in_r(3, b"zip215", Scalar::from_bytes_mod_order_wide(&[9; 64]), t);
        assert_eq!(Ed25519.verify(&x.key, &x.msg, &x.sig), Ok(()), "T{t}");
    }
}

#[test]
fn mixed_order_key_is_accepted_on_both_paths() {
    for t in 1..8 {
        let x = mixed_order_key(9, b"mixed", t);
        assert_eq!(single(std::slice::from_ref(&x)), vec![Ok(())], "T{t}");
        let items = vec![x, valid(2, b"c")];
        assert_eq!(batch(&items), vec![Ok(()), Ok(())], "T{t}");
    }
}

#[test]
fn non_canonical_s_is_refused_on_both_paths() {
    let good = valid(6, b"s");
    // s + l encodes the same scalar mod l; ZIP-215 requires s < l.
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut s = [0u8; 32];
    let mut carry = 0u16;
    for (i, b) in s.iter_mut().enumerate() {
        let t = good.sig.0[32 + i] as u16 + l[i] as u16 + carry;
        *b = t as u8;
        carry = t >> 8;
    }
    let mut r = [0u8; 32];
    r.copy_from_slice(&good.sig.0[..32]);
    let bad = Item {
        key: good.key,
        msg: good.msg.clone(),
        sig: sig_bytes(r, s),
    };
    let items = vec![bad, valid(7, b"t")];
    assert!(single(&items)[0].is_err());
    assert_eq!(batch(&items), single(&items));
}

#[test]
fn key_off_the_curve_is_a_bad_key_on_both_paths() {
    let mut not_point = [0u8; 32];
    for y in 2u8..=255 {
        not_point[0] = y;
        if CompressedEdwardsY(not_point).decompress().is_none() {
            break;
        }
    }
    let good = valid(8, b"k");
    let items = vec![
        Item {
            key: PublicKey(not_point),
            msg: good.msg.clone(),
            sig: good.sig,
        },
        good,
    ];
    assert_eq!(single(&items)[0], Err(SignatureError::BadPublicKey));
    assert_eq!(batch(&items), single(&items));
}

/// One item of a random mix: what kind it is decides how it is built.
fn arb_item() -> impl Strategy<Value = (u8, u8, u8, u8)> {
    (0u8..6, any::<u8>(), any::<u8>(), 1u8..8)
}

fn build((kind, seed, m, t): (u8, u8, u8, u8)) -> Item {
    let msg = vec![m, seed, kind];
    match kind {
        0 => valid(seed, &msg),
        1 => {
            let mut x = valid(seed, &msg);
            x.sig.0[(m as usize) % 64] ^= 1 << (t % 8);
            x
        }
        2 => {
            let mut x = valid(seed, &msg);
            x.msg.push(1);
            x
        }
        3 => torsion_in_r(
            seed,
            &msg,
            Scalar::from_bytes_mod_order_wide(&[m; 64]),
            t as usize,
        ),
        4 => mixed_order_key(seed, &msg, t as usize),
        _ => {
            let enc = small_order_encodings();
            Item {
                key: PublicKey(enc[seed as usize % enc.len()]),
                msg,
                sig: sig_bytes(enc[m as usize % enc.len()], [0; 32]),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
        fn batch_verdicts_equal_single_verdicts(mix in proptest::collection::vec(arb_item(), 1..12)) {
        let items: Vec<Item> = mix.into_iter().map(build).collect();
        prop_assert_eq!(batch(&items), single(&items));
    }

    /// Groups checked together (the node's verification pool joins jobs into one
    /// batch) get each item's own verdict too, whatever the other groups hold.
    #[test]
    fn grouped_verdicts_equal_single_verdicts(
        mix in proptest::collection::vec(arb_item(), 1..16),
        cuts in proptest::collection::vec(0usize..16, 0..4),
    ) {
        let items: Vec<Item> = mix.into_iter().map(build).collect();
        let refs: Vec<_> = items
            .iter()
            .map(|x| (&x.key, x.msg.as_slice(), &x.sig))
            .collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(refs.len())).collect();
        cuts.push(0);
        cuts.push(refs.len());
        cuts.sort_unstable();
        let groups: Vec<&[_]> = cuts.windows(2).map(|w| &refs[w[0]..w[1]]).collect();
        let grouped = Ed25519.verify_groups(&groups);
        prop_assert_eq!(grouped.len(), groups.len());
        prop_assert_eq!(grouped.concat(), single(&items));
    }
}
