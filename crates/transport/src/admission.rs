//! Admission of inbound handshakes: which connection attempts may hold a handshake slot.
//!
//! A slot costs TLS state and a timer until the handshake ends or times out. The
//! transport sends a stateless Retry to every source address not yet validated, so a
//! spoofed flood never reaches this module; a validated attempt takes a slot only under
//! three caps: all sources together, one source (an IPv4 address or an IPv6 /64), and
//! all strangers (sources no genesis validator lists as its host) together, so that
//! strangers cannot fill the slots that validators reconnecting from their listed
//! addresses need. Pure bookkeeping: the transport asks, holds the [`Slot`], drops it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use stele_types::{Genesis, ReplicaId};

use crate::metrics::RejectReason;

/// Where connection attempts come from, as far as the caps are concerned.
///
/// An IPv6 host commonly owns a whole /64, so counting its addresses one by one would
/// not bound it; an IPv4-mapped IPv6 address is its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4(Ipv4Addr),
    V6Prefix64(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix64((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// The caps, as [`crate::Tuning`] sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Slots held by every source together.
    pub total: usize,
    /// Slots held by one source that no genesis validator lists (at least this many for
    /// a listed one).
    pub per_source: usize,
    /// Slots held by all unlisted sources together.
    pub strangers: usize,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    strangers: usize,
    by_source: HashMap<Source, usize>,
}

/// The slot table of one endpoint.
#[derive(Debug)]
pub(crate) struct Admission {
    caps: Caps,
    /// Sources that genesis lists as the host of some other validator, with how many
    /// such validators each hosts: that many may reconnect at once.
    listed: HashMap<Source, usize>,
    held: Mutex<Held>,
}

/// One held handshake slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    source: Source,
    stranger: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.source, self.stranger);
    }
}

impl Admission {
    /// Learns the listed sources from the genesis addresses that are IP literals
    /// (a host name says nothing about the address packets will come from).
    pub fn new(caps: Caps, genesis: &Genesis, local: ReplicaId) -> Admission {
        debug_assert!(caps.total >= 1 && caps.per_source >= 1 && caps.strangers >= 1);
        let mut listed = HashMap::new();
        for (i, v) in genesis.validators.iter().enumerate() {
            if i == local.index() {
                continue;
            }
            if let Ok(addr) = v.p2p_addr.parse::<SocketAddr>() {
                *listed.entry(Source::of(addr.ip())).or_insert(0) += 1;
            }
        }
        Admission {
            caps,
            listed,
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Every update below is one await-free step, so a poisoned table is consistent.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for an attempt from `ip` (an address the caller has validated), or the
    /// cap that refuses it: the source's own cap first, then the strangers', then the
    /// total, so the counted reason names the narrowest cap reached.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, RejectReason> {
        let source = Source::of(ip);
        let listed = self.listed.get(&source).copied();
        let stranger = listed.is_none();
        let source_cap = listed.map_or(self.caps.per_source, |k| k.max(self.caps.per_source));
        let mut held = self.held();
        let from_source = held.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= source_cap {
            return Err(RejectReason::SourceHandshakesBusy);
        }
        if stranger && held.strangers >= self.caps.strangers {
            return Err(RejectReason::StrangerHandshakesBusy);
        }
        if held.total >= self.caps.total {
            return Err(RejectReason::HandshakesBusy);
        }
        held.total += 1;
        held.strangers += usize::from(stranger);
        *held.by_source.entry(source).or_insert(0) += 1;
        debug_assert!(held.total <= self.caps.total && held.strangers <= self.caps.strangers);
        drop(held);
        Ok(Slot {
            admission: self.clone(),
            source,
            stranger,
        })
    }

    fn release(&self, source: Source, stranger: bool) {
        let mut held = self.held();
        let Some(n) = held.by_source.get_mut(&source) else {
            debug_assert!(false, "released a slot of {source:?} that was not held");
            return;
        };
        *n -= 1;
        if *n == 0 {
            // Emptied entries go, so the table holds at most `caps.total` sources.
            held.by_source.remove(&source);
        }
        held.total -= 1;
        held.strangers -= usize::from(stranger);
    }

    /// Slots held now, all sources together.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.held().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::{ChainId, KeyPair};
    use stele_types::{Params, ValidatorInfo};

    fn genesis(p2p: &[&str]) -> Genesis {
        Genesis {
            chain_id: ChainId::new("admission-test").unwrap(),
            genesis_time_ms: 0,
            validators: p2p
                .iter()
                .enumerate()
                .map(|(i, a)| ValidatorInfo {
                    key: KeyPair::from_seed([i as u8 + 1; 32]).public(),
                    p2p_addr: (*a).to_string(),
                    api_addr: format!("127.0.0.1:{}", 8000 + i),
                })
                .collect(),
            accounts: vec![],
            params: Params::default(),
        }
    }

    fn admission(caps: Caps, p2p: &[&str]) -> Arc<Admission> {
        Arc::new(Admission::new(caps, &genesis(p2p), ReplicaId(0)))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const CAPS: Caps = Caps {
        total: 6,
        per_source: 2,
        strangers: 3,
    };

    #[test]
    fn one_unlisted_source_holds_at_most_its_cap() {
        let a = admission(CAPS, &["10.0.0.1:1", "10.0.0.2:1"]);
        let held: Vec<Slot> = (0..2)
            .map(|_| a.try_admit(ip("192.0.2.7")).unwrap())
            .collect();
        assert_eq!(
            a.try_admit(ip("192.0.2.7")).unwrap_err(),
            RejectReason::SourceHandshakesBusy
        );
        drop(held);
        assert_eq!(a.in_use(), 0);
        assert!(a.try_admit(ip("192.0.2.7")).is_ok());
    }

    #[test]
    fn strangers_together_cannot_take_the_slots_kept_for_listed_hosts() {
        let a = admission(CAPS, &["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]);
        let mut held = Vec::new();
        for i in 1..=3 {
            held.push(a.try_admit(ip(&format!("192.0.2.{i}"))).unwrap());
        }
        assert_eq!(
            a.try_admit(ip("192.0.2.4")).unwrap_err(),
            RejectReason::StrangerHandshakesBusy
        );
        // Validators 1 and 2 (validator 0 is us) still get in from their listed hosts.
        held.push(a.try_admit(ip("10.0.0.2")).unwrap());
        held.push(a.try_admit(ip("10.0.0.3")).unwrap());
        assert_eq!(a.in_use(), 5);
    }

    #[test]
    fn a_host_listed_for_several_validators_may_hold_one_slot_each() {
        // A 127.0.0.1 testnet: the three other validators share one address.
        let caps = Caps {
            total: 8,
            per_source: 1,
            strangers: 4,
        };
        let a = admission(
            caps,
            &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"],
        );
        let held: Vec<Slot> = (0..3)
            .map(|_| a.try_admit(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            a.try_admit(ip("127.0.0.1")).unwrap_err(),
            RejectReason::SourceHandshakesBusy
        );
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn the_total_cap_binds_listed_hosts_too() {
        let caps = Caps {
            total: 2,
            per_source: 4,
            strangers: 2,
        };
        let a = admission(caps, &["10.0.0.1:1", "10.0.0.2:1"]);
        let _s = a.try_admit(ip("10.0.0.2")).unwrap();
        let _t = a.try_admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            a.try_admit(ip("10.0.0.2")).unwrap_err(),
            RejectReason::HandshakesBusy
        );
    }

    #[test]
    fn host_names_and_our_own_address_list_no_source() {
        let a = admission(CAPS, &["10.0.0.1:1", "validator-2.example:1"]);
        assert!(a.listed.is_empty(), "{:?}", a.listed);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a = admission(CAPS, &["10.0.0.1:1", "[2001:db8::1]:1"]);
        let _x = a.try_admit(ip("2001:db8:0:7::1")).unwrap();
        let _y = a.try_admit(ip("2001:db8:0:7::2")).unwrap();
        assert_eq!(
            a.try_admit(ip("2001:db8:0:7:ffff::3")).unwrap_err(),
            RejectReason::SourceHandshakesBusy
        );
        // Another /64 is another source; the listed validator's /64 is not a stranger.
        let _z = a.try_admit(ip("2001:db8:0:8::1")).unwrap();
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.9")),
            Source::V4("192.0.2.9".parse().unwrap())
        );
        assert!(a.listed.contains_key(&Source::of(ip("2001:db8::99"))));
    }
}
