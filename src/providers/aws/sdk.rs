//! The SDK side of the `aws` provider (only with the `aws` feature): loading the
//! configuration (environment, profile, assume-role with an external ID, an endpoint
//! override for tests), the four service clients, turning SDK errors into
//! [`ProviderError`]s that name the endpoint and the AWS error code, tags, and the
//! attribute helpers the type files share.

use super::{Settings, TAG_ADDRESS, TAG_LINEAGE};
use crate::providers::retry::Policy;
use crate::providers::{Attributes, ErrorKind, ProviderError};
use crate::state::ResourceState;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Deletes blocked by a dependency still going away (`DependencyViolation`: an ENI of a
/// NAT gateway being deleted, an instance still in a subnet): 2 s doubling up to 30 s,
/// about five minutes in all.
pub const DEPENDENCY: Policy = Policy {
    first_delay: Duration::from_secs(2),
    max_delay: Duration::from_secs(30),
    attempts: 14,
    jitter: false,
};

/// The service clients of one configured account and region.
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub eks: aws_sdk_eks::Client,
    pub rds: aws_sdk_rds::Client,
    pub s3: aws_sdk_s3::Client,
    region: String,
    endpoint: Option<String>,
}

impl Clients {
    /// Loads the configuration and makes the clients.
    ///
    /// # Errors
    /// No region is configured.
    pub async fn load(settings: &Settings) -> Result<Clients, ProviderError> {
        // One TLS stack: rustls on ring, like the rest of anvil (no aws-lc).
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let endpoint = settings
            .endpoint
            .clone()
            .or_else(|| crate::providers::env_var("AWS_ENDPOINT_URL"));
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http.clone())
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
        if let Some(r) = &settings.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(p) = &settings.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &endpoint {
            loader = loader.endpoint_url(e);
        }
        let mut config = loader.load().await;
        let Some(region) = config.region().map(ToString::to_string) else {
            return Err(ProviderError::invalid(
                "no AWS region: set `region` in the aws provider's settings, or AWS_REGION",
            ));
        };
        if let Some(arn) = &settings.role_arn {
            let mut role = aws_config::sts::AssumeRoleProvider::builder(arn)
                .session_name("anvil")
                .configure(&config);
            if let Some(x) = &settings.external_id {
                role = role.external_id(x);
            }
            let role = role.build().await;
            config = config
                .into_builder()
                .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(role))
                .build();
        }
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            // moto and other S3 look-alikes serve buckets under the path, not the host.
            .force_path_style(endpoint.is_some())
            .build();
        Ok(Clients {
            ec2: aws_sdk_ec2::Client::new(&config),
            eks: aws_sdk_eks::Client::new(&config),
            rds: aws_sdk_rds::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            region,
            endpoint,
        })
    }

    /// The endpoint a service is reached at, for messages.
    #[must_use]
    pub fn endpoint(&self, service: &str) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("https://{service}.{}.amazonaws.com", self.region),
        }
    }

    /// The region.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A function turning an SDK error of `service`'s operation `op` (`CreateVpc`) into a
    /// [`ProviderError`] naming the endpoint and the AWS error code.
    pub fn err<E>(
        &self,
        service: &'static str,
        op: &'static str,
    ) -> impl FnOnce(SdkError<E, HttpResponse>) -> ProviderError + '_
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        move |e| self.error(service, op, &e)
    }

    /// An SDK error as a [`ProviderError`]: its kind from the AWS error code, its message
    /// naming the endpoint, the operation, the code and what to do.
    pub fn error<E>(
        &self,
        service: &'static str,
        op: &'static str,
        e: &SdkError<E, HttpResponse>,
    ) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = self.endpoint(service);
        let status = e.raw_response().map(|r| r.status().as_u16());
        let (code, detail) = match e {
            SdkError::ServiceError(_) if e.code().is_some() => (
                e.code().unwrap_or_default().to_string(),
                e.message().unwrap_or("").to_string(),
            ),
            // An answer the SDK could not read (no error code in it).
            SdkError::ServiceError(_) => {
                ("Unhandled".to_string(), DisplayErrorContext(e).to_string())
            }
            SdkError::DispatchFailure(_) => (
                "DispatchFailure".to_string(),
                DisplayErrorContext(e).to_string(),
            ),
            SdkError::TimeoutError(_) => (
                "TimeoutError".to_string(),
                DisplayErrorContext(e).to_string(),
            ),
            _ => (
                e.code().unwrap_or("RequestFailed").to_string(),
                DisplayErrorContext(e).to_string(),
            ),
        };
        let mut kind = super::kind_of(&code, status);
        if matches!(
            e,
            SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_)
        ) && detail.contains("credentials")
        {
            kind = ErrorKind::Auth;
        }
        let advice = super::advice(kind);
        let mut err = ProviderError::of(
            kind,
            format!("{op} at {endpoint} failed: AWS error {code}: {detail}; {advice}"),
        )
        .at(format!("{op} {endpoint}"));
        if let Some(s) = status {
            err = err.with_status(s);
        }
        err
    }
}

/// The tags anvil puts on an object: the user's, then `anvil:address` and `anvil:lineage`.
#[must_use]
pub fn all_tags(address: &str, lineage: &str, attrs: &Attributes) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = attrs
        .get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with("anvil:"))
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    tags.push((TAG_ADDRESS.to_string(), address.to_string()));
    tags.push((TAG_LINEAGE.to_string(), lineage.to_string()));
    tags
}

/// The user's tags out of an object's tags (anvil's own left out), as a map value.
pub fn user_tags<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Object(
        tags.into_iter()
            .filter(|(k, _)| !k.starts_with("anvil:"))
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// Whether an object's tags say it belongs to `lineage`.
pub fn has_lineage<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>, lineage: &str) -> bool {
    tags.into_iter()
        .any(|(k, v)| k == TAG_LINEAGE && v == lineage)
}

/// EC2 tags as SDK values.
#[must_use]
pub fn ec2_tags(tags: &[(String, String)]) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// The tag specification of an EC2 create call.
#[must_use]
pub fn ec2_tag_spec(
    ty: aws_sdk_ec2::types::ResourceType,
    tags: &[(String, String)],
) -> aws_sdk_ec2::types::TagSpecification {
    aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(ty)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

/// The filters finding the EC2 object of `address` in `lineage` (adopt-first).
#[must_use]
pub fn ec2_owner_filters(address: &str, lineage: &str) -> Vec<aws_sdk_ec2::types::Filter> {
    [(TAG_ADDRESS, address), (TAG_LINEAGE, lineage)]
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        })
        .collect()
}

/// Whether an EC2 object's tags name `address` in `lineage`. Adopt-first checks this on
/// what the tag filters return: moto ignores some filters (NAT gateways'), and an object
/// of another address must never be adopted or removed as stale.
#[must_use]
pub fn ec2_owned_by(tags: &[aws_sdk_ec2::types::Tag], address: &str, lineage: &str) -> bool {
    let has = |k: &str, v: &str| {
        tags.iter()
            .any(|t| t.key() == Some(k) && t.value() == Some(v))
    };
    has(TAG_ADDRESS, address) && has(TAG_LINEAGE, lineage)
}

/// One EC2 filter.
#[must_use]
pub fn ec2_filter(name: &str, value: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .values(value)
        .build()
}

/// The user's tags of an EC2 object.
#[must_use]
pub fn ec2_user_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Value {
    user_tags(
        tags.iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
    )
}

/// Replaces an EC2 object's user tags with the requested ones (anvil's stay).
///
/// # Errors
/// AWS refused.
pub async fn ec2_retag(
    c: &Clients,
    id: &str,
    prior: Option<&ResourceState>,
    req: &crate::providers::ChangeRequest<'_>,
) -> Result<(), ProviderError> {
    let want = all_tags(req.address, req.lineage, req.attributes);
    let old: Vec<String> = prior
        .and_then(|p| p.attributes.get("tags"))
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter(|k| !want.iter().any(|(w, _)| w == *k))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if !old.is_empty() {
        c.ec2
            .delete_tags()
            .resources(id)
            .set_tags(Some(
                old.iter()
                    .map(|k| aws_sdk_ec2::types::Tag::builder().key(k).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(c.err("ec2", "DeleteTags"))?;
    }
    c.ec2
        .create_tags()
        .resources(id)
        .set_tags(Some(ec2_tags(&want)))
        .send()
        .await
        .map_err(c.err("ec2", "CreateTags"))?;
    Ok(())
}

/// A required string attribute.
///
/// # Errors
/// It is missing or not a string.
pub fn str_attr<'a>(attrs: &'a Attributes, name: &str) -> Result<&'a str, ProviderError> {
    attrs.get(name).and_then(Value::as_str).ok_or_else(|| {
        ProviderError::invalid(format!(
            "attribute `{name}` must be a string; set it in the spec"
        ))
    })
}

/// An optional string attribute.
#[must_use]
pub fn opt_str<'a>(attrs: &'a Attributes, name: &str) -> Option<&'a str> {
    attrs.get(name).and_then(Value::as_str)
}

/// An optional boolean attribute.
#[must_use]
pub fn opt_bool(attrs: &Attributes, name: &str) -> Option<bool> {
    attrs.get(name).and_then(Value::as_bool)
}

/// An optional integer attribute.
#[must_use]
pub fn opt_i64(attrs: &Attributes, name: &str) -> Option<i64> {
    attrs.get(name).and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
}

/// An optional list of strings.
#[must_use]
pub fn str_list(attrs: &Attributes, name: &str) -> Vec<String> {
    attrs
        .get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The recorded `id` output.
///
/// # Errors
/// The record has none (it was never created).
pub fn recorded_id(recorded: &ResourceState) -> Result<&str, ProviderError> {
    recorded
        .outputs
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ProviderError::invalid(
                "the record has no `id`; remove it with `anvil state rm` and apply again",
            )
        })
}

/// The record observed: `recorded` with the real values of the attributes it has (an
/// attribute the spec left unset stays unset, so AWS defaults are not drift), the keys in
/// `always` set whenever their real value is non-empty (rules and tags added outside
/// anvil must show), and fresh outputs.
#[must_use]
pub fn observed(
    recorded: &ResourceState,
    real: Vec<(&str, Value)>,
    always: &[&str],
    outputs: BTreeMap<String, Value>,
) -> ResourceState {
    let mut obs = recorded.clone();
    for (k, v) in real {
        let empty = match &v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            _ => false,
        };
        if obs.attributes.contains_key(k) || (always.contains(&k) && !empty) {
            obs.attributes.insert(k.to_string(), v);
        }
    }
    obs.outputs = outputs;
    obs
}

/// `real` in the order of `recorded` where they hold the same items, the rest after: AWS
/// returns lists (rules, subnet IDs) in its own order, which is not drift.
#[must_use]
pub fn align(recorded: Option<&Value>, real: Vec<Value>) -> Value {
    let mut rest = real;
    let mut out = Vec::with_capacity(rest.len());
    if let Some(Value::Array(rec)) = recorded {
        for r in rec {
            if let Some(i) = rest.iter().position(|x| x == r) {
                out.push(rest.remove(i));
            }
        }
    }
    out.extend(rest);
    Value::Array(out)
}

/// Outputs from pairs.
#[must_use]
pub fn outputs<const N: usize>(pairs: [(&str, Value); N]) -> BTreeMap<String, Value> {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Runs a delete, retrying while AWS says a dependency is still there
/// (`DependencyViolation` and similar, classified `Retryable`) or asks to slow down.
///
/// # Errors
/// The last error, once it is not transient or the attempts are spent.
pub async fn delete_retrying<F, Fut>(op: F) -> Result<(), ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ProviderError>>,
{
    match crate::providers::retry::run(DEPENDENCY, crate::providers::retry::transient, op).await {
        Ok(()) => Ok(()),
        Err((e, _)) if e.kind == ErrorKind::NotFound => Ok(()),
        Err((e, n)) if n > 1 => Err(ProviderError {
            message: format!("{} (after {n} attempts)", e.message),
            ..e
        }),
        Err((e, _)) => Err(e),
    }
}

/// The ID of the object a create replaces while it still exists (create-before-destroy:
/// `ChangeRequest::prior`); adopt-first must neither adopt nor remove it.
#[must_use]
pub fn replaced_id<'a>(req: &crate::providers::ChangeRequest<'a>) -> Option<&'a str> {
    req.prior
        .and_then(|p| p.outputs.get("id"))
        .and_then(Value::as_str)
}

/// Removes the stale objects adopt-first found (see `super::adopt_first`), one attempt
/// each, saying so as progress. A failure is reported, not raised: the create goes on, and
/// if the stale object is in its way (a taken name or CIDR) AWS says so.
pub async fn remove_stale<F, Fut>(
    req: &crate::providers::ChangeRequest<'_>,
    what: &str,
    stale: &[String],
    remove: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ProviderError>>,
{
    for id in stale {
        let msg = match remove(id.clone()).await {
            Ok(()) => format!(
                "removed {what} {id}: an interrupted run left it, and it no longer fits the spec"
            ),
            Err(e) => format!(
                "could not remove {what} {id}, left by an interrupted run and no longer fitting \
                 the spec: {}; delete it by hand",
                e.message
            ),
        };
        (req.progress)(&msg);
    }
}

/// A `Conflict` for an object with the name anvil wants that belongs to someone else.
#[must_use]
pub fn not_ours(what: &str, name: &str) -> ProviderError {
    ProviderError::of(
        ErrorKind::Conflict,
        format!(
            "{what} `{name}` already exists and is not tagged as this state's \
             ({TAG_LINEAGE}); pick another name, or delete it"
        ),
    )
}

/// `Ok(None)` for a `NotFound` error: the object is gone.
///
/// # Errors
/// Any other error.
pub fn found<T>(r: Result<T, ProviderError>) -> Result<Option<T>, ProviderError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A batched refresh's filter: `name` (e.g. `subnet-id`) over the recorded ids of
/// `items`. A filter, unlike the `*Ids` parameters, leaves out the objects that are gone
/// instead of failing the whole call with `Invalid…ID.NotFound`.
///
/// # Errors
/// A record has no `id`.
pub fn id_filter(
    name: &str,
    items: &[&ResourceState],
) -> Result<aws_sdk_ec2::types::Filter, ProviderError> {
    let ids = items
        .iter()
        .map(|r| recorded_id(r).map(str::to_string))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(ids))
        .build())
}

/// A batched refresh's answer: each record matched by its `id` to the object `found`
/// holds (`id_of`) and observed with `observe`; `None` for the ones not found (gone).
///
/// # Errors
/// A record has no `id`.
pub fn each_found<T>(
    items: &[&ResourceState],
    found: &[T],
    id_of: impl Fn(&T) -> Option<&str>,
    observe: impl Fn(&ResourceState, &T) -> Option<ResourceState>,
) -> Result<Vec<Option<ResourceState>>, ProviderError> {
    let by_id = found
        .iter()
        .filter_map(|x| id_of(x).map(|id| (id, x)))
        .collect::<std::collections::HashMap<_, _>>();
    items
        .iter()
        .map(|r| Ok(by_id.get(recorded_id(r)?).and_then(|x| observe(r, x))))
        .collect()
}

/// The ARN of an EC2 object (`arn:aws:ec2:REGION:ACCOUNT:KIND/ID`).
#[must_use]
pub fn ec2_arn(c: &Clients, owner: Option<&str>, kind: &str, id: &str) -> Value {
    Value::from(format!(
        "arn:aws:ec2:{}:{}:{kind}/{id}",
        c.region(),
        owner.unwrap_or_default()
    ))
}

/// What a create or update reports: the requested attributes and these outputs.
#[must_use]
pub fn applied(
    req: &crate::providers::ChangeRequest<'_>,
    outputs: BTreeMap<String, Value>,
) -> crate::providers::Applied {
    crate::providers::Applied {
        attributes: req.attributes.clone(),
        outputs,
    }
}
