//! Errors of the domain: validation at the edge, and refusals of the state machine.
//! Both travel through the Raft log as part of responses, so they are serialisable and
//! own their strings. None of them ever holds a secret.

use serde::{Deserialize, Serialize};

/// Input that breaks a rule. Always names the field and the rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ValidationError {
    #[error("{field} must not be empty")]
    Empty { field: String },
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} has {count} entries; the limit is {max}")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("{field} is {value}; it must be between {min} and {max}")]
    OutOfRange {
        field: String,
        value: String,
        min: String,
        max: String,
    },
    #[error("{field} is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

impl ValidationError {
    pub fn empty(field: impl Into<String>) -> Self {
        ValidationError::Empty {
            field: field.into(),
        }
    }

    pub fn too_long(field: impl Into<String>, len: usize, max: usize) -> Self {
        ValidationError::TooLong {
            field: field.into(),
            len,
            max,
        }
    }

    pub fn too_many(field: impl Into<String>, count: usize, max: usize) -> Self {
        ValidationError::TooMany {
            field: field.into(),
            count,
            max,
        }
    }

    pub fn out_of_range(
        field: impl Into<String>,
        value: impl ToString,
        min: impl ToString,
        max: impl ToString,
    ) -> Self {
        ValidationError::OutOfRange {
            field: field.into(),
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ValidationError::Empty { field }
            | ValidationError::TooLong { field, .. }
            | ValidationError::TooMany { field, .. }
            | ValidationError::OutOfRange { field, .. }
            | ValidationError::Invalid { field, .. } => field,
        }
    }
}

/// What kind of thing was not found or conflicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entity {
    Key,
    Plan,
    Association,
    Lease,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Key => "key",
            Entity::Plan => "plan",
            Entity::Association => "plan-key association",
            Entity::Lease => "lease",
        })
    }
}

/// Why the state machine refused a command. A refused command changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("{entity} {id} not found")]
    NotFound { entity: Entity, id: String },
    #[error("{entity} conflict: {reason}")]
    Conflict { entity: Entity, reason: String },
    #[error("limit reached: {what} (at most {max})")]
    LimitReached { what: String, max: usize },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl ApplyError {
    pub fn not_found(entity: Entity, id: impl ToString) -> Self {
        ApplyError::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    pub fn conflict(entity: Entity, reason: impl Into<String>) -> Self {
        ApplyError::Conflict {
            entity,
            reason: reason.into(),
        }
    }
}
