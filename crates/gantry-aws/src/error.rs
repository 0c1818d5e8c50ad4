//! AWS SDK errors → [`ProviderError`]: provider `aws`, the call, the resource, the region, the
//! AWS error code and a hint; throttling, 5xx and connection failures are retryable.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use gantry_provider::{ErrorKind, ProviderError};

/// Error codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "IncorrectState",
];

/// Codes a create answers when an earlier attempt of the same call took effect but its answer
/// was lost (a 5xx or a timeout after the fact) and the SDK sent the call again. Retryable: the
/// step's retry looks the resource up by the cluster's tags first and finds it. Only codes of
/// creates that are looked up by tags before they are made belong here: `InvalidGroup.Duplicate`
/// (the cluster's security group, `ensure_sg`). A group of that name that is not the cluster's
/// (no gantry tags) fails the same way on every attempt, and then with the hint below.
const LOST_ANSWER_CODES: &[&str] = &["InvalidGroup.Duplicate"];

/// Capacity errors after which a spot request falls back to on-demand.
pub(crate) const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "UnfulfillableCapacity",
    "InsufficientFreeAddressesInSubnet",
];

/// The AWS error code of an SDK error, if the service answered with one.
pub(crate) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

pub(crate) fn err(
    region: &str,
    op: &str,
    resource: &str,
    kind: ErrorKind,
    message: impl Into<String>,
) -> ProviderError {
    ProviderError::new(
        "aws",
        op,
        resource,
        kind,
        format!("[{region}] {}", message.into()),
    )
}

/// Maps an SDK error of call `op` on `resource` in `region`.
pub(crate) fn sdk<E>(
    region: &str,
    op: &str,
    resource: &str,
    e: SdkError<E, HttpResponse>,
) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = code(&e).map(str::to_string);
    let msg = e
        .as_service_error()
        .and_then(|s| s.message())
        .map(str::to_string);
    let (kind, message) = match (&e, &code) {
        (_, Some(c)) => {
            let kind = if RETRYABLE_CODES.contains(&c.as_str())
                || LOST_ANSWER_CODES.contains(&c.as_str())
                || status.is_some_and(|s| s >= 500)
            {
                ErrorKind::Retryable
            } else if c.ends_with("NotFound") {
                ErrorKind::NotFound
            } else if c.starts_with("Invalid")
                || c.starts_with("Missing")
                || c == "UnknownParameter"
            {
                ErrorKind::InvalidInput
            } else if c.ends_with("LimitExceeded") || c.contains("Capacity") {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Other
            };
            (kind, format!("{c}: {}", msg.unwrap_or_default()))
        }
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), None) => (
            ErrorKind::Retryable,
            format!("cannot reach the EC2 API: {}", DisplayErrorContext(&e)),
        ),
        (SdkError::ResponseError(_), None) => (
            ErrorKind::Retryable,
            format!("unreadable response: {}", DisplayErrorContext(&e)),
        ),
        (_, None) => {
            let kind = if status.is_some_and(|s| s >= 500 || s == 429) {
                ErrorKind::Retryable
            } else {
                ErrorKind::Other
            };
            let s = status.map(|s| format!("HTTP {s}: ")).unwrap_or_default();
            (kind, format!("{s}{}", DisplayErrorContext(&e)))
        }
    };
    let hint = hint(region, op, code.as_deref(), &message);
    let mut pe = err(region, op, resource, kind, message);
    if let Some(h) = hint {
        pe = pe.with_hint(h);
    }
    pe.with_source(e)
}

fn hint(region: &str, op: &str, code: Option<&str>, message: &str) -> Option<String> {
    let c = code?;
    Some(match c {
        _ if c.starts_with("InvalidAMIID") => format!(
            "the image does not exist in {region}: AMI ids are per region; check `ami`/`image` \
             in the spec and the region (`aws ec2 describe-images --region {region} --image-ids ...`)"
        ),
        "InvalidInstanceType" | "InvalidInstanceType.NotFound" => format!(
            "no such instance type in {region}; check the pool's `size` and the spec's \
             `instance_types` (defaults: small=t3.micro, medium=t3.large, large=m5.xlarge)"
        ),
        "InvalidParameterValue" if message.to_lowercase().contains("instance type") => format!(
            "no such instance type in {region}; check the pool's `size` and `instance_types`"
        ),
        "AuthFailure"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => "the credentials were refused: check AWS_ACCESS_KEY_ID / \
             AWS_SECRET_ACCESS_KEY, AWS_PROFILE or `aws sso login`"
            .into(),
        "UnauthorizedOperation" => format!("the credentials may not call {op}: grant ec2:{op}"),
        "InstanceLimitExceeded" | "VcpuLimitExceeded" | "MaxSpotInstanceCountExceeded" => {
            format!(
                "an account quota in {region} is exhausted: ask for a higher limit (Service \
                 Quotas, EC2) or use fewer/smaller nodes"
            )
        }
        "InsufficientInstanceCapacity" => {
            format!("{region} has no capacity for this type now: try other `zones` or another type")
        }
        "RequestLimitExceeded" | "Throttling" => {
            "the EC2 API throttled gantry; re-run, it converges".into()
        }
        "InvalidGroup.Duplicate" => format!(
            "a security group of this name already exists in the VPC in {region}: if it is the \
             cluster's (a create whose answer was lost), re-run and it is found by its tags; if it \
             is not (no gantry-cluster tag), delete or rename it"
        ),
        "DependencyViolation" => {
            "something still uses this resource; re-run `gantry destroy` once instances are gone"
                .into()
        }
        "InvalidSubnetID.NotFound" | "InvalidVpcID.NotFound" => {
            format!("check `subnet`/`vpc` in the spec: ids are per region ({region})")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::create_security_group::CreateSecurityGroupError;

    fn service_error(status: u16, code: &str) -> SdkError<CreateSecurityGroupError, HttpResponse> {
        let e = CreateSecurityGroupError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("test message")
                .build(),
        );
        let raw = HttpResponse::new(status.try_into().expect("status"), "".into());
        SdkError::service_error(e, raw)
    }

    fn kind(status: u16, code: &str) -> ErrorKind {
        sdk(
            "us-east-1",
            "CreateSecurityGroup",
            "sg",
            service_error(status, code),
        )
        .kind
    }

    #[test]
    fn throttling_and_5xx_are_retryable_bad_input_is_not() {
        assert_eq!(kind(503, "RequestLimitExceeded"), ErrorKind::Retryable);
        assert_eq!(kind(500, "InternalError"), ErrorKind::Retryable);
        assert_eq!(kind(502, "SomethingNew"), ErrorKind::Retryable);
        assert_eq!(kind(400, "InvalidParameterValue"), ErrorKind::InvalidInput);
        assert_eq!(kind(400, "InvalidGroup.NotFound"), ErrorKind::NotFound);
        assert_eq!(kind(400, "InstanceLimitExceeded"), ErrorKind::Unavailable);
    }

    /// The first CreateSecurityGroup took effect but its answer was lost; the SDK's own retry
    /// gets `InvalidGroup.Duplicate`. The step's retry finds the group by its tags, so this must
    /// not be fatal (it was `InvalidInput` and failed `up`).
    #[test]
    fn a_duplicate_group_after_a_lost_answer_is_retryable_with_a_hint() {
        let e = sdk(
            "us-east-1",
            "CreateSecurityGroup",
            "gantry-default-c",
            service_error(400, "InvalidGroup.Duplicate"),
        );
        assert_eq!(e.kind, ErrorKind::Retryable);
        assert!(
            e.hint.as_deref().is_some_and(|h| h.contains("tags")),
            "{e:?}"
        );
        // Not a blanket rule: a subnet conflict is, in general, the user's CIDR choice. Only in
        // the VPC gantry created (network.rs) is it read as an earlier try's lost answer.
        assert_eq!(kind(400, "InvalidSubnet.Conflict"), ErrorKind::InvalidInput);
    }
}
