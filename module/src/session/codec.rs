//! Pure helpers shared by the session layer and the runtime: the keygen coordinator, the
//! stored-share encoding, and the p2p payloads of the FROST engines.

use prost::Message;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;
use crate::protocol::frost_dkg::{AnyDkgOutput, DkgMsg};
use crate::protocol::frost_sign::{AnyKeyMaterial, SignMsg};
use crate::store::SecretShare;

/// The coordinator of a keygen session: chosen from the session id among the parties.
pub fn coordinator(session: &SessionId, parties: &[NodeId]) -> Option<NodeId> {
    let n = parties.len();
    if n == 0 {
        return None;
    }
    let x = u64::from_be_bytes([
        session.0[0],
        session.0[1],
        session.0[2],
        session.0[3],
        session.0[4],
        session.0[5],
        session.0[6],
        session.0[7],
    ]);
    parties.get((x % n as u64) as usize).cloned()
}

/// Whether the chain can check misbehaviour in this payload (`crate::evidence`): a DKG round-1
/// package (proof of knowledge), a DKG round-2 share against it, a resharing deal, a FROST
/// signature share (against its signing package and verifying share).
pub fn is_evidence(payload: &Payload) -> bool {
    matches!(
        payload,
        Payload::DkgRound1(_)
            | Payload::DkgRound2(_)
            | Payload::ReshareDeal(_)
            | Payload::SignRound2(_)
    )
}

/// The p2p envelope of `payload` in `session`, encoded.
pub fn encode(session: &SessionId, payload: Payload) -> Vec<u8> {
    wire::P2pEnvelope {
        session: session.0.to_vec(),
        payload: Some(payload),
    }
    .encode_to_vec()
}

/// The p2p payload of a FROST DKG message.
pub fn dkg_payload(m: DkgMsg) -> Payload {
    match m {
        DkgMsg::Round1(package) => Payload::DkgRound1(wire::DkgRound1 { package }),
        DkgMsg::Round2(package) => Payload::DkgRound2(wire::DkgRound2 { package }),
    }
}

/// The p2p payload of a FROST signing message.
pub fn sign_payload(m: SignMsg) -> Payload {
    match m {
        SignMsg::Commitments(commitments) => Payload::SignRound1(wire::SignRound1 { commitments }),
        SignMsg::Share {
            share,
            package_hash,
        } => Payload::SignRound2(wire::SignRound2 {
            share,
            package_hash,
        }),
    }
}

/// Tag of the stored share encoding that records its scheme. The first encoding (v1: the
/// packages alone, Ed25519 only) starts with a zero byte (a big-endian length below 2^24), so
/// the two cannot be confused.
pub const SHARE_TAG: &[u8] = b"seqmpc/share/v2\0";

/// Encodes a key share for the store: `SHARE_TAG`, the scheme name (one length byte, then the
/// name), then the frost packages (`frost_sign::encode_packages`).
pub fn encode_share(out: &AnyDkgOutput) -> Result<SecretShare, ProtocolError> {
    let packages = out.encode_packages()?;
    encode_tagged(out.scheme(), &packages)
}

/// `SHARE_TAG`, the scheme name (one length byte, then the name), then the scheme's encoding
/// (FROST packages, or `CggmpKeyShare::to_bytes`).
pub fn encode_tagged(scheme: Scheme, packages: &[u8]) -> Result<SecretShare, ProtocolError> {
    let scheme = scheme.as_str().as_bytes();
    let scheme_len = u8::try_from(scheme.len())
        .map_err(|_| ProtocolError::Bug("scheme name too long".into()))?;
    let mut buf = Vec::with_capacity(SHARE_TAG.len() + 1 + scheme.len() + packages.len());
    buf.extend_from_slice(SHARE_TAG);
    buf.push(scheme_len);
    buf.extend_from_slice(scheme);
    buf.extend_from_slice(packages);
    Ok(SecretShare::new(buf))
}

/// The scheme's encoding inside a tagged share, checked to be of `scheme`.
pub fn untag_share(share: &SecretShare, scheme: Scheme) -> Result<&[u8], ProtocolError> {
    let bad = || ProtocolError::Local("stored share is malformed: scheme tag".into());
    let rest = share.expose().strip_prefix(SHARE_TAG).ok_or_else(bad)?;
    let (len, rest) = rest.split_first().ok_or_else(bad)?;
    let name = rest.get(..usize::from(*len)).ok_or_else(bad)?;
    if name != scheme.as_str().as_bytes() {
        return Err(ProtocolError::Local(format!(
            "stored share is a {} share but the record says {scheme}",
            String::from_utf8_lossy(name)
        )));
    }
    rest.get(usize::from(*len)..).ok_or_else(bad)
}

/// Decodes a stored share; the scheme it records must be the record's.
pub fn decode_share(
    share: &SecretShare,
    scheme: Scheme,
    parties: Vec<NodeId>,
) -> Result<AnyKeyMaterial, ProtocolError> {
    let b = share.expose();
    let Some(rest) = b.strip_prefix(SHARE_TAG) else {
        // v1: written before the share recorded its scheme, when Ed25519 was the only one.
        return match scheme {
            Scheme::FrostEd25519 => AnyKeyMaterial::decode(scheme, b, parties),
            other => Err(ProtocolError::Local(format!(
                "stored share has no scheme tag but the record says {other}"
            ))),
        };
    };
    let bad = || ProtocolError::Local("stored share is malformed: scheme tag".into());
    let (len, rest) = rest.split_first().ok_or_else(bad)?;
    let name = rest.get(..usize::from(*len)).ok_or_else(bad)?;
    let packages = rest.get(usize::from(*len)..).ok_or_else(bad)?;
    if name != scheme.as_str().as_bytes() {
        return Err(ProtocolError::Local(format!(
            "stored share is a {} share but the record says {scheme}",
            String::from_utf8_lossy(name)
        )));
    }
    AnyKeyMaterial::decode(scheme, packages, parties)
}

/// The transcript hash a party reports when it already holds the READY key (no DKG ran).
pub fn existing_transcript(scheme: Scheme, pk: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"seqmpc/dkg-transcript/existing/v2\0");
    for part in [scheme.as_str().as_bytes(), pk] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, VecDeque};

    use crate::protocol::frost_dkg::{AnyDkg, AnyDkgProgress};
    use rand::rngs::OsRng;

    #[test]
    fn coordinator_is_a_party_and_deterministic() {
        let parties: Vec<NodeId> = (0..4)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let s = SessionId([3; 32]);
        let c = coordinator(&s, &parties).unwrap();
        assert!(parties.contains(&c));
        assert_eq!(coordinator(&s, &parties), Some(c));
        assert_eq!(coordinator(&s, &[]), None);
    }

    /// A 2-of-2 DKG of `scheme` in process; returns one party's output.
    fn dkg_output(scheme: Scheme) -> AnyDkgOutput {
        let parties: Vec<NodeId> = (0..2)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let s = SessionId([5; 32]);
        let mut states = BTreeMap::new();
        let mut queue = VecDeque::new();
        for p in &parties {
            let (d, out) = AnyDkg::start(scheme, s, p, &parties, 2, &mut OsRng).unwrap();
            states.insert(p.clone(), d);
            queue.extend(out.into_iter().map(|o| (p.clone(), o)));
        }
        while let Some((from, o)) = queue.pop_front() {
            let d = states.remove(&o.to).unwrap();
            match d.handle(&from, o.msg).unwrap() {
                AnyDkgProgress::Continue(d, out) => {
                    states.insert(o.to.clone(), d);
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                }
                AnyDkgProgress::Done(res, _) => return res,
            }
        }
        panic!("DKG did not finish");
    }

    #[test]
    fn stored_share__should_record_its_scheme_and_refuse_another() {
        let parties = vec![NodeId::new("n0").unwrap(), NodeId::new("n1").unwrap()];
        for scheme in Scheme::FROST {
            let out = dkg_output(scheme);
            let share = encode_share(&out).unwrap();
            assert!(share.expose().starts_with(SHARE_TAG));
            let km = decode_share(&share, scheme, parties.clone()).unwrap();
            assert_eq!(km.scheme(), scheme);
            assert_eq!(km.public_key(), out.public_key());
            for other in Scheme::FROST.into_iter().filter(|s| *s != scheme) {
                let e = decode_share(&share, other, parties.clone()).unwrap_err();
                assert!(e.to_string().contains("the record says"), "{e}");
            }
        }
    }

    #[test]
    fn stored_share__should_read_untagged_v1_shares_as_ed25519_only() {
        let parties = vec![NodeId::new("n0").unwrap(), NodeId::new("n1").unwrap()];
        let out = dkg_output(Scheme::FrostEd25519);
        let v1 = SecretShare::new(out.encode_packages().unwrap().to_vec());
        let km = decode_share(&v1, Scheme::FrostEd25519, parties.clone()).unwrap();
        assert_eq!(km.public_key(), out.public_key());
        assert!(decode_share(&v1, Scheme::FrostSecp256k1Tr, parties).is_err());
    }

    #[test]
    fn existing_transcript__should_depend_on_the_scheme() {
        let pk = [9u8; 32];
        assert_ne!(
            existing_transcript(Scheme::FrostEd25519, &pk),
            existing_transcript(Scheme::FrostSecp256k1Tr, &pk)
        );
    }
}
