//! Errors of `quotactl`, and the one mapping of each to an exit status.
//!
//! | status | meaning                                                                  |
//! |--------|--------------------------------------------------------------------------|
//! | 0      | success                                                                  |
//! | 1      | the cluster refused the request (denied, not found, conflict, ...)       |
//! | 2      | usage error: bad flags or arguments, an invalid file, an invalid value   |
//! | 3      | the cluster cannot be reached (no endpoint answered within the deadline) |
//!
//! No error carries a secret: messages are built from names, ids and server messages,
//! and the server never puts a secret in a message.

use std::fmt;

/// Exit status for success.
pub const EXIT_OK: i32 = 0;
/// Exit status when the cluster refused the request, or an increment was denied.
pub const EXIT_REFUSED: i32 = 1;
/// Exit status for usage errors (bad arguments, an invalid file or value).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when no endpoint of the cluster could be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments or a value given are wrong; nothing was sent.
    #[error("{message}")]
    Usage { message: String },
    /// An input file is invalid; nothing was sent.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The cluster answered with a refusal.
    #[error("{}", refusal_text(.code, .message))]
    Refused { code: tonic::Code, message: String },
    /// An increment was answered but not admitted. The report was already printed.
    #[error("denied: {reason}")]
    Denied { reason: String },
    /// No endpoint answered in time.
    #[error("{0}")]
    Unreachable(#[from] Unreachable),
    /// Reading a local file or writing to the terminal failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Every endpoint failed with a transport error or UNAVAILABLE until the deadline.
#[derive(Debug, thiserror::Error)]
pub struct Unreachable {
    /// The endpoints tried, with the last error each gave.
    pub attempts: Vec<(String, String)>,
    /// How long we kept trying, in milliseconds.
    pub waited_ms: u64,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the cluster (tried for {:.1} s):",
            self.waited_ms as f64 / 1000.0
        )?;
        for (endpoint, error) in &self.attempts {
            write!(f, "\n  {endpoint}: {error}")?;
        }
        write!(
            f,
            "\nStart a node (`quotad --dev` serves http://127.0.0.1:7070), or point \
             --endpoints / QUOTA_ENDPOINTS at running nodes; --retry-for sets how long to \
             keep trying."
        )
    }
}

fn refusal_text(code: &tonic::Code, message: &str) -> String {
    let hint = match code {
        tonic::Code::NotFound => {
            "check the id or name (`quotactl key list`, `quotactl plan list`, `quotactl cluster status`)"
        }
        tonic::Code::AlreadyExists => "pick another name, or change the existing one",
        tonic::Code::Unauthenticated => {
            "set QUOTA_TOKEN or --token-file to the cluster's admin token"
        }
        tonic::Code::PermissionDenied => "this token may not do that",
        tonic::Code::InvalidArgument => "fix the value named above; see --help",
        tonic::Code::ResourceExhausted => "a cluster limit was reached; remove something first",
        tonic::Code::FailedPrecondition => "the cluster is not in a state that allows this",
        _ => "see the cluster's logs for details",
    };
    format!("refused ({}): {message}\nhint: {hint}", code_name(*code))
}

/// The upper-case name of a gRPC code, as gRPC documents it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl CliError {
    /// A usage error with this message.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage {
            message: message.into(),
        }
    }

    /// The process exit status for this error (see the module table).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage { .. } | CliError::Manifest(_) | CliError::Io { .. } => EXIT_USAGE,
            // The server checked the arguments and found one wrong: that is a usage error.
            CliError::Refused {
                code: tonic::Code::InvalidArgument,
                ..
            } => EXIT_USAGE,
            CliError::Refused { .. } | CliError::Denied { .. } => EXIT_REFUSED,
            CliError::Unreachable(_) => EXIT_UNREACHABLE,
        }
    }

    /// The stable name of the error kind, for `--json` error reports.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Usage { .. } => "usage",
            CliError::Manifest(_) => "invalid_file",
            CliError::Refused { .. } => "refused",
            CliError::Denied { .. } => "denied",
            CliError::Unreachable(_) => "unreachable",
            CliError::Io { .. } => "io",
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> CliError {
        CliError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: each kind of failure has its documented exit status.
    // Set-up: one error of each kind. Pass: the statuses of the module table.
    #[test]
    fn exit_codes() {
        assert_eq!(CliError::usage("x").exit_code(), EXIT_USAGE);
        let refused = CliError::from(tonic::Status::not_found("no key is named `x`"));
        assert_eq!(refused.exit_code(), EXIT_REFUSED);
        assert!(refused.to_string().contains("NOT_FOUND"));
        let invalid = CliError::from(tonic::Status::invalid_argument("spec.name"));
        assert_eq!(invalid.exit_code(), EXIT_USAGE);
        let unreachable = CliError::Unreachable(Unreachable {
            attempts: vec![("http://a".into(), "connection refused".into())],
            waited_ms: 1000,
        });
        assert_eq!(unreachable.exit_code(), EXIT_UNREACHABLE);
        assert!(
            unreachable
                .to_string()
                .contains("http://a: connection refused")
        );
    }
}
