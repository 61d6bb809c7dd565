//! Block timestamps: the wall clock as a protobuf `Timestamp`, and CometBFT's RFC 3339 rendering.

use std::time::{SystemTime, UNIX_EPOCH};

use tendermint_proto::google::protobuf::Timestamp;

/// Genesis time sent in `InitChain`: fixed, so every app (and every replay) sees the same one.
/// 2024-01-01T00:00:00Z.
pub const GENESIS_TIME: Timestamp = Timestamp {
    seconds: 1_704_067_200,
    nanos: 0,
};

/// The wall clock now.
pub fn now() -> Timestamp {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        },
        // A clock before 1970: fall back to the genesis time; the caller keeps time monotonic.
        Err(_) => GENESIS_TIME,
    }
}

/// `t` as nanoseconds since the epoch (saturating), for ordering and arithmetic.
pub fn to_nanos(t: &Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// Nanoseconds since the epoch back to a `Timestamp`.
pub fn from_nanos(n: i128) -> Timestamp {
    let seconds = n.div_euclid(1_000_000_000);
    let nanos = n.rem_euclid(1_000_000_000);
    Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos).unwrap_or(0),
    }
}

/// The time of the next block: the wall clock, but strictly after the previous block's time
/// (CometBFT requires monotonic block times).
pub fn next_block_time(prev: Option<&Timestamp>) -> Timestamp {
    let now = now();
    match prev {
        Some(p) if to_nanos(&now) <= to_nanos(p) => from_nanos(to_nanos(p) + 1_000_000),
        _ => now,
    }
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros trimmed, as Go's `time.RFC3339Nano` prints
/// it (and so as CometBFT's RPC does), e.g. `2024-05-01T12:34:56.1234Z`.
pub fn rfc3339(t: &Timestamp) -> String {
    let days = t.seconds.div_euclid(86_400);
    let secs_of_day = t.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hh, mm, ss) = (
        secs_of_day / 3600,
        (secs_of_day % 3600) / 60,
        secs_of_day % 60,
    );
    let mut out = format!("{year:04}-{month:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}");
    let nanos = t.nanos.clamp(0, 999_999_999);
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339__should_render_like_go() {
        assert_eq!(rfc3339(&GENESIS_TIME), "2024-01-01T00:00:00Z");
        let t = Timestamp {
            seconds: 951_782_400, // 2000-02-29
            nanos: 123_400_000,
        };
        assert_eq!(rfc3339(&t), "2000-02-29T00:00:00.1234Z");
        let t = Timestamp {
            seconds: 1_714_566_896,
            nanos: 5,
        };
        assert_eq!(rfc3339(&t), "2024-05-01T12:34:56.000000005Z");
    }

    #[test]
    fn next_block_time__should_be_strictly_increasing() {
        let far = Timestamp {
            seconds: i64::from(u32::MAX),
            nanos: 0,
        };
        let next = next_block_time(Some(&far));
        assert!(to_nanos(&next) > to_nanos(&far));
        assert_eq!(next.nanos, 1_000_000);
    }
}
