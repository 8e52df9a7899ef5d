//! The `aws` provider: VPC networking, EKS, RDS and S3 through the AWS SDK, one file
//! per resource type.
//!
//! Schemas (attributes, computed outputs, which changes force replacement, which values
//! are sensitive) are plain data and always compiled, so `validate` and `plan` work in a
//! build without the `aws` cargo feature; there every AWS call fails saying so. The SDK
//! calls live behind `#[cfg(feature = "aws")]`: [`sdk`] (configuration, clients, error
//! classification, tags) and each type's `AwsResource` methods.
//!
//! Every object anvil creates carries the tags `anvil:address` and `anvil:lineage`.
//! Create is adopt-first: it looks the object up by those tags (or by its unique name)
//! before creating, so a run killed between the AWS call and the journal never makes a
//! second object. Deletes retry `DependencyViolation` with backoff, and asynchronous
//! states (NAT available, EKS ACTIVE, RDS available, deletions) are awaited by
//! [`waiter`], reporting progress. See `docs/aws.md`.

pub mod db_instance;
pub mod db_subnet_group;
pub mod eip;
pub mod eks_cluster;
pub mod eks_node_group;
pub mod internet_gateway;
pub mod nat_gateway;
pub mod route_table;
pub mod route_table_association;
pub mod s3_bucket;
pub mod s3_bucket_lifecycle_configuration;
pub mod s3_bucket_public_access_block;
pub mod s3_bucket_versioning;
#[cfg(feature = "aws")]
pub mod sdk;
pub mod security_group;
pub mod subnet;
pub mod vpc;
pub mod waiter;

use super::resource::{Context, ResourceType, Typed};
use super::{Applied, ChangeRequest, ErrorKind, ProviderError};
use crate::model::{AttrKind, AttrSchema, ResourceSchema};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How many AWS operations run at once: the EC2 API throttles bursts per account, and
/// most of the time goes to waits anyway.
const CONCURRENCY: usize = 10;

/// The tag naming the anvil address an object belongs to.
pub const TAG_ADDRESS: &str = "anvil:address";
/// The tag naming the state lineage an object belongs to.
pub const TAG_LINEAGE: &str = "anvil:lineage";

/// The `aws` provider with all its resource types, configured from the environment.
#[must_use]
pub fn provider() -> Typed<AwsContext> {
    with_context(AwsContext::default())
}

/// The `aws` provider over a given context.
#[must_use]
pub fn with_context(ctx: AwsContext) -> Typed<AwsContext> {
    Typed::new("aws", ctx, CONCURRENCY)
        .with(vpc::Vpc)
        .with(subnet::Subnet)
        .with(internet_gateway::InternetGateway)
        .with(eip::Eip)
        .with(nat_gateway::NatGateway)
        .with(route_table::RouteTable)
        .with(route_table_association::RouteTableAssociation)
        .with(security_group::SecurityGroup)
        .with(eks_cluster::EksCluster)
        .with(eks_node_group::EksNodeGroup)
        .with(db_subnet_group::DbSubnetGroup)
        .with(db_instance::DbInstance)
        .with(s3_bucket::S3Bucket)
        .with(s3_bucket_versioning::S3BucketVersioning)
        .with(s3_bucket_lifecycle_configuration::S3BucketLifecycleConfiguration)
        .with(s3_bucket_public_access_block::S3BucketPublicAccessBlock)
}

/// The typed settings of an `aws` provider instance (a `providers:` entry). Unset fields
/// fall back to the SDK's own sources: `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_PROFILE`,
/// `AWS_ENDPOINT_URL`, the shared config and credentials files, instance roles.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The region, e.g. `eu-west-1`.
    pub region: Option<String>,
    /// A role to assume (STS AssumeRole) with the base credentials.
    pub role_arn: Option<String>,
    /// The external ID the role's trust policy asks for.
    pub external_id: Option<String>,
    /// An endpoint for every service (tests: moto); S3 then uses path-style addressing.
    pub endpoint: Option<String>,
    /// A named profile of the shared config files.
    pub profile: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The external ID is a shared secret between the account and anvil's operator.
        f.debug_struct("Settings")
            .field("region", &self.region)
            .field("role_arn", &self.role_arn)
            .field(
                "external_id",
                &self.external_id.as_ref().map(|_| "(redacted)"),
            )
            .field("endpoint", &self.endpoint)
            .field("profile", &self.profile)
            .finish()
    }
}

/// One configured AWS account/region: the settings and the SDK clients made from them
/// on first use (so specs without AWS resources never need credentials).
#[derive(Default)]
pub struct AwsContext {
    settings: Settings,
    #[cfg(feature = "aws")]
    clients: tokio::sync::OnceCell<sdk::Clients>,
}

impl Context for AwsContext {
    fn configure(settings: &Map<String, Value>) -> Result<AwsContext, ProviderError> {
        let settings: Settings =
            serde_json::from_value(Value::Object(settings.clone())).map_err(|e| {
                ProviderError::invalid(format!(
                    "aws provider settings: {e}; the keys are region, role_arn, external_id, \
                     endpoint and profile"
                ))
            })?;
        if let Some(arn) = &settings.role_arn {
            check_role_arn(arn)?;
        }
        // Without the `aws` feature the context holds only its settings, so the update
        // is empty there; with it, the SDK clients start unset.
        #[allow(clippy::needless_update)]
        Ok(AwsContext {
            settings,
            ..AwsContext::default()
        })
    }

    /// Instances with the same settings reach the same account and region as the same
    /// principal (unset settings come from the same process environment), so one
    /// batched `Describe*` reads the records of all of them: 20 environments in one
    /// workspace refresh their subnets with one call, not 20.
    fn read_scope(&self) -> Option<String> {
        let s = &self.settings;
        Some(
            serde_json::json!([s.region, s.role_arn, s.external_id, s.endpoint, s.profile])
                .to_string(),
        )
    }
}

impl AwsContext {
    /// The settings this instance was configured with.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The SDK clients, made on first use.
    ///
    /// # Errors
    /// The configuration could not be loaded (no region, a bad profile, the role could not
    /// be assumed).
    #[cfg(feature = "aws")]
    pub async fn clients(&self) -> Result<&sdk::Clients, ProviderError> {
        self.clients
            .get_or_try_init(|| sdk::Clients::load(&self.settings))
            .await
    }
}

/// Checks the shape of an IAM role ARN (`arn:PARTITION:iam::ACCOUNT:role/NAME`), so a typo
/// is refused before any AWS call.
///
/// # Errors
/// The ARN does not have that shape; the message shows it.
pub fn check_role_arn(arn: &str) -> Result<(), ProviderError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ProviderError::invalid(format!(
            "role_arn `{arn}` is not an IAM role ARN; write arn:aws:iam::123456789012:role/NAME"
        )))
    }
}

/// The error every AWS call gives in a build without the `aws` feature.
#[must_use]
pub fn without_feature() -> ProviderError {
    ProviderError::invalid(
        "anvil was built without the aws feature, so it cannot reach AWS; rebuild with \
         `cargo build --features aws` (it is on by default)",
    )
}

/// The kind of an AWS error, from its error code (and the HTTP status when the code is
/// not one anvil knows). Throttling is retried with backoff; `DependencyViolation` and
/// "in use" states are transient while something else is being deleted.
#[must_use]
pub fn kind_of(code: &str, status: Option<u16>) -> ErrorKind {
    match code {
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "ProvisionedThroughputExceededException" => ErrorKind::Throttled,
        "DependencyViolation"
        | "ResourceInUseException"
        | "InvalidDBInstanceState"
        | "InvalidDBInstanceStateFault"
        | "InvalidDBSubnetGroupStateFault"
        | "IncorrectState"
        | "InvalidRouteTableID.Malformed.Transient"
        | "InternalError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "Unavailable"
        | "DispatchFailure"
        | "TimeoutError" => ErrorKind::Retryable,
        "AuthFailure"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "InvalidAccessKeyId"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken"
        | "OptInRequired" => ErrorKind::Auth,
        "NoSuchBucket"
        | "NoSuchKey"
        | "NotFound"
        | "ResourceNotFoundException"
        | "NoSuchLifecycleConfiguration"
        | "NoSuchPublicAccessBlockConfiguration"
        | "NoSuchTagSet"
        | "DBInstanceNotFound"
        | "DBInstanceNotFoundFault"
        | "DBSubnetGroupNotFoundFault" => ErrorKind::NotFound,
        c if c.ends_with(".NotFound") || c.ends_with("NotFoundFault") => ErrorKind::NotFound,
        c if c.contains("AlreadyExists")
            || c.ends_with(".Duplicate")
            || c == "BucketAlreadyExists"
            || c == "BucketAlreadyOwnedByYou" =>
        {
            ErrorKind::Conflict
        }
        c if c.starts_with("Invalid")
            || c.starts_with("Missing")
            || c == "ValidationError"
            || c == "InvalidParameterException" =>
        {
            ErrorKind::InvalidRequest
        }
        _ => status.map_or(ErrorKind::Permanent, ErrorKind::from_status),
    }
}

/// What to do about an AWS error of this kind, appended to its message.
#[must_use]
pub fn advice(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Auth => {
            "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the \
             provider's `profile`), the role (`role_arn`, `external_id`) and its permissions"
        }
        ErrorKind::Throttled => "AWS is throttling requests; run apply again in a while",
        ErrorKind::Retryable => {
            "check that the endpoint is reachable (the provider's `endpoint`, AWS_ENDPOINT_URL, \
             the region) and run apply again"
        }
        ErrorKind::NotFound => "the object is gone; run `anvil plan` to see what anvil will do",
        ErrorKind::Conflict => "another object holds the name; pick another or remove it",
        ErrorKind::InvalidRequest => "fix the attribute AWS refused in the spec",
        ErrorKind::Permanent | ErrorKind::Cancelled => "fix the cause and run apply again",
    }
}

/// One AWS resource type: its schema (always compiled) and its SDK calls (only with the
/// `aws` feature). Every type is made a [`ResourceType`] by the blanket impl below, which
/// makes the clients on first use or says that the feature is missing.
#[async_trait]
pub trait AwsResource: Send + Sync {
    /// The type's schema.
    fn schema(&self) -> ResourceSchema;

    /// Reads the real object; `Ok(None)` when it is gone.
    ///
    /// # Errors
    /// AWS could not be asked.
    #[cfg(feature = "aws")]
    async fn read(
        &self,
        c: &sdk::Clients,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError>;

    /// Whether [`AwsResource::read_many`] describes many objects per call. Default: no.
    fn batches_reads(&self) -> bool {
        false
    }

    /// Reads many records of this type, one result per record in order. Default: one
    /// [`AwsResource::read`] after the other; EC2 types override it with one `Describe*`
    /// call filtered by their ids.
    ///
    /// # Errors
    /// AWS could not be asked.
    #[cfg(feature = "aws")]
    async fn read_many(
        &self,
        c: &sdk::Clients,
        items: &[&ResourceState],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let mut out = Vec::with_capacity(items.len());
        for recorded in items {
            out.push(self.read(c, recorded).await?);
        }
        Ok(out)
    }

    /// Creates the object, or adopts the one a previous run made (found by tags or name).
    ///
    /// # Errors
    /// AWS refused; the message names the endpoint and the AWS error code.
    #[cfg(feature = "aws")]
    async fn create(
        &self,
        c: &sdk::Clients,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError>;

    /// Changes the in-place attributes of the object.
    ///
    /// # Errors
    /// AWS refused; the message names the endpoint and the AWS error code.
    #[cfg(feature = "aws")]
    async fn update(
        &self,
        c: &sdk::Clients,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError>;

    /// Deletes the object (already gone is success).
    ///
    /// # Errors
    /// AWS refused; the message names the endpoint and the AWS error code.
    #[cfg(feature = "aws")]
    async fn delete(&self, c: &sdk::Clients, recorded: &ResourceState)
        -> Result<(), ProviderError>;
}

#[async_trait]
impl<T: AwsResource> ResourceType<AwsContext> for T {
    fn schema(&self) -> ResourceSchema {
        AwsResource::schema(self)
    }

    async fn read(
        &self,
        ctx: &AwsContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        #[cfg(feature = "aws")]
        {
            AwsResource::read(self, ctx.clients().await?, recorded).await
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (ctx, recorded);
            Err(without_feature())
        }
    }

    fn batches_reads(&self) -> bool {
        AwsResource::batches_reads(self)
    }

    async fn read_many(
        &self,
        ctx: &AwsContext,
        items: &[(&str, &ResourceState)],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        #[cfg(feature = "aws")]
        {
            let records = items.iter().map(|(_, r)| *r).collect::<Vec<_>>();
            AwsResource::read_many(self, ctx.clients().await?, &records).await
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (ctx, items);
            Err(without_feature())
        }
    }

    async fn create(
        &self,
        ctx: &AwsContext,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        #[cfg(feature = "aws")]
        {
            AwsResource::create(self, ctx.clients().await?, req).await
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (ctx, req);
            Err(without_feature())
        }
    }

    async fn update(
        &self,
        ctx: &AwsContext,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        #[cfg(feature = "aws")]
        {
            AwsResource::update(self, ctx.clients().await?, req).await
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (ctx, req);
            Err(without_feature())
        }
    }

    async fn delete(
        &self,
        ctx: &AwsContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<(), ProviderError> {
        #[cfg(feature = "aws")]
        {
            AwsResource::delete(self, ctx.clients().await?, recorded).await
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (ctx, recorded);
            Err(without_feature())
        }
    }
}

/// Adopt-first, the test (docs/aws.md, "Tags and adoption"): whether the object `id`,
/// found by this address's tags or by its name, may be adopted. It must be live (`read`
/// sees it: not deleting, deleted or failed) and every attribute that forces replacement
/// must read as the spec wants it, exactly as the plan compares them — else the next plan
/// would replace what this create adopted.
///
/// # Errors
/// AWS could not be asked.
#[cfg(feature = "aws")]
pub(crate) async fn fits<T: AwsResource + ?Sized>(
    ty: &T,
    c: &sdk::Clients,
    req: &ChangeRequest<'_>,
    id: &str,
) -> Result<bool, ProviderError> {
    let probe = crate::providers::imported_record(
        req.ty,
        "aws",
        req.attributes.clone(),
        BTreeMap::from([("id".to_string(), Value::from(id))]),
    );
    let Some(real) = ty.read(c, &probe).await? else {
        return Ok(false);
    };
    let schema = ty.schema();
    Ok(req
        .attributes
        .iter()
        .filter(|(k, _)| schema.forces_new(k))
        .all(|(k, want)| {
            let have = real.attributes.get(k).unwrap_or(&Value::Null);
            have == want
        }))
}

/// Adopt-first, the choice among the IDs a lookup by this address's tags found (oldest
/// first, as AWS lists them): the first that [`fits`] is adopted; the others are stale —
/// left by an interrupted run before a parent they name was replaced or the spec changed —
/// and returned for removal. The object a create-before-destroy replace is replacing
/// (`req.prior`) carries the same tags but is neither: it is recorded, and its own delete
/// comes once the new one exists.
///
/// # Errors
/// AWS could not be asked.
#[cfg(feature = "aws")]
pub(crate) async fn adopt_first<T: AwsResource + ?Sized>(
    ty: &T,
    c: &sdk::Clients,
    req: &ChangeRequest<'_>,
    found: Vec<String>,
) -> Result<(Option<String>, Vec<String>), ProviderError> {
    let replaced = sdk::replaced_id(req);
    let mut adopt = None;
    let mut stale = Vec::new();
    for id in found {
        if id.is_empty() || Some(id.as_str()) == replaced {
            continue;
        }
        if adopt.is_none() && fits(ty, c, req, &id).await? {
            adopt = Some(id);
        } else {
            stale.push(id);
        }
    }
    Ok((adopt, stale))
}

/// Adopt-first for a named object (EKS clusters and node groups) found with this state's
/// lineage tag: `true` when it [`fits`]. When it does not — an interrupted run made it
/// before a parent it names was replaced or the spec changed, or it is being deleted — it
/// is removed with `remove`, which waits until it is gone (the name is needed), and the
/// answer is `false`: create anew. The object a create-before-destroy replace is
/// replacing holds the name the new one needs: refused.
///
/// # Errors
/// AWS could not be asked, the removal failed, or the name is held by the object being
/// replaced.
#[cfg(feature = "aws")]
pub(crate) async fn adopt_named<T, F, Fut>(
    ty: &T,
    c: &sdk::Clients,
    req: &ChangeRequest<'_>,
    what: &str,
    id: &str,
    remove: F,
) -> Result<bool, ProviderError>
where
    T: AwsResource + ?Sized,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), ProviderError>>,
{
    if sdk::replaced_id(req) == Some(id) {
        return Err(ProviderError::of(
            ErrorKind::Conflict,
            format!(
                "{what} `{id}` cannot be replaced create-before-destroy: the new one needs the \
                 name the old one holds; drop `create_before_destroy` from its lifecycle"
            ),
        ));
    }
    if fits(ty, c, req, id).await? {
        return Ok(true);
    }
    (req.progress)(&format!(
        "removing {what} {id}: an interrupted run left it, and it no longer fits the spec"
    ));
    remove().await?;
    Ok(false)
}

/// How an attribute behaves, for the compact schema tables of the type files.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Required, changed in place.
    Required,
    /// Optional, changed in place.
    Optional,
    /// Required; a change replaces the object.
    RequiredNew,
    /// Optional; a change replaces the object.
    OptionalNew,
    /// Optional, sensitive (only a fingerprint in state), changed in place.
    Sensitive,
}

/// A type's schema from a table of `(name, kind, mode, description)` and its computed
/// outputs. Every type also gets `tags` unless `tagged` is false.
pub(crate) fn schema(
    ty: &str,
    attrs: &[(&str, AttrKind, Mode, &'static str)],
    tagged: bool,
    outputs: &[(&str, &'static str)],
) -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    for &(name, kind, mode, description) in attrs {
        let a = AttrSchema::new(kind, description);
        let a = match mode {
            Mode::Required => a.required(),
            Mode::Optional => a,
            Mode::RequiredNew => a.required().force_new(),
            Mode::OptionalNew => a.force_new(),
            Mode::Sensitive => a.sensitive(),
        };
        attributes.insert(name.to_string(), a);
    }
    if tagged {
        attributes.insert(
            "tags".into(),
            AttrSchema::new(
                AttrKind::Map,
                "Tags (string values). anvil adds `anvil:address` and `anvil:lineage`.",
            ),
        );
    }
    ResourceSchema {
        ty: ty.to_string(),
        provider: "aws".into(),
        attributes,
        outputs: outputs
            .iter()
            .map(|&(n, d)| (n.to_string(), d))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Provider;
    use serde_json::json;

    #[test]
    fn all_sixteen_types_are_registered_with_tags_and_ids() {
        let p = provider();
        let schemas = p.schemas();
        assert_eq!(schemas.len(), 16);
        for s in &schemas {
            assert_eq!(s.provider, "aws");
            assert!(s.ty.starts_with("aws_"), "{}", s.ty);
            let sub = s.ty.starts_with("aws_s3_bucket_") || s.ty.ends_with("_association");
            assert_eq!(s.attributes.contains_key("tags"), !sub, "{}", s.ty);
            assert!(
                sub || s.outputs.contains_key("id"),
                "{} has no computed id",
                s.ty
            );
        }
    }

    #[test]
    fn force_new_and_sensitive_follow_what_aws_can_change() {
        let p = provider();
        let by: BTreeMap<String, ResourceSchema> =
            p.schemas().into_iter().map(|s| (s.ty.clone(), s)).collect();
        let s = |ty: &str| &by[ty];
        assert!(s("aws_vpc").forces_new("cidr_block"));
        assert!(!s("aws_vpc").forces_new("enable_dns_hostnames"));
        assert!(s("aws_subnet").forces_new("availability_zone"));
        assert!(!s("aws_route_table").forces_new("route"));
        assert!(s("aws_route_table").forces_new("vpc_id"));
        assert!(!s("aws_security_group").forces_new("ingress"));
        assert!(s("aws_security_group").forces_new("vpc_id"));
        assert!(s("aws_eks_cluster").forces_new("subnet_ids"));
        assert!(!s("aws_eks_cluster").forces_new("version"));
        assert!(s("aws_eks_node_group").forces_new("instance_types"));
        assert!(!s("aws_eks_node_group").forces_new("scaling_config"));
        assert!(s("aws_db_instance").is_sensitive("password"));
        assert!(!s("aws_db_instance").forces_new("password"));
        assert!(!s("aws_db_instance").forces_new("instance_class"));
        assert!(s("aws_db_instance").forces_new("engine"));
        assert!(s("aws_s3_bucket").forces_new("bucket"));
        assert!(!s("aws_db_subnet_group").forces_new("subnet_ids"));
        assert!(s("aws_eks_cluster").outputs.contains_key("endpoint"));
        assert!(s("aws_db_instance")
            .outputs
            .contains_key("master_user_secret_arn"));
    }

    #[test]
    fn settings_are_typed_and_checked() {
        let ok = json!({"region": "eu-west-1", "role_arn": "arn:aws:iam::123456789012:role/anvil",
                        "external_id": "s3cr3t", "endpoint": "http://127.0.0.1:5000", "profile": "p"});
        let c = AwsContext::configure(ok.as_object().unwrap()).unwrap();
        assert_eq!(c.settings().region.as_deref(), Some("eu-west-1"));
        assert!(!format!("{:?}", c.settings()).contains("s3cr3t"));
        let e = AwsContext::configure(json!({"regoin": "x"}).as_object().unwrap())
            .err()
            .unwrap();
        assert!(
            e.message.contains("regoin") && e.message.contains("region"),
            "{}",
            e.message
        );
        for bad in [
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:s3:::bucket",
            "role/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            let e = AwsContext::configure(json!({ "role_arn": bad }).as_object().unwrap())
                .err()
                .unwrap();
            assert!(
                e.message.contains(bad) && e.message.contains("arn:aws:iam::"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn aws_error_codes_pick_the_retry_decision() {
        assert_eq!(kind_of("Throttling", Some(400)), ErrorKind::Throttled);
        assert_eq!(
            kind_of("RequestLimitExceeded", Some(503)),
            ErrorKind::Throttled
        );
        assert_eq!(
            kind_of("DependencyViolation", Some(400)),
            ErrorKind::Retryable
        );
        assert_eq!(
            kind_of("InvalidVpcID.NotFound", Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_of("DBInstanceNotFound", Some(404)),
            ErrorKind::NotFound
        );
        assert_eq!(kind_of("NoSuchBucket", Some(404)), ErrorKind::NotFound);
        assert_eq!(kind_of("AuthFailure", Some(401)), ErrorKind::Auth);
        assert_eq!(kind_of("InvalidClientTokenId", Some(403)), ErrorKind::Auth);
        assert_eq!(
            kind_of("InvalidParameterValue", Some(400)),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind_of("BucketAlreadyExists", Some(409)),
            ErrorKind::Conflict
        );
        assert_eq!(kind_of("DispatchFailure", None), ErrorKind::Retryable);
        assert_eq!(kind_of("Weird", Some(503)), ErrorKind::Retryable);
        assert_eq!(kind_of("Weird", None), ErrorKind::Permanent);
        assert!(advice(ErrorKind::Auth).contains("role_arn"));
    }

    #[cfg(not(feature = "aws"))]
    #[tokio::test]
    async fn without_the_feature_every_call_says_so() {
        let p = provider();
        let rec = crate::providers::imported_record(
            "aws_vpc",
            "aws",
            Default::default(),
            Default::default(),
        );
        let e = p.read("aws_vpc.main", &rec).await.unwrap_err();
        assert!(
            e.message
                .starts_with("aws_vpc.main: anvil was built without the aws feature"),
            "{}",
            e.message
        );
    }
}
