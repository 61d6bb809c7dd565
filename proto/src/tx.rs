//! Validated, signature-checked transactions.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::ids::{KeyId, NodeId, RequestId, Scheme, SessionId};
use crate::wire::{self, tx_body};
use crate::DomainError;

/// Domain separation prefix of the bytes a tx signature covers.
pub const TX_SIGN_PREFIX: &[u8] = b"seqmpc/tx/v1\0";
/// Hard cap on an encoded tx, before any decoding. The genesis may set a lower message cap.
pub const MAX_TX_BYTES: usize = 256 * 1024;
/// Length of a prehashed digest (`KeySign.prehashed`).
pub const PREHASHED_LEN: usize = 32;
/// Cap on the number of parties named in one tx.
pub const MAX_PARTIES_WIRE: usize = 256;
/// Cap on a node's p2p multiaddr in a `NodeJoin`.
pub const MAX_P2P_ADDR_BYTES: usize = 256;
/// Cap on the admins a `KeyAdmins` names.
pub const MAX_KEY_ADMINS: usize = 16;
/// Length of a proposal id: the first hex digits of the proposing tx's hash.
pub const PROPOSAL_ID_LEN: usize = 16;

/// A decoded transaction whose signature and fields have been checked (stateless checks).
#[derive(Clone, Debug)]
pub struct SignedTx {
    /// Signer's public key.
    pub signer: VerifyingKey,
    /// Chain id the tx is bound to.
    pub chain_id: String,
    /// Signer's sequence number.
    pub sequence: u64,
    /// The message.
    pub msg: TxMsg,
    /// SHA-256 of the encoded tx (as CometBFT hashes txs).
    pub hash: [u8; 32],
}

/// The validated message of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxMsg {
    /// Request a new key.
    KeyGen {
        /// Key id.
        key_id: KeyId,
        /// Scheme.
        scheme: Scheme,
        /// Threshold (>= 1).
        threshold: u32,
        /// Committee; empty means every registered node.
        parties: Vec<NodeId>,
    },
    /// Request a signature.
    KeySign {
        /// Key id.
        key_id: KeyId,
        /// Request id.
        request_id: RequestId,
        /// Message to sign.
        message: Vec<u8>,
        /// `message` is a 32-byte digest signed as is (checked at decode); otherwise the
        /// scheme hashes it.
        prehashed: bool,
    },
    /// Request deletion.
    KeyDelete {
        /// Key id.
        key_id: KeyId,
    },
    /// A node's keygen outcome.
    KeyGenResult {
        /// Key id.
        key_id: KeyId,
        /// Session.
        session: SessionId,
        /// Outcome.
        outcome: Outcome<KeyGenOk>,
    },
    /// A node's signing outcome.
    SignResult {
        /// Request id.
        request_id: RequestId,
        /// Session.
        session: SessionId,
        /// Outcome: the signature bytes.
        outcome: Outcome<Vec<u8>>,
        /// Failure only, may be empty: the FROST `SigningPackage` the quoted signature shares
        /// (the outcome's evidence) were computed for.
        signing_package: Vec<u8>,
    },
    /// A node attests it deleted its share.
    KeyDeleted {
        /// Key id.
        key_id: KeyId,
    },
    /// A node says it is up: the chain prefers recently seen nodes as signers.
    Heartbeat,
    /// A registry account admits a new MPC node.
    NodeJoin {
        /// The new node's id.
        node_id: NodeId,
        /// Its ed25519 node public key (a valid, non-weak point; checked at decode).
        public_key: [u8; 32],
        /// Its libp2p multiaddr (parses; at most [`MAX_P2P_ADDR_BYTES`]).
        p2p_addr: String,
    },
    /// Request resharing of a READY key to `parties` with `threshold` (the same committee and
    /// threshold: a refresh).
    KeyReshare {
        /// Key id.
        key_id: KeyId,
        /// The new committee.
        parties: Vec<NodeId>,
        /// The new threshold (>= 1).
        threshold: u32,
    },
    /// A new party's resharing outcome: the (unchanged) public key and the transcript hash of
    /// the dealt commitments and new public shares.
    ReshareResult {
        /// Key id.
        key_id: KeyId,
        /// The reshare session.
        session: SessionId,
        /// Outcome.
        outcome: Outcome<KeyGenOk>,
    },
    /// The owner of a key names the accounts that may also sign with it, delete it and
    /// request its resharing (replacing the previous list; empty: the owner alone).
    KeyAdmins {
        /// Key id.
        key_id: KeyId,
        /// ed25519 public keys of accounts (valid points, each once, at most
        /// [`MAX_KEY_ADMINS`]; checked at decode).
        admins: Vec<[u8; 32]>,
    },
    /// A governance account approves a pending proposal, or (with `cancel`) a governance
    /// account or the proposer withdraws it.
    ProposalVote {
        /// [`PROPOSAL_ID_LEN`] lowercase hex digits (checked at decode).
        proposal_id: String,
        /// Cancel instead of approving.
        cancel: bool,
    },
    /// A registry account replaces a registered node's key (governance approves).
    NodeRotateKey {
        /// The registered node.
        node_id: NodeId,
        /// Its new ed25519 public key (a valid, non-weak point; checked at decode).
        public_key: [u8; 32],
    },
    /// A registry account removes a node from the registry (governance approves).
    NodeRemove {
        /// The registered node.
        node_id: NodeId,
    },
}

/// The id of the proposal a tx with hash `tx_hash` opens: its first [`PROPOSAL_ID_LEN`] hex
/// digits.
pub fn proposal_id(tx_hash: &[u8; 32]) -> String {
    let mut id = hex::encode(tx_hash);
    id.truncate(PROPOSAL_ID_LEN);
    id
}

/// Successful keygen report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGenOk {
    /// Group public key.
    pub public_key: Vec<u8>,
    /// Hash of the DKG broadcast transcript.
    pub transcript_hash: [u8; 32],
    /// FROST schemes: frost's serialized `PublicKeyPackage` (the group key and every party's
    /// verifying share); empty for CGGMP24.
    pub public_key_package: Vec<u8>,
}

/// Outcome reported by a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Success.
    Ok(T),
    /// Failure with a reason and the parties the protocol blamed.
    Failed {
        /// Readable reason.
        error: String,
        /// Blamed parties.
        culprits: Vec<NodeId>,
        /// Signed p2p messages of the culprits that prove the blame (empty when the protocol
        /// gives no proof).
        evidence: Vec<SignedMessage>,
    },
}

/// Most messages one failure report may quote as evidence.
pub const MAX_EVIDENCE_MESSAGES: usize = 8;
/// Largest quoted envelope.
pub const MAX_EVIDENCE_ENVELOPE_BYTES: usize = 64 * 1024;
/// Largest quoted FROST signing package in a `SignResult` (it holds the message).
pub const MAX_SIGNING_PACKAGE_BYTES: usize = 160 * 1024;
/// Largest reported FROST public key package (256 parties fit).
pub const MAX_PUBLIC_KEY_PACKAGE_BYTES: usize = 32 * 1024;

/// A p2p message as its sender signed it (see [`wire::p2p_signing_digest`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedMessage {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The encoded p2p envelope as sent.
    pub envelope: Vec<u8>,
    /// Ed25519 signature of the sender's node key.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for SignedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The envelope may hold a (failed session's) secret share: its length only.
        f.debug_struct("SignedMessage")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("envelope", &format_args!("{} bytes", self.envelope.len()))
            .finish_non_exhaustive()
    }
}

impl SignedMessage {
    /// The digest the sender signed.
    pub fn digest(&self) -> [u8; 32] {
        wire::p2p_signing_digest(self.from.as_str(), self.to.as_str(), &self.envelope)
    }
}

impl TryFrom<wire::SignedP2pMessage> for SignedMessage {
    type Error = DomainError;
    fn try_from(m: wire::SignedP2pMessage) -> Result<Self, DomainError> {
        if m.envelope.len() > MAX_EVIDENCE_ENVELOPE_BYTES {
            return Err(invalid(
                "evidence",
                format!("an envelope is at most {MAX_EVIDENCE_ENVELOPE_BYTES} bytes"),
            ));
        }
        Ok(SignedMessage {
            from: NodeId::new(m.from)?,
            to: NodeId::new(m.to)?,
            envelope: m.envelope,
            signature: <[u8; 64]>::try_from(m.signature.as_slice())
                .map_err(|_| invalid("evidence", "a signature is 64 bytes"))?,
        })
    }
}

impl From<SignedMessage> for wire::SignedP2pMessage {
    fn from(m: SignedMessage) -> Self {
        wire::SignedP2pMessage {
            from: m.from.into(),
            to: m.to.into(),
            envelope: m.envelope,
            signature: m.signature.to_vec(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn node_ids(v: Vec<String>) -> Result<Vec<NodeId>, DomainError> {
    if v.len() > MAX_PARTIES_WIRE {
        return Err(invalid("parties", format!("at most {MAX_PARTIES_WIRE}")));
    }
    v.into_iter().map(NodeId::new).collect()
}

/// Checks a node key: 32 bytes, a valid ed25519 point, not of small order.
fn node_key(bytes: &[u8]) -> Result<[u8; 32], DomainError> {
    let arr = <[u8; 32]>::try_from(bytes).map_err(|_| {
        invalid(
            "public_key",
            format!("must be 32 bytes (ed25519), got {}", bytes.len()),
        )
    })?;
    let vk = VerifyingKey::from_bytes(&arr)
        .map_err(|_| invalid("public_key", "not a valid ed25519 point"))?;
    if vk.is_weak() {
        return Err(invalid("public_key", "a small-order ed25519 point"));
    }
    Ok(arr)
}

/// Checks a p2p address: non-empty, bounded, a parseable multiaddr.
fn p2p_addr(addr: String) -> Result<String, DomainError> {
    if addr.is_empty() || addr.len() > MAX_P2P_ADDR_BYTES {
        return Err(invalid(
            "p2p_addr",
            format!("must be 1..={MAX_P2P_ADDR_BYTES} bytes, got {}", addr.len()),
        ));
    }
    addr.parse::<multiaddr::Multiaddr>()
        .map_err(|e| invalid("p2p_addr", format!("{addr:?} is not a multiaddr: {e}")))?;
    Ok(addr)
}

fn failure<T>(
    error: String,
    culprits: Vec<String>,
    evidence: Vec<wire::SignedP2pMessage>,
) -> Result<Outcome<T>, DomainError> {
    if error.len() > 1024 {
        return Err(invalid("error", "at most 1024 bytes"));
    }
    if evidence.len() > MAX_EVIDENCE_MESSAGES {
        return Err(invalid(
            "evidence",
            format!("at most {MAX_EVIDENCE_MESSAGES} messages"),
        ));
    }
    Ok(Outcome::Failed {
        error,
        culprits: node_ids(culprits)?,
        evidence: evidence
            .into_iter()
            .map(SignedMessage::try_from)
            .collect::<Result<_, _>>()?,
    })
}

/// The fields of a keygen (or reshare) outcome report.
fn keygen_outcome(
    r: wire::KeyGenResult,
) -> Result<(KeyId, SessionId, Outcome<KeyGenOk>), DomainError> {
    let outcome = if r.error.is_empty() {
        let transcript_hash = <[u8; 32]>::try_from(r.transcript_hash.as_slice())
            .map_err(|_| invalid("transcript_hash", "must be 32 bytes"))?;
        if r.public_key.is_empty() || r.public_key.len() > 128 {
            return Err(invalid("public_key", "must be 1..=128 bytes"));
        }
        if r.public_key_package.len() > MAX_PUBLIC_KEY_PACKAGE_BYTES {
            return Err(invalid(
                "public_key_package",
                format!("at most {MAX_PUBLIC_KEY_PACKAGE_BYTES} bytes"),
            ));
        }
        Outcome::Ok(KeyGenOk {
            public_key: r.public_key,
            transcript_hash,
            public_key_package: r.public_key_package,
        })
    } else {
        failure(r.error, r.culprits, r.evidence)?
    };
    Ok((
        KeyId::new(r.key_id)?,
        SessionId::from_slice(&r.session)?,
        outcome,
    ))
}

impl TryFrom<tx_body::Msg> for TxMsg {
    type Error = DomainError;
    fn try_from(m: tx_body::Msg) -> Result<Self, DomainError> {
        Ok(match m {
            tx_body::Msg::KeyGen(k) => {
                if k.threshold == 0 {
                    return Err(invalid("threshold", "must be at least 1"));
                }
                TxMsg::KeyGen {
                    key_id: KeyId::new(k.key_id)?,
                    scheme: k.scheme.parse()?,
                    threshold: k.threshold,
                    parties: node_ids(k.parties)?,
                }
            }
            tx_body::Msg::KeySign(s) => {
                if s.prehashed && s.message.len() != PREHASHED_LEN {
                    return Err(invalid(
                        "message",
                        format!(
                            "a prehashed digest must be {PREHASHED_LEN} bytes, got {}",
                            s.message.len()
                        ),
                    ));
                }
                TxMsg::KeySign {
                    key_id: KeyId::new(s.key_id)?,
                    request_id: RequestId::new(s.request_id)?,
                    message: s.message,
                    prehashed: s.prehashed,
                }
            }
            tx_body::Msg::KeyDelete(d) => TxMsg::KeyDelete {
                key_id: KeyId::new(d.key_id)?,
            },
            tx_body::Msg::KeyGenResult(r) => {
                let (key_id, session, outcome) = keygen_outcome(r)?;
                TxMsg::KeyGenResult {
                    key_id,
                    session,
                    outcome,
                }
            }
            tx_body::Msg::ReshareResult(r) => {
                let (key_id, session, outcome) = keygen_outcome(r)?;
                TxMsg::ReshareResult {
                    key_id,
                    session,
                    outcome,
                }
            }
            tx_body::Msg::KeyReshare(r) => {
                if r.new_threshold == 0 {
                    return Err(invalid("new_threshold", "must be at least 1"));
                }
                if r.new_parties.is_empty() {
                    return Err(invalid("new_parties", "must name at least one node"));
                }
                TxMsg::KeyReshare {
                    key_id: KeyId::new(r.key_id)?,
                    parties: node_ids(r.new_parties)?,
                    threshold: r.new_threshold,
                }
            }
            tx_body::Msg::SignResult(r) => {
                let outcome = if r.error.is_empty() {
                    if r.signature.is_empty() || r.signature.len() > 256 {
                        return Err(invalid("signature", "must be 1..=256 bytes"));
                    }
                    if !r.evidence.is_empty() || !r.signing_package.is_empty() {
                        return Err(invalid(
                            "evidence",
                            "a signature comes without evidence or signing package",
                        ));
                    }
                    Outcome::Ok(r.signature)
                } else {
                    if r.signing_package.len() > MAX_SIGNING_PACKAGE_BYTES {
                        return Err(invalid(
                            "signing_package",
                            format!("at most {MAX_SIGNING_PACKAGE_BYTES} bytes"),
                        ));
                    }
                    failure(r.error, r.culprits, r.evidence)?
                };
                TxMsg::SignResult {
                    request_id: RequestId::new(r.request_id)?,
                    session: SessionId::from_slice(&r.session)?,
                    outcome,
                    signing_package: r.signing_package,
                }
            }
            tx_body::Msg::KeyDeleted(d) => TxMsg::KeyDeleted {
                key_id: KeyId::new(d.key_id)?,
            },
            tx_body::Msg::Heartbeat(wire::Heartbeat {}) => TxMsg::Heartbeat,
            tx_body::Msg::NodeJoin(j) => TxMsg::NodeJoin {
                node_id: NodeId::new(j.node_id)?,
                public_key: node_key(&j.public_key)?,
                p2p_addr: p2p_addr(j.p2p_addr)?,
            },
            tx_body::Msg::KeyAdmins(a) => {
                if a.admins.len() > MAX_KEY_ADMINS {
                    return Err(invalid("admins", format!("at most {MAX_KEY_ADMINS}")));
                }
                let mut admins: Vec<[u8; 32]> = Vec::with_capacity(a.admins.len());
                for pk in &a.admins {
                    let pk = node_key(pk).map_err(|e| match e {
                        DomainError::Invalid { reason, .. } => invalid("admins", reason),
                        e => e,
                    })?;
                    if admins.contains(&pk) {
                        return Err(invalid("admins", "an account is listed twice"));
                    }
                    admins.push(pk);
                }
                TxMsg::KeyAdmins {
                    key_id: KeyId::new(a.key_id)?,
                    admins,
                }
            }
            tx_body::Msg::ProposalVote(v) => {
                let id = v.proposal_id;
                if id.len() != PROPOSAL_ID_LEN
                    || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    return Err(invalid(
                        "proposal_id",
                        format!("must be {PROPOSAL_ID_LEN} lowercase hex digits"),
                    ));
                }
                TxMsg::ProposalVote {
                    proposal_id: id,
                    cancel: v.cancel,
                }
            }
            tx_body::Msg::NodeRotateKey(r) => TxMsg::NodeRotateKey {
                node_id: NodeId::new(r.node_id)?,
                public_key: node_key(&r.public_key)?,
            },
            tx_body::Msg::NodeRemove(r) => TxMsg::NodeRemove {
                node_id: NodeId::new(r.node_id)?,
            },
        })
    }
}

/// The wire fields of a failure: reason, culprits, evidence.
type WireFailure = (String, Vec<String>, Vec<wire::SignedP2pMessage>);

fn fail(o: Outcome<()>) -> WireFailure {
    match o {
        Outcome::Ok(()) => (String::new(), Vec::new(), Vec::new()),
        Outcome::Failed {
            error,
            culprits,
            evidence,
        } => (
            error,
            culprits.into_iter().map(String::from).collect(),
            evidence.into_iter().map(Into::into).collect(),
        ),
    }
}

/// The wire form of a keygen (or reshare) outcome report.
fn keygen_report(
    key_id: KeyId,
    session: SessionId,
    outcome: Outcome<KeyGenOk>,
) -> wire::KeyGenResult {
    let (ok, f) = match outcome {
        Outcome::Ok(ok) => (Some(ok), Outcome::Ok(())),
        Outcome::Failed {
            error,
            culprits,
            evidence,
        } => (
            None,
            Outcome::Failed {
                error,
                culprits,
                evidence,
            },
        ),
    };
    let (error, culprits, evidence) = fail(f);
    wire::KeyGenResult {
        key_id: key_id.into(),
        session: session.0.to_vec(),
        public_key: ok
            .as_ref()
            .map(|o| o.public_key.clone())
            .unwrap_or_default(),
        transcript_hash: ok
            .as_ref()
            .map(|o| o.transcript_hash.to_vec())
            .unwrap_or_default(),
        error,
        culprits,
        evidence,
        public_key_package: ok.map(|o| o.public_key_package).unwrap_or_default(),
    }
}

impl From<TxMsg> for tx_body::Msg {
    fn from(m: TxMsg) -> Self {
        match m {
            TxMsg::KeyGen {
                key_id,
                scheme,
                threshold,
                parties,
            } => tx_body::Msg::KeyGen(wire::KeyGen {
                key_id: key_id.into(),
                scheme: scheme.as_str().into(),
                threshold,
                parties: parties.into_iter().map(String::from).collect(),
            }),
            TxMsg::KeySign {
                key_id,
                request_id,
                message,
                prehashed,
            } => tx_body::Msg::KeySign(wire::KeySign {
                key_id: key_id.into(),
                request_id: request_id.into(),
                message,
                prehashed,
            }),
            TxMsg::KeyDelete { key_id } => tx_body::Msg::KeyDelete(wire::KeyDelete {
                key_id: key_id.into(),
            }),
            TxMsg::KeyGenResult {
                key_id,
                session,
                outcome,
            } => tx_body::Msg::KeyGenResult(keygen_report(key_id, session, outcome)),
            TxMsg::ReshareResult {
                key_id,
                session,
                outcome,
            } => tx_body::Msg::ReshareResult(keygen_report(key_id, session, outcome)),
            TxMsg::KeyReshare {
                key_id,
                parties,
                threshold,
            } => tx_body::Msg::KeyReshare(wire::KeyReshare {
                key_id: key_id.into(),
                new_parties: parties.into_iter().map(String::from).collect(),
                new_threshold: threshold,
            }),
            TxMsg::SignResult {
                request_id,
                session,
                outcome,
                signing_package,
            } => {
                let (sig, f) = match outcome {
                    Outcome::Ok(s) => (s, Outcome::Ok(())),
                    Outcome::Failed {
                        error,
                        culprits,
                        evidence,
                    } => (
                        Vec::new(),
                        Outcome::Failed {
                            error,
                            culprits,
                            evidence,
                        },
                    ),
                };
                let (error, culprits, evidence) = fail(f);
                tx_body::Msg::SignResult(wire::SignResult {
                    request_id: request_id.into(),
                    session: session.0.to_vec(),
                    signature: sig,
                    error,
                    culprits,
                    evidence,
                    signing_package,
                })
            }
            TxMsg::KeyDeleted { key_id } => tx_body::Msg::KeyDeleted(wire::KeyDeleted {
                key_id: key_id.into(),
            }),
            TxMsg::Heartbeat => tx_body::Msg::Heartbeat(wire::Heartbeat {}),
            TxMsg::NodeJoin {
                node_id,
                public_key,
                p2p_addr,
            } => tx_body::Msg::NodeJoin(wire::NodeJoin {
                node_id: node_id.into(),
                public_key: public_key.to_vec(),
                p2p_addr,
            }),
            TxMsg::KeyAdmins { key_id, admins } => tx_body::Msg::KeyAdmins(wire::KeyAdmins {
                key_id: key_id.into(),
                admins: admins.iter().map(|a| a.to_vec()).collect(),
            }),
            TxMsg::ProposalVote {
                proposal_id,
                cancel,
            } => tx_body::Msg::ProposalVote(wire::ProposalVote {
                proposal_id,
                cancel,
            }),
            TxMsg::NodeRotateKey {
                node_id,
                public_key,
            } => tx_body::Msg::NodeRotateKey(wire::NodeRotateKey {
                node_id: node_id.into(),
                public_key: public_key.to_vec(),
            }),
            TxMsg::NodeRemove { node_id } => tx_body::Msg::NodeRemove(wire::NodeRemove {
                node_id: node_id.into(),
            }),
        }
    }
}

fn sign_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(TX_SIGN_PREFIX.len() + body.len());
    v.extend_from_slice(TX_SIGN_PREFIX);
    v.extend_from_slice(body);
    v
}

/// Builds and signs a transaction; returns its encoding.
pub fn sign_tx(key: &SigningKey, chain_id: &str, sequence: u64, msg: TxMsg) -> Vec<u8> {
    let body = wire::TxBody {
        chain_id: chain_id.to_owned(),
        sequence,
        msg: Some(msg.into()),
    }
    .encode_to_vec();
    let signature = key.sign(&sign_bytes(&body));
    wire::Tx {
        body,
        signer: key.verifying_key().to_bytes().to_vec(),
        signature: signature.to_bytes().to_vec(),
    }
    .encode_to_vec()
}

/// SHA-256 of an encoded tx.
pub fn tx_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl SignedTx {
    /// Decodes a tx, checks its signature (strict ed25519) and validates every field.
    /// Chain id, sequence and authorization are stateful checks left to the chain.
    pub fn decode(bytes: &[u8]) -> Result<SignedTx, DomainError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(invalid(
                "tx",
                format!("{} bytes exceeds the cap of {MAX_TX_BYTES}", bytes.len()),
            ));
        }
        let tx = wire::Tx::decode(bytes).map_err(|e| invalid("tx", format!("not a Tx: {e}")))?;
        // One encoding per tx: the tx hash (which seeds session ids and names the tx for
        // clients) cannot be changed by re-encoding, adding unknown fields or repeating one.
        if tx.encoded_len() != bytes.len() || tx.encode_to_vec() != bytes {
            return Err(invalid(
                "tx",
                "not canonically encoded (unknown, repeated or out-of-order fields)",
            ));
        }
        let signer = <[u8; 32]>::try_from(tx.signer.as_slice())
            .ok()
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(|| invalid("signer", "not a 32-byte ed25519 public key"))?;
        let signature = Signature::from_slice(&tx.signature)
            .map_err(|_| invalid("signature", "not a 64-byte ed25519 signature"))?;
        signer
            .verify_strict(&sign_bytes(&tx.body), &signature)
            .map_err(|_| DomainError::BadSignature)?;
        let body = wire::TxBody::decode(tx.body.as_slice())
            .map_err(|e| invalid("body", format!("not a TxBody: {e}")))?;
        if body.encode_to_vec() != tx.body {
            return Err(invalid(
                "body",
                "not canonically encoded (unknown, repeated or out-of-order fields)",
            ));
        }
        let msg = body
            .msg
            .ok_or_else(|| invalid("msg", "missing"))?
            .try_into()?;
        Ok(SignedTx {
            signer,
            chain_id: body.chain_id,
            sequence: body.sequence,
            msg,
            hash: tx_hash(bytes),
        })
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests;
