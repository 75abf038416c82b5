//! Sending a request again while Qdrant fails in passing.

use std::time::Duration;

use tonic::Code;

use crate::QdrantError;

/// How often and how patiently a failed request is sent again.
///
/// One try may be two sends: on a broken channel (`UNAVAILABLE`,
/// `INTERNAL`, ...) qdrant-client itself reconnects and resends once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Sends after the first (0: fail at once).
    pub retries: usize,
    /// The wait before the first resend; it doubles with every resend.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    /// Five resends from half a second: about 15 seconds in all.
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Whether a failed request is worth sending again: the server could not
/// be reached, timed out, was overloaded or failed inside, as opposed to a
/// request it refused (which would be refused again).
fn transient(error: &qdrant_client::QdrantError) -> bool {
    match error {
        qdrant_client::QdrantError::ResourceExhaustedError { .. }
        | qdrant_client::QdrantError::Io(_) => true,
        qdrant_client::QdrantError::ResponseError { status } => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
                | Code::Cancelled
        ),
        _ => false,
    }
}

impl RetryPolicy {
    /// Runs `request` (one attempt) until it succeeds, fails for good, or
    /// the resends run out.
    pub(crate) fn run<T>(
        &self,
        what: impl Fn() -> String,
        mut request: impl FnMut() -> Result<T, qdrant_client::QdrantError>,
    ) -> Result<T, QdrantError> {
        let mut wait = self.backoff;
        for attempt in 0..=self.retries {
            match request() {
                Ok(value) => return Ok(value),
                Err(error) if !transient(&error) => {
                    return Err(QdrantError::Refused {
                        what: what(),
                        message: error.to_string(),
                    });
                }
                Err(error) if attempt == self.retries => {
                    return Err(QdrantError::Unavailable {
                        what: what(),
                        tries: attempt + 1,
                        message: error.to_string(),
                    });
                }
                Err(_) => {
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code) -> qdrant_client::QdrantError {
        qdrant_client::QdrantError::ResponseError {
            status: tonic::Status::new(code, "test"),
        }
    }

    #[test]
    fn passing_failures_are_retried_and_refusals_are_not() {
        let policy = RetryPolicy {
            retries: 3,
            backoff: Duration::from_millis(1),
        };
        let mut calls = 0;
        let value = policy.run(
            || "upsert".into(),
            || {
                calls += 1;
                if calls < 3 {
                    Err(status(Code::Unavailable))
                } else {
                    Ok(7)
                }
            },
        );
        assert_eq!((value.unwrap(), calls), (7, 3));

        calls = 0;
        let refused = policy.run(
            || "upsert".into(),
            || -> Result<(), _> {
                calls += 1;
                Err(status(Code::InvalidArgument))
            },
        );
        assert!(matches!(refused, Err(QdrantError::Refused { .. })));
        assert_eq!(calls, 1);

        calls = 0;
        let gone = policy.run(
            || "upsert".into(),
            || -> Result<(), _> {
                calls += 1;
                Err(status(Code::Unavailable))
            },
        );
        assert!(matches!(
            gone,
            Err(QdrantError::Unavailable { tries: 4, .. })
        ));
        assert_eq!(calls, 4);
    }
}
