//! The paper's numbers as newtypes: a view can never be passed where a height is meant.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! number {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }
    };
}

number!(
    /// A validator's index in genesis order, 0..n−1.
    ReplicaId(u16)
);
number!(
    /// A PBFT view; primary(v) = v mod n.
    ViewNumber(u64)
);
number!(
    /// A block height, which is PBFT's sequence number. Height 0 is genesis.
    Height(u64)
);
number!(
    /// A sender's transaction counter.
    Nonce(u64)
);
number!(
    /// An amount of the ledger's currency.
    Amount(u64)
);

impl ReplicaId {
    /// As an index into per-validator tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl ViewNumber {
    /// The next view, saturating (a view number near u64::MAX is only ever seen from a
    /// Byzantine peer, and is rejected long before this matters).
    pub fn next(self) -> ViewNumber {
        ViewNumber(self.0.saturating_add(1))
    }
}

impl Height {
    /// The next height, saturating.
    pub fn next(self) -> Height {
        Height(self.0.saturating_add(1))
    }

    /// The height before, or 0.
    pub fn prev(self) -> Height {
        Height(self.0.saturating_sub(1))
    }

    /// `self + k`, saturating.
    pub fn plus(self, k: u64) -> Height {
        Height(self.0.saturating_add(k))
    }
}

impl Nonce {
    /// The next nonce, saturating.
    pub fn next(self) -> Nonce {
        Nonce(self.0.saturating_add(1))
    }
}

impl Amount {
    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self − other`, or `None` if it would go below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}
