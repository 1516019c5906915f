//! Every reason the operator writes into a condition: one enum, so control flow matches on variants (a typo does
//! not compile) and the list of reasons is known in one place.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A condition's PascalCase `reason` (also the `reason` label of the error metric and of Warning events).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The reason as written into conditions.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    // ---- success ----
    /// `Ready=True`: the object is in sync.
    Ready,
    /// `Synced=True`: Databricks matches the spec.
    Synced,
    /// `CredentialsReady=True`: what the object publishes is current.
    Published,
    /// `Ready=True` of a DatabricksAccount: a token was obtained and a read succeeded.
    Authenticated,
    /// `Ready=False`: the paused annotation stops every Databricks write.
    Paused,

    // ---- failures of a call ----
    KubernetesError,
    DatabricksThrottled,
    /// The account's budget deferred the pass (its namespace queued the most it may).
    Deferred,
    DatabricksAuthenticationFailed,
    DatabricksPermissionDenied,
    DatabricksUnavailable,
    DatabricksRequestRejected,
    /// A test-only fail point fired.
    FailPoint,
    FinalizerError,

    // ---- the account ----
    AccountNotFound,
    NamespaceNotAllowed,
    InvalidAccount,
    CredentialsNamespaceNotAllowed,
    CredentialsSecretNotFound,
    CredentialsSecretInvalid,
    TokenPathNotAllowed,
    TokenFileUnreadable,
    AuthenticationFailed,
    NotAccountAdmin,
    AccountUnreachable,
    AccountRequestRejected,

    // ---- delegation and ownership ----
    AssignmentNotAllowed,
    /// A ServicePrincipal names an account group its namespace may not join.
    GroupNotAllowed,
    /// A ServicePrincipal's `usedBy` names a user or group its namespace may not name.
    UsedByNotAllowed,
    /// An app connection asks for a redirect host or a scope its delegation does not allow.
    AppConnectionNotAllowed,
    ServicePrincipalLimitReached,
    TrustPolicyLimitReached,
    /// A Secret the apiserver refuses (checked before anything is minted for it).
    SecretRejected,
    NotDelegated,
    AdoptRefused,
    AdoptTargetNotFound,
    AdoptionNotRecorded,
    IdentityMismatch,
    CacheNotReady,

    // ---- service principals ----
    WorkspaceNotFound,
    /// A group `spec.groups` names does not exist in the account.
    GroupNotFound,
    /// The principal's rule set kept changing under other writers while it was written.
    RuleSetConflict,
    VerificationFailed,
    SecretLimitReached,
    SecretConflict,
    /// The published Secret was lost again soon after a mint: the repair waits for the repair interval.
    RepairPaced,

    // ---- app connections ----
    SecretLost,
    RotationWaits,
    CreateInProgress,
    AppConnectionLimitReached,

    // ---- trust policies ----
    ServicePrincipalNotFound,
    ServicePrincipalNotReady,
    ServicePrincipalMismatch,
    ServicePrincipalDeleting,
    PolicyConflict,
    PolicyLimitReached,
    ConfigMapConflict,
    ClusterIssuerUnavailable,
    InvalidSpec,

    // ---- the Verified condition of a trust policy ----
    TokenExchanged,
    ServiceAccountNotFound,
    KeysUnreachable,
    WrongAudience,
    WrongSubject,
    WrongIssuer,
    WrongKey,
    TokenExpired,
    ExchangeFailed,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_pascal_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(text.starts_with(|c: char| c.is_ascii_uppercase()), "{text}");
            assert!(text.chars().all(|c| c.is_ascii_alphanumeric()), "{text}");
            assert!(seen.insert(text), "{text} twice");
        }
    }
}
