//! `ProviderError`: what every provider call and provider HTTP client fails with. Its
//! [`ErrorKind`] drives retry decisions (one policy, [`super::retry`]) and its endpoint
//! (method and URL, never credentials) says where the failure happened.

/// What kind of failure a provider call met. Retry decisions come from the kind alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object does not exist (HTTP 404).
    NotFound,
    /// Someone else changed the object in between (HTTP 409/412, a Vault check-and-set
    /// mismatch). Retrying the same request does not help; re-reading first may.
    Conflict,
    /// The server asked to slow down (HTTP 429): retried with backoff.
    Throttled,
    /// A transient failure (connection errors, 5xx): retried with backoff.
    Retryable,
    /// The credentials were refused (HTTP 401/403).
    Auth,
    /// The request or the configuration is wrong (HTTP 400/422, a bad attribute).
    InvalidRequest,
    /// Anything else that repeating would not cure.
    Permanent,
    /// The operation was cancelled (the run is being interrupted).
    Cancelled,
}

impl ErrorKind {
    /// The kind an HTTP error status stands for.
    #[must_use]
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            404 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::Conflict,
            429 => ErrorKind::Throttled,
            401 | 403 => ErrorKind::Auth,
            400 | 405 | 413..=422 => ErrorKind::InvalidRequest,
            s if s >= 500 => ErrorKind::Retryable,
            _ => ErrorKind::Permanent,
        }
    }

    /// Whether repeating the same call later may succeed.
    #[must_use]
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Retryable | ErrorKind::Throttled)
    }
}

/// A provider call (or a provider client's request) that failed. Displays as its
/// message, which names the address or endpoint and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request that failed, as `METHOD URL` (no credentials), when one did.
    pub endpoint: Option<String>,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
}

impl ProviderError {
    /// A permanent error.
    pub fn new(message: impl Into<String>) -> ProviderError {
        ProviderError::of(ErrorKind::Permanent, message)
    }

    /// An error of a given kind.
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError {
            kind,
            message: message.into(),
            endpoint: None,
            status: None,
        }
    }

    /// A bad request or configuration: fixing the input is the only cure.
    pub fn invalid(message: impl Into<String>) -> ProviderError {
        ProviderError::of(ErrorKind::InvalidRequest, message)
    }

    /// A transient error, worth retrying.
    pub fn retryable(message: impl Into<String>) -> ProviderError {
        ProviderError::of(ErrorKind::Retryable, message)
    }

    /// The operation stopped because the run was cancelled.
    pub fn cancelled(message: impl Into<String>) -> ProviderError {
        ProviderError::of(ErrorKind::Cancelled, message)
    }

    /// The same error for the request `endpoint` (`METHOD URL`).
    #[must_use]
    pub fn at(mut self, endpoint: impl Into<String>) -> ProviderError {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The same error with an HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> ProviderError {
        self.status = Some(status);
        self
    }

    /// Whether repeating the same call later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// Whether this is a check-and-set (or other concurrent-write) conflict.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        self.kind == ErrorKind::Conflict
    }

    /// The same error with its message prefixed (`"{prefix}: {message}"`).
    #[must_use]
    pub fn prefixed(mut self, prefix: &str) -> ProviderError {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(ErrorKind::from_status(404), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_status(409), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_status(429), ErrorKind::Throttled);
        assert_eq!(ErrorKind::from_status(401), ErrorKind::Auth);
        assert_eq!(ErrorKind::from_status(403), ErrorKind::Auth);
        assert_eq!(ErrorKind::from_status(400), ErrorKind::InvalidRequest);
        assert_eq!(ErrorKind::from_status(503), ErrorKind::Retryable);
        assert_eq!(ErrorKind::from_status(302), ErrorKind::Permanent);
        assert!(ErrorKind::Throttled.is_transient() && ErrorKind::Retryable.is_transient());
        for k in [
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Auth,
            ErrorKind::InvalidRequest,
            ErrorKind::Permanent,
            ErrorKind::Cancelled,
        ] {
            assert!(!k.is_transient(), "{k:?}");
        }
    }

    #[test]
    fn displays_its_message_and_keeps_the_endpoint() {
        let e = ProviderError::of(ErrorKind::Auth, "bosh GET /info: not authorized")
            .at("GET https://d:25555/info")
            .with_status(401);
        assert_eq!(e.to_string(), "bosh GET /info: not authorized");
        assert_eq!(e.endpoint.as_deref(), Some("GET https://d:25555/info"));
        assert_eq!(
            e.prefixed("a.b").message,
            "a.b: bosh GET /info: not authorized"
        );
    }
}
