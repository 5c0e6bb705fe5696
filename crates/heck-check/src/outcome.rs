//! What one probe attempt found.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a probe attempt failed. Coarse on purpose: it is what users filter and alert on, and what
/// `/metrics` labels by, so the set must stay small and stable. The human detail goes in
/// [`Outcome::detail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The whole attempt (connect + TLS + response) did not finish within the target's timeout.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// The TCP connection was refused (nothing listening).
    ConnectionRefused,
    /// Any other connect-level failure (unreachable, reset during connect, …).
    Connect,
    /// The TLS handshake failed (bad certificate, protocol mismatch, …).
    Tls,
    /// The peer spoke, but not valid HTTP/gRPC, or closed mid-response.
    Protocol,
    /// HTTP answered with a status code outside the expected set.
    UnexpectedStatus,
    /// HTTP answered with an expected status, but the body lacked the expected substring.
    BodyMismatch,
    /// gRPC health answered, but not `SERVING`.
    NotServing,
}

impl ErrorKind {
    /// Every kind, in a stable order (for metrics that must export zeroes too).
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Timeout,
        ErrorKind::Dns,
        ErrorKind::ConnectionRefused,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Protocol,
        ErrorKind::UnexpectedStatus,
        ErrorKind::BodyMismatch,
        ErrorKind::NotServing,
    ];

    /// The snake_case name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Dns => "dns",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::UnexpectedStatus => "unexpected_status",
            ErrorKind::BodyMismatch => "body_mismatch",
            ErrorKind::NotServing => "not_serving",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe attempt. `error` is `None` exactly when the attempt succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Wall time from the start of the attempt to its verdict (success, failure or timeout).
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// The HTTP status code, when a response arrived.
    pub status_code: Option<u16>,
    /// Why it failed; `None` on success.
    pub error: Option<ErrorKind>,
    /// A short human explanation of a failure ("connection refused", "status 503 not in 2xx").
    pub detail: Option<String>,
}

impl Outcome {
    /// A successful attempt.
    pub fn success(latency: Duration, status_code: Option<u16>) -> Self {
        Outcome {
            latency,
            status_code,
            error: None,
            detail: None,
        }
    }

    /// A failed attempt.
    pub fn failure(
        latency: Duration,
        status_code: Option<u16>,
        error: ErrorKind,
        detail: impl Into<String>,
    ) -> Self {
        Outcome {
            latency,
            status_code,
            error: Some(error),
            detail: Some(detail.into()),
        }
    }

    /// Did the attempt succeed?
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }
}

/// Durations on the wire as fractional milliseconds (`"latency_ms": 1.25`), readable and exact
/// enough (microsecond precision).
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_micros() as f64 / 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || ms < 0.0 {
            return Err(serde::de::Error::custom(
                "latency must be a non-negative number",
            ));
        }
        Ok(Duration::from_micros((ms * 1000.0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_round_trips_through_json() {
        let o = Outcome::failure(
            Duration::from_micros(1250),
            Some(503),
            ErrorKind::UnexpectedStatus,
            "status 503",
        );
        let json = serde_json::to_string(&o).expect("serialize");
        assert!(json.contains("\"latency\":1.25"), "{json}");
        assert!(json.contains("\"error\":\"unexpected_status\""), "{json}");
        let back: Outcome = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, o);
    }

    #[test]
    fn error_kind_names_match_serde_names() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
