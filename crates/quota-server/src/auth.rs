//! Bearer-token authentication: the admin token (Admin and Cluster services, increments
//! that name a key by id) and the gateway token (Gateway service).
//!
//! The token is compared in constant time, by comparing SHA-256 digests (so not even its
//! length leaks through timing), and it is never logged: the interceptor's `Debug` and every
//! error it returns leave it out.

use quota_core::secret::constant_time_eq;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct BearerAuth {
    digest: Option<[u8; 32]>,
    /// Which token this is ("admin", "gateway"), for error messages.
    kind: &'static str,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("token_configured", &self.digest.is_some())
            .finish()
    }
}

impl BearerAuth {
    /// `kind` names the token in errors ("admin", "gateway").
    pub fn new(token: Option<&str>, kind: &'static str) -> BearerAuth {
        BearerAuth {
            kind,
            digest: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
    }

    /// Whether a token is required.
    pub fn enabled(&self) -> bool {
        self.digest.is_some()
    }

    pub fn check<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        self.check_metadata(request.metadata())?;
        Ok(request)
    }

    /// Check the `authorization` header of a request's metadata.
    pub fn check_metadata(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.digest else {
            return Ok(());
        };
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "{} bearer token is required (authorization: Bearer <token>)",
                    article(self.kind)
                ))
            })?;
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        if constant_time_eq(&digest, expected) {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!(
                "the {} bearer token is not valid",
                self.kind
            )))
        }
    }
}

/// "an admin", "a gateway".
fn article(kind: &str) -> String {
    let vowel = kind.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {kind}", if vowel { "an" } else { "a" })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: only the configured token passes; without a configured token all pass; the
    // token never appears in Debug or errors. Set-up: requests with various headers.
    // Pass: as described.
    #[test]
    fn bearer_tokens() {
        let token = "s3cret-admin-token-value";
        let auth = BearerAuth::new(Some(token), "admin");
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("authorization", v.parse().unwrap());
            r
        };
        assert!(auth.check(with(&format!("Bearer {token}"))).is_ok());
        let err = auth.check(with("Bearer wrong")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(!err.message().contains(token));
        assert!(auth.check(Request::new(())).is_err());
        assert!(auth.check(with(token)).is_err());
        assert!(!format!("{auth:?}").contains(token));
        assert!(
            BearerAuth::new(None, "admin")
                .check(Request::new(()))
                .is_ok()
        );
    }
}
