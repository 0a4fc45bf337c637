//! AWS API errors: one type for every service, one classification of their codes. Callers branch on the
//! [`ErrorKind`] (gone, still depended on, busy, slow down, ...), never on code strings; the user reads the action
//! that failed, AWS's message and its code, never an SDK debug dump.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;

/// What an AWS error means for the caller, whatever service answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The resource does not exist (any more).
    NotFound,
    /// A resource of that name or content exists already.
    AlreadyExists,
    /// Something else still depends on it (a rule naming a group, an ENI in a subnet, services in a cluster).
    DependencyViolation,
    /// Busy: an operation on it is in progress, or it is held for a while (Cloud Map instances, an address).
    InUse,
    /// Slow down (a rate limit, not a quota).
    Throttled,
    /// Not visible or usable yet although it exists (eventual consistency, a new role).
    Propagating,
    /// The caller may not do this.
    AccessDenied,
    /// An account limit is reached.
    Quota,
    /// The request is wrong.
    Invalid,
    /// AWS could not be reached at all.
    Unreachable,
    Other,
}

/// Codes AWS uses for "slow down" (the SDK's own throttling list, less the quota codes).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

impl ErrorKind {
    /// Classifies an error code (and, where a code is too broad, its message) from any service secep calls.
    pub fn of(code: &str, message: &str) -> ErrorKind {
        if THROTTLING.contains(&code) {
            return ErrorKind::Throttled;
        }
        match code {
            "NoSuchEntity"
            | "ResourceNotFoundException"
            | "ClusterNotFoundException"
            | "ServiceNotFoundException"
            | "ServiceNotActiveException"
            | "NatGatewayNotFound"
            | "NamespaceNotFound"
            | "ServiceNotFound"
            | "InstanceNotFound"
            | "OperationNotFound"
            | "LoadBalancerNotFound"
            | "TargetGroupNotFound"
            | "ListenerNotFound"
            | "RuleNotFound" => ErrorKind::NotFound,
            // The load balancer's certificate: the user's to fix, not a resource of the stack that is gone.
            "CertificateNotFound" => ErrorKind::Invalid,
            c if c.ends_with(".NotFound") => ErrorKind::NotFound,
            "InvalidGroup.Duplicate"
            | "InvalidPermission.Duplicate"
            | "EntityAlreadyExists"
            | "ResourceAlreadyExistsException"
            | "NamespaceAlreadyExists"
            | "ServiceAlreadyExists"
            | "ConflictingDomainExists"
            | "Resource.AlreadyAssociated"
            | "RouteAlreadyExists"
            | "DuplicateLoadBalancerName"
            | "DuplicateTargetGroupName"
            | "DuplicateListener" => ErrorKind::AlreadyExists,
            "DependencyViolation"
            | "DeleteConflict"
            | "ClusterContainsServicesException"
            | "ClusterContainsTasksException"
            | "ClusterContainsContainerInstancesException" => ErrorKind::DependencyViolation,
            "ResourceInUse"
            | "InvalidIPAddress.InUse"
            | "UpdateInProgressException"
            | "DuplicateRequest"
            | "IncorrectState"
            | "ConcurrentModification"
            | "ConcurrentModificationException"
            | "PriorityInUse" => ErrorKind::InUse,
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "AuthFailure"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "SignatureDoesNotMatch" => ErrorKind::AccessDenied,
            "LimitExceeded" | "LimitExceededException" | "ServiceQuotaExceededException" => ErrorKind::Quota,
            c if c.ends_with("LimitExceeded") => ErrorKind::Quota,
            // Elastic Load Balancing's quotas: TooManyLoadBalancers, TooManyTargetGroups, TooManyRules, ...
            c if c.starts_with("TooMany") => ErrorKind::Quota,
            // A new execution role is refused to a task definition for a few seconds (see ../shared/notes/real-aws.md).
            "ClientException" if message.contains("unable to assume the role") => ErrorKind::Propagating,
            // ECS answers a ClientException for a task definition revision that does not exist.
            "ClientException"
                if message.contains("Unable to describe task definition") || message.contains("does not exist") =>
            {
                ErrorKind::NotFound
            }
            // A new service-linked role is not usable at once (see ../shared/notes/real-aws.md).
            "InvalidParameterException" if message.contains("Unable to assume the service linked role") => {
                ErrorKind::Propagating
            }
            // ECS may not see a listener made a moment ago as using the target group yet (Elastic Load Balancing is
            // eventually consistent); the walk creates a service only after that listener.
            "InvalidParameterException" if message.contains("does not have an associated load balancer") => {
                ErrorKind::Propagating
            }
            // ECS wraps EC2's answer for a subnet or group it cannot see yet: "… (ErrorCode: InvalidSubnetID.NotFound)".
            "InvalidParameterException" if message.contains(".NotFound)") => ErrorKind::Propagating,
            c if c.starts_with("Invalid")
                || c.starts_with("Malformed")
                || matches!(c, "ClientException" | "ValidationError" | "ValidationException" | "MissingParameter") =>
            {
                ErrorKind::Invalid
            }
            _ => ErrorKind::Other,
        }
    }
}

/// An AWS API error in a form callers can branch on and users can read.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {detail}")]
pub struct ApiError {
    pub action: String,
    pub code: Option<String>,
    pub kind: ErrorKind,
    pub detail: String,
}

/// Turns an SDK error into an [`ApiError`] naming the action that failed.
pub fn api_error<E, R>(action: impl Into<String>, err: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let action = action.into();
    let (code, kind, detail) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().map(str::to_string);
            let message = e.message().unwrap_or("no message");
            let kind = code.as_deref().map_or(ErrorKind::Other, |c| ErrorKind::of(c, message));
            (code.clone(), kind, format!("{} ({})", message, code.as_deref().unwrap_or("unknown error code")))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
            None,
            ErrorKind::Unreachable,
            format!(
                "could not reach AWS: {}\n  hint: check the network, or --endpoint-url / AWS_ENDPOINT_URL if you target a local emulator (is it running? `./localstack/start.sh`)",
                DisplayErrorContext(&err)
            ),
        ),
        _ => {
            let code = err.code().map(str::to_string);
            let kind = code.as_deref().map_or(ErrorKind::Other, |c| ErrorKind::of(c, err.message().unwrap_or("")));
            (code, kind, DisplayErrorContext(&err).to_string())
        }
    };
    anyhow::anyhow!(ApiError { action, code, kind, detail })
}

/// The [`ApiError`] anywhere in an error chain.
pub fn api_error_in(err: &anyhow::Error) -> Option<&ApiError> {
    err.chain().find_map(|e| e.downcast_ref::<ApiError>())
}

/// The kind of the AWS error in a chain, if there is one.
pub fn error_kind(err: &anyhow::Error) -> Option<ErrorKind> {
    api_error_in(err).map(|e| e.kind)
}

/// Whether an error chain holds an AWS error of this kind.
pub fn is(err: &anyhow::Error, kind: ErrorKind) -> bool {
    error_kind(err) == Some(kind)
}

/// The raw code, for the few places where one code of a kind means something of its own.
pub fn error_code(err: &anyhow::Error) -> Option<&str> {
    api_error_in(err).and_then(|e| e.code.as_deref())
}

/// Lets `result.or_gone()` turn a NotFound into `None`: the common "already deleted" case.
pub trait OrGone<T> {
    fn or_gone(self) -> anyhow::Result<Option<T>>;
}

impl<T> OrGone<T> for anyhow::Result<T> {
    fn or_gone(self) -> anyhow::Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if is(&e, ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_every_service_are_classified() {
        let cases = [
            ("InvalidVpcID.NotFound", "", ErrorKind::NotFound),
            ("InvalidGroup.NotFound", "", ErrorKind::NotFound),
            ("NatGatewayNotFound", "", ErrorKind::NotFound),
            ("NamespaceNotFound", "", ErrorKind::NotFound),
            ("NoSuchEntity", "", ErrorKind::NotFound),
            ("ClusterNotFoundException", "", ErrorKind::NotFound),
            ("ClientException", "Unable to describe task definition.", ErrorKind::NotFound),
            ("ClientException", "Container.image should not be null", ErrorKind::Invalid),
            ("InvalidPermission.Duplicate", "", ErrorKind::AlreadyExists),
            ("EntityAlreadyExists", "", ErrorKind::AlreadyExists),
            ("ConflictingDomainExists", "", ErrorKind::AlreadyExists),
            ("DependencyViolation", "", ErrorKind::DependencyViolation),
            ("ClusterContainsServicesException", "", ErrorKind::DependencyViolation),
            ("DeleteConflict", "", ErrorKind::DependencyViolation),
            ("ResourceInUse", "", ErrorKind::InUse),
            ("DuplicateRequest", "", ErrorKind::InUse),
            ("InvalidIPAddress.InUse", "", ErrorKind::InUse),
            ("RequestLimitExceeded", "", ErrorKind::Throttled),
            ("ThrottlingException", "", ErrorKind::Throttled),
            ("Throttling", "", ErrorKind::Throttled),
            // A quota is not a rate: waiting does not help (real-aws.md).
            ("LimitExceededException", "", ErrorKind::Quota),
            ("VpcLimitExceeded", "", ErrorKind::Quota),
            ("UnauthorizedOperation", "", ErrorKind::AccessDenied),
            ("AccessDeniedException", "", ErrorKind::AccessDenied),
            (
                "InvalidParameterException",
                "Unable to assume the service linked role. Please verify that the ECS service linked role exists.",
                ErrorKind::Propagating,
            ),
            (
                "InvalidParameterException",
                "Error retrieving subnet information for [subnet-1]: The subnet ID 'subnet-1' does not exist (ErrorCode: InvalidSubnetID.NotFound)",
                ErrorKind::Propagating,
            ),
            (
                "ClientException",
                "ECS was unable to assume the role 'arn:aws:iam::1:role/r' that was provided for this task.",
                ErrorKind::Propagating,
            ),
            ("InvalidParameterException", "bad", ErrorKind::Invalid),
            ("InternalError", "", ErrorKind::Other),
        ];
        for (code, message, want) in cases {
            assert_eq!(ErrorKind::of(code, message), want, "{code}: {message}");
        }
    }
}
