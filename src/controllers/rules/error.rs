//! Reconcile errors by failure kind, each with a stable [`Reason`] for conditions, events and metrics, and
//! [`Refusal`]: something a tenant asked for that is not done.

use super::reason::Reason;
use crate::databricks;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A Databricks call failed.
    #[error("{0}")]
    Databricks(#[from] databricks::Error),
    /// The referenced DatabricksAccount is missing, refuses this namespace, or cannot authenticate.
    #[error("{message}")]
    Account { reason: Reason, message: String },
    /// Waiting for another object (a principal without an id yet, a missing reference that may appear).
    #[error("{message}")]
    Waiting { reason: Reason, message: String },
    /// Something only a person can fix (bad reference, conflicting Secret, limit reached).
    #[error("{message}")]
    NeedsAttention { reason: Reason, message: String },
    /// A grant was revoked (or narrowed): what it produced is being removed. A person must act (grant it again,
    /// or delete the object), but the next removal is due at `wake`.
    #[error("{message}")]
    Revoked { reason: Reason, message: String, wake: Option<std::time::Duration> },
    /// Something is asked for sooner than the operator allows (a repair of a Secret deleted again and again): it is
    /// done at `wake`, not before.
    #[error("{message}")]
    Paced { reason: Reason, message: String, wake: std::time::Duration },
    /// A test-only fail point fired (simulates the operator dying at that step).
    #[error("fail point {0} fired")]
    FailPoint(&'static str),
    /// The finalizer machinery failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube { context: context.into(), source: Box::new(source) }
    }

    /// Stable reason.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Kube { .. } => Reason::KubernetesError,
            Self::Databricks(e) if e.is_throttled() => Reason::DatabricksThrottled,
            Self::Databricks(e) if e.is_deferred() => Reason::Deferred,
            Self::Databricks(e) if e.is_unauthenticated() => Reason::DatabricksAuthenticationFailed,
            Self::Databricks(e) if e.status() == Some(403) => Reason::DatabricksPermissionDenied,
            Self::Databricks(e) if e.is_retryable() => Reason::DatabricksUnavailable,
            Self::Databricks(_) => Reason::DatabricksRequestRejected,
            Self::Account { reason, .. }
            | Self::NeedsAttention { reason, .. }
            | Self::Revoked { reason, .. }
            | Self::Paced { reason, .. }
            | Self::Waiting { reason, .. } => *reason,
            Self::FailPoint(_) => Reason::FailPoint,
            Self::Finalizer(_) => self.finalizer_cause().map_or(Reason::FinalizerError, Self::reason),
        }
    }

    /// Whether waiting helps; otherwise a person must act and the object is not hot-looped.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { .. } | Self::FailPoint(_) | Self::Waiting { .. } => true,
            Self::Databricks(e) => e.is_retryable(),
            Self::Account { reason, .. } => *reason == Reason::AccountUnreachable,
            Self::NeedsAttention { .. } | Self::Revoked { .. } | Self::Paced { .. } => false,
            Self::Finalizer(_) => self.finalizer_cause().is_none_or(Self::is_transient),
        }
    }

    /// The pass was deferred by the account's budget (its namespace had queued the most it may): nothing failed.
    pub fn is_deferred(&self) -> bool {
        match self {
            Self::Databricks(e) => e.is_deferred(),
            Self::Finalizer(_) => self.finalizer_cause().is_some_and(Self::is_deferred),
            _ => false,
        }
    }

    /// When the pass must run again regardless of backoff (a revocation's next step, or a paced repair, is due
    /// then).
    pub fn wake(&self) -> Option<std::time::Duration> {
        match self {
            Self::Revoked { wake, .. } => *wake,
            Self::Paced { wake, .. } => Some(*wake),
            Self::Finalizer(_) => self.finalizer_cause().and_then(Self::wake),
            _ => None,
        }
    }

    /// A refusal with what revocation did (or will do) about it.
    pub fn revoked(refusal: Refusal, note: &str, wake: Option<std::time::Duration>) -> Self {
        let message = if note.is_empty() { refusal.message } else { format!("{}. {note}", refusal.message) };
        Self::Revoked { reason: refusal.reason, message, wake }
    }

    /// The error of the apply or cleanup a finalizer failure wraps.
    fn finalizer_cause(&self) -> Option<&Error> {
        match self {
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// The inner error of a finalizer failure (so conditions and metrics see the real cause).
    pub fn unwrap_finalizer(self) -> Self {
        match self {
            Self::Finalizer(inner) => match *inner {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
                other => Self::Finalizer(Box::new(other)),
            },
            other => other,
        }
    }
}

/// Why something a tenant asked for is not done. Becomes a `NeedsAttention` condition; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        Error::NeedsAttention { reason: refusal.reason, message: refusal.message }
    }
}
