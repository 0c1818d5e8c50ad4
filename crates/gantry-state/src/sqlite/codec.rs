//! Conversions between Rust values and what SQLite stores, each one checked.
//!
//! SQLite has only signed 64-bit integers and text, while the records use `u64`, `u32`, `u16`,
//! maps and timestamps. Every conversion here returns a [`StateError`] instead of truncating or
//! panicking, so a hand-edited or foreign database surfaces as a clear error.
//!
//! Timestamps are stored as UTC text with nine fractional digits
//! (`2024-05-01T12:00:00.000000000Z`): it keeps nanoseconds, stays readable in the `sqlite3`
//! shell, and — being fixed-width — sorts and compares correctly as text, which the lock and
//! ordering queries rely on.

use std::collections::BTreeMap;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::error::StateError;

const TIMESTAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Encodes a timestamp as fixed-width UTC text.
pub(crate) fn ts(value: OffsetDateTime) -> Result<String, StateError> {
    let out_of_range = || StateError::OutOfRange {
        what: "timestamp",
        value: value.to_string(),
    };
    let utc = value
        .checked_to_offset(UtcOffset::UTC)
        .ok_or_else(out_of_range)?;
    // Negative years would print a sign and break text ordering.
    if utc.year() < 0 {
        return Err(out_of_range());
    }
    utc.format(TIMESTAMP).map_err(|e| StateError::Encode {
        what: "timestamp",
        source: Box::new(e),
    })
}

pub(crate) fn opt_ts(value: Option<OffsetDateTime>) -> Result<Option<String>, StateError> {
    value.map(ts).transpose()
}

/// Decodes a stored name of one of core's closed sets ([`gantry_core::status`]): one this
/// gantry does not know is an error naming it.
pub(crate) fn name<T>(what: &'static str, text: &str) -> Result<T, StateError>
where
    T: std::str::FromStr<Err = gantry_core::CoreError>,
{
    text.parse().map_err(|e| StateError::Corrupt {
        what,
        source: Box::new(e),
    })
}

/// Decodes a timestamp written by [`ts`].
pub(crate) fn parse_ts(what: &'static str, text: &str) -> Result<OffsetDateTime, StateError> {
    PrimitiveDateTime::parse(text, TIMESTAMP)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|e| StateError::Corrupt {
            what,
            source: Box::new(e),
        })
}

pub(crate) fn parse_opt_ts(
    what: &'static str,
    text: Option<&str>,
) -> Result<Option<OffsetDateTime>, StateError> {
    text.map(|t| parse_ts(what, t)).transpose()
}

/// Encodes an unsigned number as SQLite's signed integer.
pub(crate) fn int<T>(what: &'static str, value: T) -> Result<i64, StateError>
where
    T: Copy + std::fmt::Display + TryInto<i64>,
{
    value.try_into().map_err(|_| StateError::OutOfRange {
        what,
        value: value.to_string(),
    })
}

/// Decodes a stored integer into the record's unsigned type.
pub(crate) fn uint<T: TryFrom<i64>>(what: &'static str, value: i64) -> Result<T, StateError> {
    T::try_from(value).map_err(|_| StateError::OutOfRange {
        what,
        value: value.to_string(),
    })
}

pub(crate) fn tags_json(tags: &BTreeMap<String, String>) -> Result<String, StateError> {
    serde_json::to_string(tags).map_err(|e| StateError::Encode {
        what: "node tags",
        source: Box::new(e),
    })
}

pub(crate) fn parse_tags(text: &str) -> Result<BTreeMap<String, String>, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Corrupt {
        what: "node tags",
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a = datetime!(2024-05-01 12:00:00.123456789 +02:00);
        let b = datetime!(2024-05-01 10:30:00 UTC);
        let (ta, tb) = (ts(a).unwrap(), ts(b).unwrap());
        assert_eq!(ta, "2024-05-01T10:00:00.123456789Z");
        assert_eq!(parse_ts("t", &ta).unwrap(), a);
        assert!(ta < tb, "text order must follow time order");
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        assert!(matches!(
            parse_ts("t", "yesterday"),
            Err(StateError::Corrupt { .. })
        ));
        assert!(matches!(
            int("generation", u64::MAX),
            Err(StateError::OutOfRange { .. })
        ));
        assert!(matches!(
            uint::<u16>("ssh port", 70_000),
            Err(StateError::OutOfRange { .. })
        ));
        assert!(matches!(
            ts(datetime!(-0001-01-01 0:00 UTC)),
            Err(StateError::OutOfRange { .. })
        ));
        assert!(parse_tags("[1]").is_err());
    }
}
