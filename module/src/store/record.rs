//! Key records, their redacted views, and the plaintext encoding that is sealed on disk.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::proto::{KeyId, NodeId, Scheme, SessionId};

/// Where a key's share stands on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShareStatus {
    /// Key generation was prepared or is running; no share yet.
    Pending,
    /// The share is stored and usable.
    Ready,
    /// Key generation failed on this node; see [`KeyRecord::error`].
    Error,
}

impl ShareStatus {
    /// Byte in the sealed plaintext. Part of schema v1: do not change without a migration.
    fn to_byte(self) -> u8 {
        match self {
            ShareStatus::Pending => 0,
            ShareStatus::Ready => 1,
            ShareStatus::Error => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, String> {
        match b {
            0 => Ok(ShareStatus::Pending),
            1 => Ok(ShareStatus::Ready),
            2 => Ok(ShareStatus::Error),
            other => Err(format!("unknown share status byte {other}")),
        }
    }
}

/// This node's secret share of a threshold key: a serialized FROST `KeyPackage`.
///
/// Zeroized on drop; `Debug` is redacted; there is no `Display` or `Serialize`, so the bytes only
/// leave through [`SecretShare::expose`].
#[derive(Clone)]
pub struct SecretShare(Zeroizing<Vec<u8>>);

impl SecretShare {
    /// Wraps the serialized share. Pass a `Vec` you own: it is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretShare(Zeroizing::new(bytes))
    }

    /// The serialized share. Do not log it or keep copies that are not zeroized.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretShare")
            .field(&format_args!("<redacted>"))
            .finish()
    }
}

/// Everything this node knows about one key, including its secret share once it has one.
///
/// `Debug` shows every field except the share, which prints as `<redacted>`.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    /// The key's id, chosen by the requester.
    pub key_id: KeyId,
    /// Session (execution id) of the key generation that produced this record.
    pub session: SessionId,
    /// Threshold signature scheme.
    pub scheme: Scheme,
    /// Number of parties needed to sign.
    pub threshold: u32,
    /// The parties holding shares of this key, this node included.
    pub parties: Vec<NodeId>,
    /// The group public key, serialized; empty until known.
    pub public_key: Vec<u8>,
    /// Where the share stands.
    pub status: ShareStatus,
    /// Why key generation failed, when `status` is [`ShareStatus::Error`].
    pub error: Option<String>,
    /// Record generation, chosen by the caller (e.g. bumped on each update). It is stored in
    /// clear in the value header and bound into the ciphertext's associated data.
    pub generation: u64,
    /// This node's secret share, once key generation has finished.
    pub share: Option<SecretShare>,
}

/// A [`KeyRecord`] without its secret, for status views and JSON output.
#[derive(Clone, Debug, Serialize)]
pub struct KeyRecordView {
    /// The key's id.
    pub key_id: KeyId,
    /// Session id of the key generation, hex.
    pub session: String,
    /// Threshold signature scheme.
    pub scheme: Scheme,
    /// Number of parties needed to sign.
    pub threshold: u32,
    /// The parties holding shares.
    pub parties: Vec<NodeId>,
    /// Group public key, hex; empty until known.
    pub public_key: String,
    /// Where the share stands.
    pub status: ShareStatus,
    /// Why key generation failed, if it did.
    pub error: Option<String>,
    /// Record generation.
    pub generation: u64,
    /// Whether this node holds a share for the key (the share itself is never shown).
    pub has_share: bool,
}

impl KeyRecord {
    /// The record without its secret share.
    pub fn view(&self) -> KeyRecordView {
        KeyRecordView {
            key_id: self.key_id.clone(),
            session: hex::encode(self.session.0),
            scheme: self.scheme,
            threshold: self.threshold,
            parties: self.parties.clone(),
            public_key: hex::encode(&self.public_key),
            status: self.status,
            error: self.error.clone(),
            generation: self.generation,
            has_share: self.share.is_some(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plaintext encoding (schema v1).
//
// Do not change without a migration: records already on disk are decoded with this layout.
// Every variable-length field is a u64 big-endian length followed by its bytes; options are a
// 0/1 flag byte followed by the value when 1. Fields, in order:
//   key_id, session (32 bytes, no length), scheme name, threshold (u32 BE),
//   parties (u64 BE count, then each id), public_key, status (1 byte, see ShareStatus::to_byte),
//   error (option of string), generation (u64 BE), share (option of bytes).
// The buffer is sized exactly up front, so writing the share never reallocates (a reallocation
// would leave a copy of the share in freed memory that zeroize cannot reach).
// ---------------------------------------------------------------------------------------------

const LEN: usize = 8;

/// Exact length of [`encode_into`]'s output for `rec`.
pub(super) fn encoded_len(rec: &KeyRecord) -> usize {
    let var = |n: usize| LEN + n;
    var(rec.key_id.as_str().len())
        + 32
        + var(rec.scheme.as_str().len())
        + 4
        + LEN
        + rec
            .parties
            .iter()
            .map(|p| var(p.as_str().len()))
            .sum::<usize>()
        + var(rec.public_key.len())
        + 1
        + 1
        + rec.error.as_ref().map_or(0, |e| var(e.len()))
        + 8
        + 1
        + rec.share.as_ref().map_or(0, |s| var(s.expose().len()))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

/// Appends the plaintext encoding of `rec` to `out`. Reserve [`encoded_len`] bytes first.
pub(super) fn encode_into(rec: &KeyRecord, out: &mut Vec<u8>) {
    put_bytes(out, rec.key_id.as_str().as_bytes());
    out.extend_from_slice(&rec.session.0);
    put_bytes(out, rec.scheme.as_str().as_bytes());
    out.extend_from_slice(&rec.threshold.to_be_bytes());
    out.extend_from_slice(&(rec.parties.len() as u64).to_be_bytes());
    for p in &rec.parties {
        put_bytes(out, p.as_str().as_bytes());
    }
    put_bytes(out, &rec.public_key);
    out.push(rec.status.to_byte());
    match &rec.error {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            put_bytes(out, e.as_bytes());
        }
    }
    out.extend_from_slice(&rec.generation.to_be_bytes());
    match &rec.share {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.expose());
        }
    }
}

/// Bounds-checked reader over the plaintext; every failure is an error, never a panic.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or_else(|| {
            format!(
                "truncated at {what}: need {n} bytes, have {}",
                self.rest.len()
            )
        })?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let b = self.take(N, what)?;
        <[u8; N]>::try_from(b).map_err(|_| format!("bad length at {what}"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        let [b] = self.array::<1>(what)?;
        Ok(b)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array::<8>(what).map(u64::from_be_bytes)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u64(what)?;
        let n = usize::try_from(n).map_err(|_| format!("length {n} of {what} too large"))?;
        self.take(n, what)
    }

    fn str(&mut self, what: &str) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes(what)?).map_err(|e| format!("{what} is not UTF-8: {e}"))
    }

    fn flag(&mut self, what: &str) -> Result<bool, String> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("bad option flag {other} at {what}")),
        }
    }
}

/// Decodes a plaintext written by [`encode_into`]. The error says which field is bad.
pub(super) fn decode(bytes: &[u8]) -> Result<KeyRecord, String> {
    let mut r = Reader { rest: bytes };
    let key_id = KeyId::new(r.str("key_id")?).map_err(|e| e.to_string())?;
    let session = SessionId(r.array::<32>("session")?);
    let scheme = r
        .str("scheme")?
        .parse::<Scheme>()
        .map_err(|e| e.to_string())?;
    let threshold = u32::from_be_bytes(r.array::<4>("threshold")?);
    let n_parties = r.u64("parties")?;
    let mut parties = Vec::new();
    for _ in 0..n_parties {
        parties.push(NodeId::new(r.str("party")?).map_err(|e| e.to_string())?);
    }
    let public_key = r.bytes("public_key")?.to_vec();
    let status = ShareStatus::from_byte(r.u8("status")?)?;
    let error = match r.flag("error")? {
        false => None,
        true => Some(r.str("error")?.to_owned()),
    };
    let generation = r.u64("generation")?;
    let share = match r.flag("share")? {
        false => None,
        // `to_vec` allocates exactly once, straight into the zeroizing wrapper.
        true => Some(SecretShare::new(r.bytes("share")?.to_vec())),
    };
    if !r.rest.is_empty() {
        return Err(format!("{} trailing bytes", r.rest.len()));
    }
    Ok(KeyRecord {
        key_id,
        session,
        scheme,
        threshold,
        parties,
        public_key,
        status,
        error,
        generation,
        share,
    })
}

#[cfg(test)]
#[allow(non_snake_case)]
pub(super) mod tests {
    use super::*;

    /// A full record; the share is `share` and the public key `[0x11; 32]`.
    pub(crate) fn sample(key: &str, share: &[u8]) -> KeyRecord {
        KeyRecord {
            key_id: KeyId::new(key).unwrap(),
            session: SessionId([0x5e; 32]),
            scheme: Scheme::FrostEd25519,
            threshold: 2,
            parties: ["node0", "node1", "node2"]
                .into_iter()
                .map(|n| NodeId::new(n).unwrap())
                .collect(),
            public_key: vec![0x11; 32],
            status: ShareStatus::Ready,
            error: None,
            generation: 3,
            share: Some(SecretShare::new(share.to_vec())),
        }
    }

    fn assert_same(a: &KeyRecord, b: &KeyRecord) {
        assert_eq!(format!("{:?}", a.view()), format!("{:?}", b.view()));
        assert_eq!(
            a.share.as_ref().map(|s| s.expose().to_vec()),
            b.share.as_ref().map(|s| s.expose().to_vec())
        );
    }

    #[test]
    fn record_codec__should_roundtrip_with_exact_length() {
        let mut recs = vec![sample("k1", &[0xab; 100])];
        let mut pending = sample("k2", &[]);
        pending.share = None;
        pending.status = ShareStatus::Error;
        pending.error = Some("peer node2 timed out".into());
        pending.public_key.clear();
        recs.push(pending);
        for rec in recs {
            let mut out = Vec::with_capacity(encoded_len(&rec));
            encode_into(&rec, &mut out);
            assert_eq!(out.len(), encoded_len(&rec));
            assert_same(&decode(&out).unwrap(), &rec);
        }
    }

    #[test]
    fn record_codec__should_reject_every_truncation_and_trailing_bytes() {
        let rec = sample("k1", &[7; 40]);
        let mut out = Vec::new();
        encode_into(&rec, &mut out);
        for n in 0..out.len() {
            assert!(decode(&out[..n]).is_err(), "truncation at {n} accepted");
        }
        out.push(0);
        assert!(decode(&out).unwrap_err().contains("trailing"));
    }

    #[test]
    fn record_codec__should_reject_huge_lengths_without_panicking() {
        let mut out = Vec::new();
        out.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode(&out).is_err());
    }

    #[test]
    fn share_status__should_serialize_in_upper_case() {
        let json =
            serde_json::to_string(&[ShareStatus::Pending, ShareStatus::Ready, ShareStatus::Error])
                .unwrap();
        assert_eq!(json, r#"["PENDING","READY","ERROR"]"#);
        let back: ShareStatus = serde_json::from_str(r#""READY""#).unwrap();
        assert_eq!(back, ShareStatus::Ready);
    }

    #[test]
    fn key_record__should_never_show_the_share_in_debug_or_view() {
        let share = [0xc3u8; 16];
        let rec = sample("k1", &share);
        let hex_share = hex::encode(share);
        let decimal = share.map(|b| b.to_string()).join(", ");
        let upper_hex = hex_share.to_uppercase();
        let outputs = [
            format!("{rec:?}"),
            format!("{rec:#?}"),
            format!("{:?}", rec.share),
            format!("{:?}", rec.view()),
            serde_json::to_string(&rec.view()).unwrap(),
        ];
        for out in outputs {
            assert!(!out.contains(&hex_share), "{out}");
            assert!(!out.contains(&upper_hex), "{out}");
            assert!(!out.contains(&decimal), "{out}");
            assert!(!out.contains("195, 195"), "{out}");
        }
        assert!(format!("{rec:?}").contains("<redacted>"));
        let view = serde_json::to_value(rec.view()).unwrap();
        assert_eq!(view["status"], "READY");
        assert_eq!(view["scheme"], "frost-ed25519");
        assert_eq!(view["session"], hex::encode([0x5e; 32]));
        assert_eq!(view["has_share"], true);
    }
}
