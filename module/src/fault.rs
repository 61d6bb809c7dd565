//! Test-only misbehaviour, compiled in only with the cargo feature `fault-injection`: the
//! end-to-end tests make one node of a real network act maliciously and check that the honest
//! nodes end the session ERROR with that node named.
//!
//! `SEQMPC_FAULTS` is a comma-separated list of faults:
//! - `reshare-bad-deal-to=<node>`: as a resharing dealer, send `<node>` a share that is not
//!   on the dealt polynomial (the Feldman check at `<node>` fails and blames this dealer).

use seqmpc_proto::NodeId;

/// Name of the environment variable read by [`Faults::from_env`].
pub const FAULTS_ENV: &str = "SEQMPC_FAULTS";

/// The faults a node injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// As a resharing dealer, corrupt the share dealt to this node.
    pub reshare_bad_deal_to: Option<NodeId>,
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
}
