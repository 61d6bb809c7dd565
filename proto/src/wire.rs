//! Raw protobuf types, written to match `proto/seqmpc/v1/*.proto` field for field.
//!
//! These are what goes over the wire. Logic never uses them directly: see [`crate::tx`] and [`crate::ids`],
//! whose `TryFrom` conversions validate every field.

/// Signed transaction envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tx {
    /// Encoded [`TxBody`].
    #[prost(bytes = "vec", tag = "1")]
    pub body: Vec<u8>,
    /// 32-byte ed25519 public key of the signer.
    #[prost(bytes = "vec", tag = "2")]
    pub signer: Vec<u8>,
    /// 64-byte ed25519 signature over the sign bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

/// Body of a transaction.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxBody {
    /// Chain the tx is bound to.
    #[prost(string, tag = "1")]
    pub chain_id: String,
    /// Per-signer sequence number.
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
    /// The message.
    #[prost(
        oneof = "tx_body::Msg",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19"
    )]
    pub msg: Option<tx_body::Msg>,
}

/// Nested types of [`TxBody`].
pub mod tx_body {
    /// The message carried by a transaction.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Msg {
        /// Request a new key.
        #[prost(message, tag = "10")]
        KeyGen(super::KeyGen),
        /// Request a signature.
        #[prost(message, tag = "11")]
        KeySign(super::KeySign),
        /// Request deletion of a key.
        #[prost(message, tag = "12")]
        KeyDelete(super::KeyDelete),
        /// A node's keygen outcome.
        #[prost(message, tag = "13")]
        KeyGenResult(super::KeyGenResult),
        /// A node's signing outcome.
        #[prost(message, tag = "14")]
        SignResult(super::SignResult),
        /// A node's deletion attestation.
        #[prost(message, tag = "15")]
        KeyDeleted(super::KeyDeleted),
        /// A node says it is up (liveness for signer choice).
        #[prost(message, tag = "16")]
        Heartbeat(super::Heartbeat),
        /// A registry account admits a new MPC node.
        #[prost(message, tag = "17")]
        NodeJoin(super::NodeJoin),
        /// Request resharing of a key to a new committee and/or threshold (or a refresh).
        #[prost(message, tag = "18")]
        KeyReshare(super::KeyReshare),
        /// A new party's resharing outcome (same fields as a keygen outcome).
        #[prost(message, tag = "19")]
        ReshareResult(super::KeyGenResult),
    }
}

/// Request resharing of a READY key: same public key, new committee and/or threshold. The
/// current committee and threshold again mean a refresh (new shares, proactive security).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyReshare {
    /// Key id.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// The new committee.
    #[prost(string, repeated, tag = "2")]
    pub new_parties: Vec<String>,
    /// The new threshold.
    #[prost(uint32, tag = "3")]
    pub new_threshold: u32,
}

/// Request a new key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyGen {
    /// Key id chosen by the requester.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// Scheme name, e.g. `frost-ed25519`.
    #[prost(string, tag = "2")]
    pub scheme: String,
    /// Signing threshold t.
    #[prost(uint32, tag = "3")]
    pub threshold: u32,
    /// Node ids of the committee; empty means every registered node.
    #[prost(string, repeated, tag = "4")]
    pub parties: Vec<String>,
}

/// Request a signature.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeySign {
    /// Key to sign with.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// Client-chosen unique request id.
    #[prost(string, tag = "2")]
    pub request_id: String,
    /// Message to sign.
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
    /// The message is a 32-byte digest, signed as is (ECDSA schemes only); otherwise the
    /// scheme hashes the message (SHA-256 for `cggmp24-secp256k1`).
    #[prost(bool, tag = "4")]
    pub prehashed: bool,
}

/// Request deletion of a key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyDelete {
    /// Key to delete.
    #[prost(string, tag = "1")]
    pub key_id: String,
}

/// A node's keygen outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyGenResult {
    /// Key id.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// 32-byte session id.
    #[prost(bytes = "vec", tag = "2")]
    pub session: Vec<u8>,
    /// Group public key (success).
    #[prost(bytes = "vec", tag = "3")]
    pub public_key: Vec<u8>,
    /// Hash of the broadcast transcript (success).
    #[prost(bytes = "vec", tag = "4")]
    pub transcript_hash: Vec<u8>,
    /// Failure reason (failure).
    #[prost(string, tag = "5")]
    pub error: String,
    /// Parties blamed (failure).
    #[prost(string, repeated, tag = "6")]
    pub culprits: Vec<String>,
    /// The culprits' signed p2p messages to the reporter that prove the blame (failure; may
    /// be empty). The chain checks them (see `seqmpc_module::evidence`).
    #[prost(message, repeated, tag = "7")]
    pub evidence: Vec<SignedP2pMessage>,
    /// FROST schemes (success): frost's serialized `PublicKeyPackage` (the group key and
    /// every party's verifying share), which lets the chain check a signature share.
    #[prost(bytes = "vec", tag = "8")]
    pub public_key_package: Vec<u8>,
}

/// A p2p message as its sender signed it ([`p2p_signing_digest`]), quoted as evidence.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignedP2pMessage {
    /// Sender node id.
    #[prost(string, tag = "1")]
    pub from: String,
    /// Recipient node id.
    #[prost(string, tag = "2")]
    pub to: String,
    /// The encoded [`P2pEnvelope`] as sent.
    #[prost(bytes = "vec", tag = "3")]
    pub envelope: Vec<u8>,
    /// Ed25519 signature of the sender's node key over [`p2p_signing_digest`].
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
}

/// Domain of the p2p message signatures: never a tx sign doc (those start with a protobuf tag).
pub const P2P_SIGNING_DOMAIN: &[u8] = b"seqmpc/p2p-message/v1\0";

/// What a node signs for each p2p message it sends: SHA-256 over the domain, the sender and
/// recipient ids (each length-prefixed) and the message bytes. Session ids are derived from the
/// chain id, so a signed message cannot be quoted on another chain or in another session.
pub fn p2p_signing_digest(from: &str, to: &str, message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(P2P_SIGNING_DOMAIN);
    for id in [from, to] {
        h.update((id.len() as u64).to_be_bytes());
        h.update(id.as_bytes());
    }
    h.update(message);
    h.finalize().into()
}

/// A node's signing outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignResult {
    /// Request id.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// 32-byte session id.
    #[prost(bytes = "vec", tag = "2")]
    pub session: Vec<u8>,
    /// Signature (success).
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
    /// Failure reason (failure).
    #[prost(string, tag = "4")]
    pub error: String,
    /// Parties blamed (failure).
    #[prost(string, repeated, tag = "5")]
    pub culprits: Vec<String>,
    /// The culprits' signed p2p messages to the reporter that prove the blame (failure; may
    /// be empty): FROST signature shares.
    #[prost(message, repeated, tag = "6")]
    pub evidence: Vec<SignedP2pMessage>,
    /// The FROST `SigningPackage` the quoted shares were computed for (failure; may be empty).
    #[prost(bytes = "vec", tag = "7")]
    pub signing_package: Vec<u8>,
}

/// A node's attestation that it deleted its share of a key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyDeleted {
    /// Key id.
    #[prost(string, tag = "1")]
    pub key_id: String,
}

/// A node's periodic liveness signal; the chain picks signers among recently seen nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Heartbeat {}

/// A registry account admits a new MPC node into the node registry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeJoin {
    /// The new node's id, e.g. `node4`.
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// Its 32-byte ed25519 node public key (also its libp2p identity).
    #[prost(bytes = "vec", tag = "2")]
    pub public_key: Vec<u8>,
    /// Its libp2p multiaddr, e.g. `/ip4/127.0.0.1/tcp/26741`.
    #[prost(string, tag = "3")]
    pub p2p_addr: String,
}

/// Envelope of every p2p message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct P2pEnvelope {
    /// 32-byte session id.
    #[prost(bytes = "vec", tag = "1")]
    pub session: Vec<u8>,
    /// Payload.
    #[prost(
        oneof = "p2p_envelope::Payload",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22"
    )]
    pub payload: Option<p2p_envelope::Payload>,
}

/// Nested types of [`P2pEnvelope`].
pub mod p2p_envelope {
    /// A p2p payload.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Payload {
        /// Coordinator asks a party to prepare a keygen.
        #[prost(message, tag = "10")]
        KeygenPrepare(super::KeyGenPrepare),
        /// Party answers the coordinator.
        #[prost(message, tag = "11")]
        KeygenReady(super::KeyGenReady),
        /// Coordinator starts the DKG.
        #[prost(message, tag = "12")]
        KeygenStart(super::KeyGenStart),
        /// DKG round 1 (broadcast).
        #[prost(message, tag = "13")]
        DkgRound1(super::DkgRound1),
        /// DKG round 2 (point to point).
        #[prost(message, tag = "14")]
        DkgRound2(super::DkgRound2),
        /// Signing round 1: nonce commitments.
        #[prost(message, tag = "15")]
        SignRound1(super::SignRound1),
        /// Signing round 2: signature share.
        #[prost(message, tag = "16")]
        SignRound2(super::SignRound2),
        /// The sender aborts the session.
        #[prost(message, tag = "17")]
        Abort(super::SessionAbort),
        /// A CGGMP24 protocol message (keygen, aux info or signing).
        #[prost(message, tag = "18")]
        Cggmp(super::CggmpPayload),
        /// CGGMP24 signing: which presignature the signers use, or the full protocol.
        #[prost(message, tag = "19")]
        SignPlan(super::SignPlan),
        /// CGGMP24: the leader of a signer subset starts generating a presignature.
        #[prost(message, tag = "20")]
        PresignStart(super::PresignStart),
        /// Resharing: a dealer's deal to one new party (point to point, Noise-encrypted).
        #[prost(message, tag = "21")]
        ReshareDeal(super::ReshareDeal),
        /// Resharing, CGGMP24: the aux info a new party can reuse for the new committee.
        #[prost(message, tag = "22")]
        ReshareAux(super::ReshareAux),
    }
}

/// Coordinator asks a party to prepare a keygen.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyGenPrepare {
    /// Key id.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// Scheme name.
    #[prost(string, tag = "2")]
    pub scheme: String,
    /// Threshold.
    #[prost(uint32, tag = "3")]
    pub threshold: u32,
    /// Committee.
    #[prost(string, repeated, tag = "4")]
    pub parties: Vec<String>,
}

/// A party's answer to [`KeyGenPrepare`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyGenReady {
    /// Set when the key is READY locally already.
    #[prost(bytes = "vec", tag = "1")]
    pub existing_public_key: Vec<u8>,
    /// Set when the party refuses.
    #[prost(string, tag = "2")]
    pub error: String,
    /// CGGMP24: fingerprint of the committee aux info this party can reuse (empty: none).
    #[prost(bytes = "vec", tag = "3")]
    pub aux_fingerprint: Vec<u8>,
}

/// Coordinator starts the DKG.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyGenStart {
    /// CGGMP24: every party offered the same aux info; reuse it instead of generating.
    #[prost(bool, tag = "1")]
    pub reuse_aux: bool,
}

/// DKG round 1 package.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DkgRound1 {
    /// Serialized package.
    #[prost(bytes = "vec", tag = "1")]
    pub package: Vec<u8>,
}

/// DKG round 2 package.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DkgRound2 {
    /// Serialized package.
    #[prost(bytes = "vec", tag = "1")]
    pub package: Vec<u8>,
}

/// Signing round 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignRound1 {
    /// Serialized commitments.
    #[prost(bytes = "vec", tag = "1")]
    pub commitments: Vec<u8>,
}

/// Signing round 2.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignRound2 {
    /// Serialized signature share.
    #[prost(bytes = "vec", tag = "1")]
    pub share: Vec<u8>,
    /// The 32-byte hash of the key generation and the `SigningPackage` the share was
    /// computed for (`seqmpc_module::protocol::frost_sign::package_hash`): signed with the
    /// message, it lets the chain check the share against that package.
    #[prost(bytes = "vec", tag = "2")]
    pub package_hash: Vec<u8>,
}

/// Abort notice.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionAbort {
    /// Reason.
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// CGGMP24 signing plan. From the aggregator (the first signer): sign with the presignature
/// `presignature_id` (the session id that generated it), or run the full protocol when empty.
/// From another signer: it does not hold that presignature; every signer runs the full protocol.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignPlan {
    /// 32-byte presignature id, or empty.
    #[prost(bytes = "vec", tag = "1")]
    pub presignature_id: Vec<u8>,
}

/// The leader of a signer subset (its first node) asks the other signers to generate one
/// presignature of a key with it; the envelope's session id becomes the presignature's id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PresignStart {
    /// Key id.
    #[prost(string, tag = "1")]
    pub key_id: String,
    /// The signers, sorted; exactly the key's threshold.
    #[prost(string, repeated, tag = "2")]
    pub signers: Vec<String>,
    /// The key generation the presignature belongs to (its keygen session id, 32 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub generation: Vec<u8>,
}

/// A CGGMP24 protocol message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CggmpPayload {
    /// `[phase, routing, serialized cggmp24 message]` (the module's `CggmpMsg::to_bytes`).
    #[prost(bytes = "vec", tag = "1")]
    pub msg: Vec<u8>,
}

/// Resharing: one dealer's deal to one new party (see docs/reshare.md).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReshareDeal {
    /// Feldman commitment to the dealer's polynomial (the same for every new party).
    #[prost(bytes = "vec", tag = "1")]
    pub commitment: Vec<u8>,
    /// The old committee's public shares and group key, as the dealer holds them.
    #[prost(bytes = "vec", tag = "2")]
    pub old_public: Vec<u8>,
    /// The dealer's polynomial evaluated at the recipient's point (secret).
    #[prost(bytes = "vec", tag = "3")]
    pub share: Vec<u8>,
}

/// Resharing of a CGGMP24 key: a new party's offer of the new committee's aux info, to every
/// new party. All offer the same: reused; otherwise the new parties generate aux info together.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReshareAux {
    /// Fingerprint of the aux info this party holds for the new committee (empty: none).
    #[prost(bytes = "vec", tag = "1")]
    pub fingerprint: Vec<u8>,
}
