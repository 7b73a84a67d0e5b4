//! The one mapping of domain errors to gRPC status codes.
//!
//! | error                         | code                |
//! |-------------------------------|---------------------|
//! | `ValidationError` (any)       | INVALID_ARGUMENT    |
//! | `ApplyError::Invalid`         | INVALID_ARGUMENT    |
//! | `ApplyError::NotFound`        | NOT_FOUND           |
//! | `ApplyError::Conflict`        | ALREADY_EXISTS      |
//! | `ApplyError::LimitReached`    | RESOURCE_EXHAUSTED  |
//!
//! The message is the error's `Display`, which names the field or the entity; no domain
//! error holds a secret, so messages are safe to return and log.

use quota_core::{ApplyError, ValidationError};
use tonic::{Code, Status};

/// The gRPC code of a state-machine refusal.
pub fn code_of(err: &ApplyError) -> Code {
    match err {
        ApplyError::NotFound { .. } => Code::NotFound,
        ApplyError::Conflict { .. } => Code::AlreadyExists,
        ApplyError::LimitReached { .. } => Code::ResourceExhausted,
        ApplyError::Invalid(_) => Code::InvalidArgument,
    }
}

/// Codes that no retry, on this node or another, can fix: the request itself is wrong, or
/// the caller is not allowed. Everything else (unavailable, deadline, a leader change
/// surfacing as an internal error) is worth retrying with the same request id.
pub fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
            | Code::OutOfRange
    )
}

/// Turns a domain error into the status a handler answers with:
/// `.map_err(|e| e.to_status())?`.
pub trait ToStatus {
    fn to_status(&self) -> Status;
}

impl ToStatus for ApplyError {
    fn to_status(&self) -> Status {
        Status::new(code_of(self), self.to_string())
    }
}

impl ToStatus for ValidationError {
    fn to_status(&self) -> Status {
        Status::invalid_argument(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::{Entity, KeyId};

    // Property: each kind of refusal maps to its documented code with a clear message.
    // Set-up: one error of each ApplyError variant, and a bare ValidationError.
    // Pass: the code from the table above, and a message naming the entity or field.
    #[test]
    fn apply_errors_map_to_codes() {
        let cases = [
            (
                ApplyError::not_found(Entity::Key, KeyId(12)),
                Code::NotFound,
                "key k12 not found",
            ),
            (
                ApplyError::conflict(Entity::Plan, "a plan named `gold` exists"),
                Code::AlreadyExists,
                "plan conflict: a plan named `gold` exists",
            ),
            (
                ApplyError::LimitReached {
                    what: "plans per key".into(),
                    max: 16,
                },
                Code::ResourceExhausted,
                "limit reached: plans per key (at most 16)",
            ),
            (
                ApplyError::Invalid(ValidationError::empty("spec.name")),
                Code::InvalidArgument,
                "spec.name must not be empty",
            ),
        ];
        for (err, code, message) in cases {
            let status = err.to_status();
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(status.message(), message);
            assert_eq!(code_of(&err), code);
        }
        let status = ValidationError::out_of_range("cost", 0, 1, 10).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "cost is 0; it must be between 1 and 10");
    }
}
