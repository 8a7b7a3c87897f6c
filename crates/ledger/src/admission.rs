//! Admission and classification of pending txs (DESIGN.md, "Requests"), as pure
//! functions so the node and the simulator decide alike.
//!
//! Admission: the sender has an account; the nonce is at least the account nonce and
//! less than the account nonce plus G; fewer than P txs of that sender are pending; the
//! mempool is not full.
//! Classification against executed state plus blocks in flight: *executable* (the
//! sender's next nonce), *gapped* (waits, expires after a TTL, evicted first), *dead*
//! (nonce used: evicted at once).

use stele_types::{Account, Nonce, Params};

/// Where a pending tx stands against the sender's next nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Its nonce is the sender's next: it may be proposed now.
    Executable,
    /// Its nonce is ahead of the sender's next: it waits for the txs before it.
    Gapped,
    /// Its nonce is used (by it or by another tx): it can never be applied.
    Dead,
}

impl Class {
    /// Eviction order under pressure: lower goes first (dead, then gapped).
    pub fn eviction_rank(self) -> u8 {
        match self {
            Class::Dead => 0,
            Class::Gapped => 1,
            Class::Executable => 2,
        }
    }
}

/// What admission knows about a tx's sender and the mempool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The sender's account in executed state, if it has one.
    pub account: Option<Account>,
    /// The sender's next nonce counting its txs in blocks in flight (at least the
    /// account's nonce).
    pub next_nonce: Nonce,
    /// How many of the sender's txs are pending now.
    pub sender_pending: usize,
    /// How many txs the mempool holds now.
    pub mempool_len: usize,
}

/// Why a tx is refused at admission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("sender has no account")]
    UnknownSender,
    #[error("nonce {found} is already used: the sender's next nonce is {next}")]
    NonceUsed { next: Nonce, found: Nonce },
    #[error(
        "nonce {found} is too far ahead: the sender's account nonce is {account_nonce} and at \
         most {window} nonces from it are admitted"
    )]
    NonceTooFar {
        account_nonce: Nonce,
        window: u64,
        found: Nonce,
    },
    #[error("the sender already has {pending} pending txs, the maximum is {max}")]
    SenderQuotaFull { pending: usize, max: u32 },
    #[error("the mempool holds {len} txs, the maximum is {max}")]
    MempoolFull { len: usize, max: u32 },
}

impl Refusal {
    /// Whether the refusal is load, not a fault of the tx: the client may retry later
    /// (HTTP 429).
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            Refusal::SenderQuotaFull { .. } | Refusal::MempoolFull { .. }
        )
    }
}

/// Classifies a pending tx with `nonce` against the sender's next nonce (executed state
/// plus blocks in flight).
pub fn classify(next_nonce: Nonce, nonce: Nonce) -> Class {
    match nonce.cmp(&next_nonce) {
        std::cmp::Ordering::Less => Class::Dead,
        std::cmp::Ordering::Equal => Class::Executable,
        std::cmp::Ordering::Greater => Class::Gapped,
    }
}

/// Reclassifies a pending tx with `nonce` after an execution, against executed state
/// plus blocks in flight: `executed_next` is the sender's account nonce, `in_flight_next`
/// its next nonce past its txs in blocks proposed or committed but not executed (at
/// least `executed_next`).
///
/// Unlike admission (where a new tx whose nonce a block in flight uses is refused),
/// only executed state makes a pending tx dead here: the pending tx may be the very one
/// in flight, and a block in flight may still be voided by a view change. Dropped as
/// dead, it would never be proposed again (simulator seed 100060: a tx in the next
/// block was dropped at the previous block's execution, that block was voided, and the
/// chain idled with the tx never applied). A tx is executable at the executed next
/// nonce, or right after the sender's txs in flight; any other is gapped.
pub fn classify_in_flight(executed_next: Nonce, in_flight_next: Nonce, nonce: Nonce) -> Class {
    debug_assert!(in_flight_next >= executed_next);
    if nonce < executed_next {
        Class::Dead
    } else if nonce == executed_next || nonce == in_flight_next {
        Class::Executable
    } else {
        Class::Gapped
    }
}

/// Decides whether a (well-formed, verified, not already pending) tx with `nonce` enters
/// the mempool, and how it is classified if it does (never [`Class::Dead`]).
pub fn admit(nonce: Nonce, ctx: &Admission, params: &Params) -> Result<Class, Refusal> {
    let Some(account) = ctx.account else {
        return Err(Refusal::UnknownSender);
    };
    debug_assert!(
        ctx.next_nonce >= account.nonce,
        "blocks in flight only move the next nonce forward"
    );
    let class = classify(ctx.next_nonce, nonce);
    if class == Class::Dead {
        return Err(Refusal::NonceUsed {
            next: ctx.next_nonce,
            found: nonce,
        });
    }
    // [account nonce, account nonce + G), in u128 so no window can overflow.
    let end = u128::from(account.nonce.0) + u128::from(params.nonce_window);
    if u128::from(nonce.0) >= end {
        return Err(Refusal::NonceTooFar {
            account_nonce: account.nonce,
            window: params.nonce_window,
            found: nonce,
        });
    }
    if ctx.sender_pending >= params.max_pending_per_sender as usize {
        return Err(Refusal::SenderQuotaFull {
            pending: ctx.sender_pending,
            max: params.max_pending_per_sender,
        });
    }
    if ctx.mempool_len >= params.mempool_size as usize {
        return Err(Refusal::MempoolFull {
            len: ctx.mempool_len,
            max: params.mempool_size,
        });
    }
    debug_assert!(class != Class::Dead);
    Ok(class)
}

/// Whether a pending tx of `class` that arrived at `arrived_ms` must leave the mempool
/// at `now_ms`: dead at once, gapped after the genesis TTL, executable never.
pub fn must_evict(class: Class, arrived_ms: u64, now_ms: u64, params: &Params) -> bool {
    match class {
        Class::Dead => true,
        Class::Gapped => now_ms.saturating_sub(arrived_ms) >= params.gapped_ttl_ms,
        Class::Executable => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_types::Amount;

    fn ctx(account_nonce: u64, next: u64, pending: usize, len: usize) -> Admission {
        Admission {
            account: Some(Account {
                balance: Amount(100),
                nonce: Nonce(account_nonce),
            }),
            next_nonce: Nonce(next),
            sender_pending: pending,
            mempool_len: len,
        }
    }

    fn params() -> Params {
        Params {
            nonce_window: 4,
            max_pending_per_sender: 2,
            mempool_size: 10,
            gapped_ttl_ms: 1000,
            ..Params::default()
        }
    }

    #[test]
    fn next_nonce_is_executable_and_later_ones_within_g_are_gapped() {
        let p = params();
        assert_eq!(admit(Nonce(5), &ctx(5, 5, 0, 0), &p), Ok(Class::Executable));
        assert_eq!(admit(Nonce(8), &ctx(5, 5, 0, 0), &p), Ok(Class::Gapped));
        // In-flight blocks moved the next nonce to 7: 7 is executable.
        assert_eq!(admit(Nonce(7), &ctx(5, 7, 0, 0), &p), Ok(Class::Executable));
    }

    #[test]
    fn nonce_at_or_beyond_g_from_the_account_nonce_is_refused() {
        let p = params();
        assert_eq!(
            admit(Nonce(9), &ctx(5, 5, 0, 0), &p),
            Err(Refusal::NonceTooFar {
                account_nonce: Nonce(5),
                window: 4,
                found: Nonce(9)
            })
        );
        // The window is measured from the executed account nonce, not from in-flight.
        assert!(matches!(
            admit(Nonce(9), &ctx(5, 8, 0, 0), &p),
            Err(Refusal::NonceTooFar { .. })
        ));
        assert!(admit(Nonce(u64::MAX), &ctx(u64::MAX - 1, u64::MAX - 1, 0, 0), &p).is_ok());
    }

    #[test]
    fn used_nonces_and_unknown_senders_are_refused() {
        let p = params();
        assert_eq!(
            admit(Nonce(4), &ctx(5, 5, 0, 0), &p),
            Err(Refusal::NonceUsed {
                next: Nonce(5),
                found: Nonce(4)
            })
        );
        // Used by a tx in a block in flight.
        assert!(matches!(
            admit(Nonce(6), &ctx(5, 7, 0, 0), &p),
            Err(Refusal::NonceUsed { .. })
        ));
        let unknown = Admission {
            account: None,
            ..ctx(0, 0, 0, 0)
        };
        assert_eq!(admit(Nonce(0), &unknown, &p), Err(Refusal::UnknownSender));
    }

    #[test]
    fn full_sender_quota_and_full_mempool_are_overload() {
        let p = params();
        let quota = admit(Nonce(5), &ctx(5, 5, 2, 0), &p).unwrap_err();
        assert_eq!(quota, Refusal::SenderQuotaFull { pending: 2, max: 2 });
        assert!(quota.is_overload());
        let full = admit(Nonce(5), &ctx(5, 5, 1, 10), &p).unwrap_err();
        assert_eq!(full, Refusal::MempoolFull { len: 10, max: 10 });
        assert!(full.is_overload());
        assert!(!Refusal::UnknownSender.is_overload());
        assert_eq!(admit(Nonce(5), &ctx(5, 5, 1, 9), &p), Ok(Class::Executable));
    }

    #[test]
    fn classification_follows_the_next_nonce() {
        // Against blocks in flight: executed next 3, txs 3 and 4 in flight (next 5).
        let c = |n| classify_in_flight(Nonce(3), Nonce(5), Nonce(n));
        assert_eq!(c(2), Class::Dead, "used in executed state");
        assert_eq!(
            c(3),
            Class::Executable,
            "in flight, or a rival of one: not dead"
        );
        assert_eq!(c(4), Class::Gapped, "behind an in-flight nonce, as before");
        assert_eq!(
            c(5),
            Class::Executable,
            "right after the sender's txs in flight"
        );
        assert_eq!(c(6), Class::Gapped);
        assert_eq!(classify(Nonce(3), Nonce(2)), Class::Dead);
        assert_eq!(classify(Nonce(3), Nonce(3)), Class::Executable);
        assert_eq!(classify(Nonce(3), Nonce(4)), Class::Gapped);
        assert!(Class::Dead.eviction_rank() < Class::Gapped.eviction_rank());
        assert!(Class::Gapped.eviction_rank() < Class::Executable.eviction_rank());
    }

    #[test]
    fn dead_goes_at_once_gapped_after_the_ttl_executable_never() {
        let p = params();
        assert!(must_evict(Class::Dead, 100, 100, &p));
        assert!(!must_evict(Class::Gapped, 100, 1099, &p));
        assert!(must_evict(Class::Gapped, 100, 1100, &p));
        assert!(!must_evict(Class::Executable, 0, u64::MAX, &p));
        // A clock that went backwards never evicts early.
        assert!(!must_evict(Class::Gapped, 2000, 100, &p));
    }
}
