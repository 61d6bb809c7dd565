//! Test-only misbehaviour, compiled in only with the cargo feature `fault-injection`: the
//! end-to-end tests make one node of a real network act maliciously and check that the honest
//! nodes end the session ERROR with that node named.
//!
//! `SEQMPC_FAULTS` is a comma-separated list of faults:
//! - `reshare-bad-deal-to=<node>`: as a resharing dealer, send `<node>` a share that is not
//!   on the dealt polynomial (the Feldman check at `<node>` fails and blames this dealer).
//! - `crash-at=<point>`: `std::process::abort()` when the node reaches `<point>` (a `kill -9`
//!   at a chosen phase: no destructors run and nothing is flushed beyond what is already
//!   durable). The points, in the order a session reaches them:
//!   - `keygen-after-pending`: the PENDING record is written, KeyGenReady not yet sent.
//!   - `keygen-before-store`: the DKG finished here, the READY share is not stored yet.
//!   - `keygen-after-store`: the share is stored READY, the KeyGenResult not yet submitted.
//!   - `sign-after-commitments`: FROST round-1 commitments sent, the nonces only in memory.
//!   - `sign-before-share`: the signature share computed, not yet sent.
//!   - `reshare-after-deal`: a resharing dealer sent its deals.
//!   - `reshare-after-stage`: a new party wrote its staged share, not yet reported.
//!   - `reshare-before-promote`: ReshareDone received, the staged share not yet promoted.
//!   - `reshare-after-promote`: the staged share is promoted READY.
//!   - `delete-before-erase`: a Delete job received, the share not yet erased.
//!   - `delete-after-erase`: the share erased, KeyDeleted not yet submitted.

use seqmpc_proto::NodeId;

/// Name of the environment variable read by [`Faults::from_env`].
pub const FAULTS_ENV: &str = "SEQMPC_FAULTS";

/// The faults a node injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// As a resharing dealer, corrupt the share dealt to this node.
    pub reshare_bad_deal_to: Option<NodeId>,
    /// Abort the process at this crash point (one of [`CRASH_POINTS`]).
    pub crash_at: Option<&'static str>,
}

/// Every crash point the node code reaches (see the module docs); `crash-at` refuses others.
pub const CRASH_POINTS: &[&str] = &[
    "keygen-after-pending",
    "keygen-before-store",
    "keygen-after-store",
    "sign-after-commitments",
    "sign-before-share",
    "reshare-after-deal",
    "reshare-after-stage",
    "reshare-before-promote",
    "reshare-after-promote",
    "delete-before-erase",
    "delete-after-erase",
];

/// Aborts the process if `faults` names `point` (`crash-at`): the test's `kill -9` at an
/// exact phase. A process aborts once, so the point fires once per start.
pub fn crash_point(faults: &Faults, point: &str) {
    if faults.crash_at == Some(point) {
        tracing::error!(point, "FAULT INJECTION: crashing at this point (abort)");
        eprintln!("FAULT INJECTION: crash-at={point}: aborting");
        std::process::abort();
    }
}

impl Faults {
    /// Parses a fault list (see the module docs).
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("reshare-bad-deal-to", node)) => {
                    f.reshare_bad_deal_to =
                        Some(NodeId::new(node).map_err(|e| format!("{item}: {e}"))?);
                }
                Some(("crash-at", point)) => {
                    f.crash_at = Some(
                        CRASH_POINTS
                            .iter()
                            .copied()
                            .find(|p| *p == point)
                            .ok_or_else(|| format!("{item}: unknown crash point"))?,
                    );
                }
                _ => return Err(format!("unknown fault {item:?} in {FAULTS_ENV}")),
            }
        }
        Ok(f)
    }

    /// The faults in `SEQMPC_FAULTS` (none when unset).
    pub fn from_env() -> Result<Faults, String> {
        std::env::var(FAULTS_ENV).map_or(Ok(Faults::default()), |s| Faults::parse(&s))
    }

    /// Whether any fault is set.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }

    /// Corrupts a dealt share in place: flips the lowest bit of the scalar (its first byte for
    /// the little-endian Ed25519 encoding, its last for secp256k1's big-endian one), which
    /// keeps it a valid scalar off the dealt polynomial.
    pub fn corrupt_share(scheme: seqmpc_proto::Scheme, share: &mut [u8]) {
        let byte = match scheme {
            seqmpc_proto::Scheme::FrostEd25519 => share.first_mut(),
            _ => share.last_mut(),
        };
        if let Some(b) = byte {
            *b ^= 1;
        }
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn faults__should_parse_and_refuse_unknown_ones() {
        let f = Faults::parse("reshare-bad-deal-to=node2").unwrap();
        assert_eq!(f.reshare_bad_deal_to, Some(NodeId::new("node2").unwrap()));
        assert!(f.any());
        assert!(!Faults::parse("").unwrap().any());
        assert!(Faults::parse("explode").is_err());
        assert!(Faults::parse("reshare-bad-deal-to=").is_err());
    }

    #[test]
    fn faults__should_parse_every_crash_point_and_refuse_unknown_ones() {
        for p in CRASH_POINTS {
            let f = Faults::parse(&format!("crash-at={p}")).unwrap();
            assert_eq!(f.crash_at, Some(*p));
            assert!(f.any());
        }
        assert!(Faults::parse("crash-at=keygen-somewhere").is_err());
        assert!(Faults::parse("crash-at=").is_err());
        // Not reached: crash_point only aborts at the named point.
        crash_point(
            &Faults::parse("crash-at=delete-after-erase").unwrap(),
            "delete-before-erase",
        );
    }
}
