//! Conversions between the wire messages of [`crate::v1`] and `quota_core` types.
//!
//! Each `TryFrom` names fields relative to the message it converts (`quota.limit` for a
//! `PlanSpec`); [`required`], [`optional`] and [`prefixed`] add the path of the enclosing
//! field, so an error about a nested field names its full path in the request
//! (`spec.quota.limit`).

pub mod data;
pub mod key;
pub mod lease;
pub mod offline;
pub mod plan;
pub mod selector;
pub mod usage;

use quota_core::{RequestId, Timestamp, ValidationError};
use std::fmt::Display;
use std::str::FromStr;

/// Length of a request id on the wire, in bytes.
pub const REQUEST_ID_LEN: usize = 16;
/// Page size used when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size honoured; larger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Rewrite the field an error names with `f`.
pub fn map_field(err: ValidationError, f: impl FnOnce(&str) -> String) -> ValidationError {
    match err {
        ValidationError::Empty { field } => ValidationError::Empty { field: f(&field) },
        ValidationError::TooLong { field, len, max } => ValidationError::TooLong {
            field: f(&field),
            len,
            max,
        },
        ValidationError::TooMany { field, count, max } => ValidationError::TooMany {
            field: f(&field),
            count,
            max,
        },
        ValidationError::OutOfRange {
            field,
            value,
            min,
            max,
        } => ValidationError::OutOfRange {
            field: f(&field),
            value,
            min,
            max,
        },
        ValidationError::Invalid { field, reason } => ValidationError::Invalid {
            field: f(&field),
            reason,
        },
    }
}

/// Put `prefix` in front of the field an error names: `spec` and `quota.limit` give
/// `spec.quota.limit`; an error about the whole message (empty field) becomes `spec`.
pub fn prefix_field(err: ValidationError, prefix: &str) -> ValidationError {
    map_field(err, |field| {
        if field.is_empty() {
            prefix.to_owned()
        } else if field.starts_with('[') {
            format!("{prefix}{field}")
        } else {
            format!("{prefix}.{field}")
        }
    })
}

/// Name the field an error is about `field`, whatever it said before (for a scalar
/// validated by a `quota_core` constructor that names it differently).
pub fn rename_field(err: ValidationError, field: &str) -> ValidationError {
    map_field(err, |_| field.to_owned())
}

/// A closure for `map_err` that prefixes the field path with `prefix`.
pub fn prefixed(prefix: &str) -> impl FnOnce(ValidationError) -> ValidationError + '_ {
    move |err| prefix_field(err, prefix)
}

/// Convert the nested message in `field`, which must be present.
pub fn required<P, D>(field: &str, value: Option<P>) -> Result<D, ValidationError>
where
    D: TryFrom<P, Error = ValidationError>,
{
    let value = value.ok_or_else(|| ValidationError::invalid(field, "required but absent"))?;
    D::try_from(value).map_err(prefixed(field))
}

/// Convert the nested message in `field` if it is present.
pub fn optional<P, D>(field: &str, value: Option<P>) -> Result<Option<D>, ValidationError>
where
    D: TryFrom<P, Error = ValidationError>,
{
    value
        .map(|v| D::try_from(v).map_err(prefixed(field)))
        .transpose()
}

/// The request id of a write: empty means none (the server generates one), otherwise
/// exactly [`REQUEST_ID_LEN`] bytes, read big-endian.
pub fn request_id(bytes: &[u8]) -> Result<Option<RequestId>, ValidationError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let raw: [u8; REQUEST_ID_LEN] = bytes.try_into().map_err(|_| {
        ValidationError::invalid(
            "request_id",
            format!(
                "is {} bytes long; it must be empty or {REQUEST_ID_LEN} bytes",
                bytes.len()
            ),
        )
    })?;
    Ok(Some(RequestId(u128::from_be_bytes(raw))))
}

/// The wire form of a request id (for clients).
pub fn request_id_bytes(id: RequestId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

/// A point in time from the wire: 0 means none; later than [`Timestamp::MAX`] is refused.
pub fn timestamp(field: &str, ms: u64) -> Result<Option<Timestamp>, ValidationError> {
    match ms {
        0 => Ok(None),
        ms if ms > Timestamp::MAX.as_millis() => Err(ValidationError::out_of_range(
            field,
            ms,
            1,
            Timestamp::MAX.as_millis(),
        )),
        ms => Ok(Some(Timestamp(ms))),
    }
}

/// The wire form of an optional point in time: 0 for none.
pub fn millis(at: Option<Timestamp>) -> u64 {
    at.map_or(0, Timestamp::as_millis)
}

/// Where a paged listing resumes, and how many items it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page<I> {
    /// Resume after this id; `None` for the first page.
    pub after: Option<I>,
    /// Items to return: 1 to [`MAX_PAGE_SIZE`].
    pub size: usize,
}

impl<I> Page<I>
where
    I: FromStr<Err = ValidationError>,
{
    /// Read `page_token` (empty, or the last id of the previous page) and `page_size`
    /// (0 means [`DEFAULT_PAGE_SIZE`]; more than [`MAX_PAGE_SIZE`] is served that many).
    pub fn parse(page_token: &str, page_size: u32) -> Result<Page<I>, ValidationError> {
        let after = if page_token.is_empty() {
            None
        } else {
            Some(
                page_token
                    .parse::<I>()
                    .map_err(|_| ValidationError::invalid("page_token", "not a page token"))?,
            )
        };
        let size = match usize::try_from(page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
            Err(_) => MAX_PAGE_SIZE,
        };
        Ok(Page { after, size })
    }
}

/// The `next_page_token` of a page: the last id it returned when more may follow, empty
/// when the listing is complete.
pub fn next_page_token<I: Display>(last: Option<I>, more: bool) -> String {
    match last {
        Some(id) if more => id.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::KeyId;

    // Property: request ids are optional, exactly 16 bytes when present, and round-trip.
    // Set-up: empty, 16-byte and 15-byte values.
    // Pass: None, the same id back, and an error naming `request_id`.
    #[test]
    fn request_ids() {
        assert_eq!(request_id(&[]), Ok(None));
        let id = RequestId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        assert_eq!(request_id(&request_id_bytes(id)), Ok(Some(id)));
        assert_eq!(request_id(&[1; 15]).unwrap_err().field(), "request_id");
        assert_eq!(request_id(&[1; 17]).unwrap_err().field(), "request_id");
    }

    // Property: 0 is "no time", other values are kept, and impossible instants are refused.
    // Set-up: 0, a normal instant, Timestamp::MAX and one past it.
    // Pass: None, Some, Some, and an error naming the given field.
    #[test]
    fn timestamps() {
        assert_eq!(timestamp("expires_at", 0), Ok(None));
        assert_eq!(timestamp("at", 5), Ok(Some(Timestamp(5))));
        assert!(timestamp("at", Timestamp::MAX.0).is_ok());
        let err = timestamp("spec.expires_at", Timestamp::MAX.0 + 1).unwrap_err();
        assert_eq!(err.field(), "spec.expires_at");
        assert_eq!(millis(None), 0);
        assert_eq!(millis(Some(Timestamp(7))), 7);
    }

    // Property: prefixes join field paths with dots, index suffixes without, and replace
    // an empty (whole-message) field.
    // Set-up: errors with fields "quota.limit", "[2].api" and "".
    // Pass: the joined paths.
    #[test]
    fn field_paths() {
        let err = ValidationError::empty("quota.limit");
        assert_eq!(prefix_field(err, "spec").field(), "spec.quota.limit");
        let err = ValidationError::empty("[2].api");
        assert_eq!(prefix_field(err, "stages").field(), "stages[2].api");
        let err = ValidationError::invalid("", "required");
        assert_eq!(prefix_field(err, "key").field(), "key");
        let err = ValidationError::out_of_range("extra", 1, 0, 0);
        assert_eq!(
            rename_field(err, "extra_per_period").field(),
            "extra_per_period"
        );
    }

    // Property: pages start at the beginning, resume after the token, and clamp sizes.
    // Set-up: empty and "k12" tokens, sizes 0, 5 and u32::MAX, and a bad token.
    // Pass: the expected Page values, and an error naming `page_token`.
    #[test]
    fn pages() {
        let first = Page::<KeyId>::parse("", 0).unwrap();
        assert_eq!(
            first,
            Page {
                after: None,
                size: DEFAULT_PAGE_SIZE
            }
        );
        let next = Page::<KeyId>::parse("k12", 5).unwrap();
        assert_eq!(
            next,
            Page {
                after: Some(KeyId(12)),
                size: 5
            }
        );
        assert_eq!(
            Page::<KeyId>::parse("", u32::MAX).unwrap().size,
            MAX_PAGE_SIZE
        );
        let err = Page::<KeyId>::parse("p3", 0).unwrap_err();
        assert_eq!(err.field(), "page_token");
        assert_eq!(next_page_token(Some(KeyId(40)), true), "k40");
        assert_eq!(next_page_token(Some(KeyId(40)), false), "");
        assert_eq!(next_page_token::<KeyId>(None, true), "");
    }
}
