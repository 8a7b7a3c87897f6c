//! A signer whose signatures carry a torsion component in R: R' = rB + T with T of order
//! 2, s = r + H(R'‖A‖M)·a. ZIP-215 accepts them on every path; the old rule accepted
//! them in some batches and refused them alone, so validators that checked the same tx
//! in different company disagreed (issue 21). Tests use it to hold every path to one verdict.

use std::path::Path;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::Scalar;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha512};
use stele_crypto::{PublicKey, Signature, Signer};

/// Signs like the key in a PKCS#8 file, with the order-2 point added to every R.
pub struct TorsionSigner {
    key: SigningKey,
}

impl std::fmt::Debug for TorsionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TorsionSigner({})", self.public_key())
    }
}

impl TorsionSigner {
    /// The signer of the private key file at `path` (as `testnet init` writes them).
    pub fn load(path: &Path) -> anyhow::Result<TorsionSigner> {
        let pem = std::fs::read_to_string(path)?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(TorsionSigner { key })
    }
}

impl Signer for TorsionSigner {
    fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    fn sign_raw(&self, message: &[u8]) -> Signature {
        let a = self.key.to_scalar();
        let a_enc = self.key.verifying_key().to_bytes();
        // A deterministic nonce, as Ed25519 does; any r works for the equation.
        let r = wide(
            Sha512::new()
                .chain_update(self.key.to_bytes())
                .chain_update(message),
        );
        let big_r = r * ED25519_BASEPOINT_POINT + EIGHT_TORSION[4];
        let r_enc = big_r.compress().to_bytes();
        let k = wide(
            Sha512::new()
                .chain_update(r_enc)
                .chain_update(a_enc)
                .chain_update(message),
        );
        let s = r + k * a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r_enc);
        out[32..].copy_from_slice(&s.to_bytes());
        Signature(out)
    }
}

fn wide(h: Sha512) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}
