//! Request parameters, decoded the way CometBFT's RPC decodes them.
//!
//! URI (`GET /route?name=value`): strings may be quoted (`path="/key/k1"`), bytes are `0x`-hex
//! or a quoted string taken verbatim (`tx="k=v"`), integers plain or quoted.
//! JSON-RPC (`POST`): named (object) or positional (array) params; `[]byte` params (`tx`,
//! `hash`) are base64 as Go's JSON encodes them, `HexBytes` (`data`) is hex; int64 may be a
//! string or a number. Hashes are also accepted as 64 hex digits for convenience.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use super::RpcError;

/// Params of one call.
pub enum Params {
    /// From a query string (percent-decoded).
    Uri(BTreeMap<String, String>),
    /// From JSON-RPC (positional params already mapped to names).
    Json(serde_json::Map<String, Value>),
}

fn invalid(msg: String) -> RpcError {
    RpcError::invalid_params(msg)
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
}

fn decode_hex(name: &str, s: &str) -> Result<Vec<u8>, RpcError> {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    hex::decode(s).map_err(|e| invalid(format!("{name}: bad hex: {e}")))
}

fn decode_b64(name: &str, s: &str) -> Result<Vec<u8>, RpcError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| invalid(format!("{name}: bad base64: {e}")))
}

impl Params {
    /// Builds named params from a JSON-RPC `params` value and the route's argument names.
    pub fn from_json(params: Option<Value>, names: &[&str]) -> Result<Params, RpcError> {
        match params {
            None | Some(Value::Null) => Ok(Params::Json(serde_json::Map::new())),
            Some(Value::Object(m)) => Ok(Params::Json(m)),
            Some(Value::Array(a)) => {
                if a.len() > names.len() {
                    return Err(invalid(format!(
                        "expected at most {} params, got {}",
                        names.len(),
                        a.len()
                    )));
                }
                Ok(Params::Json(
                    names.iter().map(|n| n.to_string()).zip(a).collect(),
                ))
            }
            Some(other) => Err(invalid(format!(
                "params must be an object or an array, got {other}"
            ))),
        }
    }

    fn raw(&self, name: &str) -> Option<RawParam<'_>> {
        match self {
            Params::Uri(m) => m.get(name).map(|s| RawParam::Uri(s.as_str())),
            Params::Json(m) => match m.get(name) {
                None | Some(Value::Null) => None,
                Some(v) => Some(RawParam::Json(v)),
            },
        }
    }

    /// A `[]byte` param (base64 in JSON; `0x`-hex or quoted string in a URI).
    pub fn bytes(&self, name: &str) -> Result<Option<Vec<u8>>, RpcError> {
        match self.raw(name) {
            None => Ok(None),
            Some(RawParam::Uri(s)) => uri_bytes(name, s).map(Some),
            Some(RawParam::Json(Value::String(s))) => decode_b64(name, s).map(Some),
            Some(RawParam::Json(v)) => Err(invalid(format!(
                "{name}: expected a base64 string, got {v}"
            ))),
        }
    }

    /// A `HexBytes` param (hex in JSON, with or without `0x`; `0x`-hex or quoted string in a
    /// URI).
    pub fn hex_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, RpcError> {
        match self.raw(name) {
            None => Ok(None),
            Some(RawParam::Uri(s)) => uri_bytes(name, s).map(Some),
            Some(RawParam::Json(Value::String(s))) => decode_hex(name, s).map(Some),
            Some(RawParam::Json(v)) => {
                Err(invalid(format!("{name}: expected a hex string, got {v}")))
            }
        }
    }

    /// A tx hash: 64 hex digits (optionally `0x`) or, in JSON, base64 of 32 bytes.
    pub fn hash(&self, name: &str) -> Result<Option<[u8; 32]>, RpcError> {
        let bytes = match self.raw(name) {
            None => return Ok(None),
            Some(RawParam::Uri(s)) => {
                let s = unquote(s).unwrap_or(s);
                decode_hex(name, s)?
            }
            Some(RawParam::Json(Value::String(s))) => {
                let bare = s.strip_prefix("0x").unwrap_or(s);
                if bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit()) {
                    decode_hex(name, bare)?
                } else {
                    decode_b64(name, s)?
                }
            }
            Some(RawParam::Json(v)) => {
                return Err(invalid(format!("{name}: expected a string, got {v}")))
            }
        };
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Some)
            .map_err(|_| invalid(format!("{name}: expected 32 bytes, got {}", bytes.len())))
    }

    /// A string param.
    pub fn string(&self, name: &str) -> Result<Option<String>, RpcError> {
        match self.raw(name) {
            None => Ok(None),
            Some(RawParam::Uri(s)) => match unquote(s) {
                Some(inner) => serde_json::from_str::<String>(&format!("\"{inner}\""))
                    .map(Some)
                    .or_else(|_| Ok(Some(inner.to_owned()))),
                None if s.starts_with("0x") => {
                    let b = decode_hex(name, s)?;
                    String::from_utf8(b)
                        .map(Some)
                        .map_err(|_| invalid(format!("{name}: not UTF-8")))
                }
                None => Ok(Some(s.to_owned())),
            },
            Some(RawParam::Json(Value::String(s))) => Ok(Some(s.clone())),
            Some(RawParam::Json(v)) => Err(invalid(format!("{name}: expected a string, got {v}"))),
        }
    }

    /// An int64 param (number or decimal string).
    pub fn int(&self, name: &str) -> Result<Option<i64>, RpcError> {
        let parse = |s: &str| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| invalid(format!("{name}: expected an integer, got {s:?}")))
        };
        match self.raw(name) {
            None => Ok(None),
            Some(RawParam::Uri(s)) => {
                let s = unquote(s).unwrap_or(s);
                if s.is_empty() {
                    return Ok(None);
                }
                parse(s).map(Some)
            }
            Some(RawParam::Json(Value::String(s))) => parse(s).map(Some),
            Some(RawParam::Json(Value::Number(n))) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{name}: expected an integer, got {n}"))),
            Some(RawParam::Json(v)) => {
                Err(invalid(format!("{name}: expected an integer, got {v}")))
            }
        }
    }

    /// A bool param.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.raw(name) {
            None => Ok(None),
            Some(RawParam::Uri(s)) => match unquote(s).unwrap_or(s) {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                other => Err(invalid(format!(
                    "{name}: expected true or false, got {other:?}"
                ))),
            },
            Some(RawParam::Json(Value::Bool(b))) => Ok(Some(*b)),
            Some(RawParam::Json(v)) => Err(invalid(format!("{name}: expected a bool, got {v}"))),
        }
    }
}

enum RawParam<'a> {
    Uri(&'a str),
    Json(&'a Value),
}

fn uri_bytes(name: &str, s: &str) -> Result<Vec<u8>, RpcError> {
    if s.starts_with("0x") || s.starts_with("0X") {
        return decode_hex(name, s);
    }
    match unquote(s) {
        Some(inner) => Ok(inner.as_bytes().to_vec()),
        None => Err(invalid(format!(
            "{name}: expected 0x-prefixed hex or a quoted string, got {s:?}"
        ))),
    }
}

/// Splits a request target into its path and percent-decoded query params.
pub fn parse_target(target: &str) -> Result<(String, BTreeMap<String, String>), RpcError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut params = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok((percent_decode(path)?, params))
}

fn percent_decode(s: &str) -> Result<String, RpcError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| invalid(format!("bad percent-encoding in {s:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("{s:?} is not UTF-8 once decoded")))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn params__should_decode_uri_like_cometbft() {
        let (path, q) =
            parse_target("/abci_query?path=%22/key/k1%22&data=0x6b31&height=%225%22").unwrap();
        assert_eq!(path, "/abci_query");
        let p = Params::Uri(q);
        assert_eq!(p.string("path").unwrap().unwrap(), "/key/k1");
        assert_eq!(p.hex_bytes("data").unwrap().unwrap(), b"k1");
        assert_eq!(p.int("height").unwrap(), Some(5));
        let (_, q) = parse_target("/broadcast_tx_sync?tx=%22a=b%22").unwrap();
        assert_eq!(Params::Uri(q).bytes("tx").unwrap().unwrap(), b"a=b");
        let (_, q) = parse_target("/broadcast_tx_sync?tx=0xzz").unwrap();
        assert!(Params::Uri(q).bytes("tx").is_err());
    }

    #[test]
    fn params__should_decode_json_named_and_positional() {
        let p = Params::from_json(
            Some(serde_json::json!({"tx": "YT1i", "height": "7"})),
            &["tx"],
        )
        .unwrap();
        assert_eq!(p.bytes("tx").unwrap().unwrap(), b"a=b");
        assert_eq!(p.int("height").unwrap(), Some(7));
        let p =
            Params::from_json(Some(serde_json::json!(["/p", "6b31"])), &["path", "data"]).unwrap();
        assert_eq!(p.hex_bytes("data").unwrap().unwrap(), b"k1");
        let h = "AB".repeat(32);
        let p = Params::from_json(Some(serde_json::json!({ "hash": h })), &["hash"]).unwrap();
        assert_eq!(p.hash("hash").unwrap().unwrap(), [0xAB; 32]);
    }
}
