//! JSON decoding of cggmp24 messages and of stored CGGMP24 values, guarded against a panic in
//! fast-paillier 0.3.2.
//!
//! fast-paillier serializes its big integers as `{"radix": 16, "value": "<digits>"}` and, when
//! deserializing, passes the radix it read to num-bigint's `from_str_radix`, which **panics**
//! for a radix outside 2..=36 (num-bigint 0.4 `biguint/convert.rs`). Paillier keys, ring-Pedersen
//! parameters and ciphertexts in aux-info and signing messages, aux shares and prime sets all
//! hold such integers, so a peer could crash a node with `{"radix": 1, "value": "0"}` (found by
//! `protocol::no_panic`). [`from_slice`] refuses any such object before serde sees it. The
//! cost is one extra parse of the document into a `serde_json::Value`.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Radixes num-bigint accepts without panicking.
const RADIX: std::ops::RangeInclusive<u64> = 2..=36;

/// `serde_json::from_slice`, refusing big-integer objects whose radix would panic the decoder.
pub(crate) fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let doc: Value = serde_json::from_slice(bytes)?;
    let mut stack = vec![&doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if let (Some(radix), true) = (o.get("radix"), o.contains_key("value")) {
                    if !radix.as_u64().is_some_and(|r| RADIX.contains(&r)) {
                        return Err(serde::de::Error::custom(format!(
                            "integer with radix {radix}, expected 2..=36"
                        )));
                    }
                }
                stack.extend(o.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    serde_json::from_slice(bytes)
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn from_slice__should_refuse_a_radix_that_panics_num_bigint() {
        for bad in [
            br#"{"radix": 1, "value": "0"}"#.as_slice(),
            br#"[{"a": {"radix": 37, "value": "z"}}]"#,
            br#"{"radix": -1, "value": "0"}"#,
            br#"{"radix": "16", "value": "0"}"#,
        ] {
            let e = from_slice::<Value>(bad).unwrap_err();
            assert!(e.to_string().contains("radix"), "{e}");
        }
        let ok: Value = from_slice(br#"{"radix": 16, "value": "ff", "n": [1]}"#).unwrap();
        assert_eq!(ok["value"], "ff");
    }
}
