//! The typed shape of each spec kind, and the JSON Schemas generated from it.
//!
//! These types are the single source of truth: `schemars` turns them into the schema that
//! validates documents (and that is checked into `schemas/`), and `serde` turns a
//! validated document into them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every kind of document anvil accepts, as written in `kind:`.
pub const KINDS: &[&str] = &["Resources", "Foundation", "Environment"];

/// The only `apiVersion` anvil accepts.
pub const API_VERSION: &str = "anvil/v1";

/// Where the generated schemas claim to live; editors only use it as an identifier.
const SCHEMA_BASE: &str = "https://anvil.invalid/schemas";

/// `apiVersion: anvil/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first and only version.
    #[serde(rename = "anvil/v1")]
    V1,
}

/// `kind: Resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResourcesKind {
    /// Resources written by hand.
    Resources,
}

/// A `Resources` document: the InfraModel written by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDoc {
    /// Always `anvil/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// Always `Resources`.
    pub kind: ResourcesKind,
    /// Names the workspace; every document loaded together must share it.
    pub metadata: Metadata,
    /// Provider instances and their settings (see [`ProviderEntries`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ProviderEntries>,
    /// The resources, each addressed as `TYPE.NAME`.
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
    /// Named values computed from the applied resources, read with `anvil output`
    /// (e.g. `vpc_id: { value: "${aws_vpc.main.id}" }`). Names are unique across the
    /// workspace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, OutputSpec>,
}

/// One output: a value, usually a `${TYPE.NAME.ATTR}` reference or a template of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The value: any YAML value; strings may hold `${TYPE.NAME.ATTR}` references.
    pub value: serde_json::Value,
    /// What it is, shown by `anvil output`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The instances of one provider in a `providers:` block, by provider name (`bosh`,
/// `vault`): one map, or a list of maps. An entry without `alias` configures the
/// provider's default instance (`bosh`); one with `alias: east` configures `bosh.east`,
/// which resources choose with `provider: bosh.east`. The other keys are the provider's
/// own settings (`bosh`: environment, client, client_secret, ca_cert; `vault`: address,
/// token, role_id, secret_id, cacert, namespace); what an entry leaves out falls back to
/// the provider's environment variables (`BOSH_*`, `VAULT_*`). Write secrets as
/// `${env:NAME}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProviderEntries {
    /// One instance.
    One(BTreeMap<String, serde_json::Value>),
    /// Several instances, each with a distinct `alias` (at most one without).
    Many(Vec<BTreeMap<String, serde_json::Value>>),
}

impl ProviderEntries {
    /// The entries with their index in a list (`None` for a single map).
    #[must_use]
    pub fn entries(&self) -> Vec<(Option<usize>, &BTreeMap<String, serde_json::Value>)> {
        match self {
            ProviderEntries::One(m) => vec![(None, m)],
            ProviderEntries::Many(v) => v.iter().enumerate().map(|(i, m)| (Some(i), m)).collect(),
        }
    }
}

/// Document metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The workspace name: lowercase letters, digits and `-`, at most 63 characters,
    /// starting and ending with a letter or digit.
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
}

/// One resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource type, e.g. `null_resource` or `aws_vpc`.
    #[serde(rename = "type")]
    #[schemars(pattern(r"^[a-z][a-z0-9_]*$"))]
    pub ty: String,
    /// The resource name, unique per type.
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub name: String,
    /// Provider attributes. A string `${TYPE.NAME.ATTR}` anywhere is a reference to another
    /// resource's output; `$${` writes a literal `${`.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Addresses (`TYPE.NAME`) this resource must be applied after.
    #[serde(default)]
    #[schemars(inner(pattern(r"^[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_-]*$")))]
    pub depends_on: Vec<String>,
    /// How changes to this resource are applied.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// The provider instance that manages it: `PROVIDER` (the default instance) or
    /// `PROVIDER.ALIAS` (an instance a `providers:` entry with that `alias` configures).
    /// Default: the type's provider's default instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z][a-z0-9_]*(\.[a-z0-9][a-z0-9_-]*)?$"))]
    pub provider: Option<String>,
    /// Where a generated resource comes from when it is not a spec file (`broker`: an
    /// instance of `anvil broker`'s store); plans mark it. Never read from YAML.
    #[serde(skip)]
    #[schemars(skip)]
    pub origin: Option<String>,
}

/// How changes to a resource are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Refuse any plan that would delete this resource.
    #[serde(default)]
    pub prevent_destroy: bool,
    /// On replacement, create the new resource before deleting the old one.
    #[serde(default)]
    pub create_before_destroy: bool,
    /// Attribute names whose changes are ignored when planning.
    #[serde(default)]
    pub ignore_changes: Vec<String>,
    /// On delete, forget the resource in state but leave it in the real world.
    #[serde(default)]
    pub retain_on_delete: bool,
}

/// `kind: Foundation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FoundationKind {
    /// A BOSH Director, a Vault, a service catalog and its instances.
    Foundation,
}

/// A `Foundation` document: Blacksmith's world. Normalises into one `bosh_deployment` per
/// instance (named `{plan_id}-{instance_id}`) and the Vault entries Blacksmith keeps
/// (the `db` index entry, `{instance_id}/manifest` and `{instance_id}/metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FoundationDoc {
    /// Always `anvil/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// Always `Foundation`.
    pub kind: FoundationKind,
    /// Names the workspace; every document loaded together must share it.
    pub metadata: Metadata,
    /// The provider alias of this Foundation's Director and Vault: its resources use the
    /// instances `bosh.ALIAS` and `vault.ALIAS`, configured by `director` and `vault`.
    /// Without it they configure the default `bosh` and `vault` instances, so several
    /// Foundations of one workspace with different Directors or Vaults each need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]*$"))]
    pub alias: Option<String>,
    /// Provider instances and their settings, as in a `Resources` document.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ProviderEntries>,
    /// The BOSH Director the instances are deployed to. Unset fields fall back to the
    /// `BOSH_*` environment variables.
    #[serde(default)]
    pub director: DirectorSpec,
    /// The Vault holding Blacksmith's index and instance secrets. Unset fields fall back to
    /// the `VAULT_*` environment variables.
    #[serde(default)]
    pub vault: VaultSpec,
    /// The service catalog, as the broker advertises it.
    pub catalog: Catalog,
    /// The service instances.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
}

/// Where the BOSH Director is and how to log in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectorSpec {
    /// The Director URL, e.g. `https://10.0.0.6:25555` (else `BOSH_ENVIRONMENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Director's CA certificate: PEM text or a file path (else `BOSH_CA_CERT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The client name (else `BOSH_CLIENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The client secret (else `BOSH_CLIENT_SECRET`); write `${env:NAME}`, not the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// Where Vault is and which KV v2 mount Blacksmith uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultSpec {
    /// The Vault address, e.g. `https://vault.example:8200` (else `VAULT_ADDR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The KV v2 mount holding the `db` index and instance secrets; default `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub mount: Option<String>,
    /// Vault's CA certificate file (else `VAULT_CACERT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The Vault Enterprise namespace (else `VAULT_NAMESPACE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The service catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The services offered.
    pub services: Vec<ServiceSpec>,
}

/// One service offering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service id, unique in the catalog (Blacksmith uses the name, e.g. `redis`).
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9_-]*$"))]
    pub id: String,
    /// The name shown in the marketplace.
    pub name: String,
    /// A one-line description.
    #[serde(default)]
    pub description: String,
    /// Whether instances can be bound.
    #[serde(default = "yes")]
    pub bindable: bool,
    /// Marketplace tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The most instances of this service (all plans together): 0 means unlimited, a
    /// negative number means always over the limit.
    #[serde(default)]
    pub limit: i64,
    /// Whether instances may change plan (`PATCH` with another `plan_id`); default true.
    #[serde(default = "yes")]
    pub plan_updateable: bool,
    /// Marketplace metadata, passed through to the broker's catalog as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The plans of this service.
    pub plans: Vec<PlanSpec>,
}

fn yes() -> bool {
    true
}

/// One plan of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// The plan id, unique across the catalog (Blacksmith's are `service-plan`, e.g.
    /// `redis-small`); deployments are named `{plan_id}-{instance_id}`.
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9_-]*$"))]
    pub id: String,
    /// The plan name within its service, e.g. `small`.
    pub name: String,
    /// A one-line description.
    #[serde(default)]
    pub description: String,
    /// The most instances of this plan: 0 means unlimited, a negative number means always
    /// over the limit.
    #[serde(default)]
    pub limit: i64,
    /// Marketplace metadata (`displayName`, `bullets`, `costs`...), passed through to
    /// the broker's catalog as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The BOSH manifest template, a path relative to this spec file. Only
    /// `${instance.…}`, `${plan.…}`, `${service.…}` and `${params.…}` are substituted;
    /// BOSH `((vars))` and shell `${...}` pass through.
    pub manifest: String,
    /// Default parameter values, overridden by each instance's `parameters`.
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// The credentials template a bind hands to the application (the broker's `PUT
    /// …/service_bindings/:id`): any YAML map whose strings may hold `${…}`:
    /// `${instance.id|name|deployment_name|organization_guid|space_guid}`,
    /// `${plan.id|name}`, `${service.id|name}`, `${params.NAME}`, `${binding.id}`, the
    /// deployment's VMs from the Director as `${jobs.GROUP.ip}` / `${jobs.GROUP.dns}`
    /// (the bootstrap VM), `${jobs.GROUP.ips}` / `${jobs.GROUP.hosts}` (lists, every VM)
    /// and `${jobs.GROUP.N.ip}` / `${jobs.GROUP.N.dns}` (VM index N), and
    /// `${secret.NAME}`: a random 32-character secret generated on the instance's first
    /// bind and kept in Vault at `{instance_id}/credentials`, so every binding gets the
    /// same one. A string that is one `${…}` alone takes the value's type (a list, a
    /// number); `$${` writes a literal `${`. Without it the plan's instances bind with
    /// empty credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<BTreeMap<String, serde_json::Value>>,
    /// JSON Schemas of the parameters a platform may send, as the Open Service Broker
    /// catalog gives them (`service_instance.create.parameters`,
    /// `service_instance.update.parameters`): advertised in `GET /v2/catalog` and checked
    /// by `anvil broker` before it accepts a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<PlanSchemas>,
}

/// A plan's parameter schemas, in the Open Service Broker catalog's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSchemas {
    /// Schemas for service instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_instance: Option<InstanceSchemas>,
}

/// The parameter schemas of provisioning and updating a service instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSchemas {
    /// Checks the parameters of a provision request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<ParametersSchema>,
    /// Checks the parameters of an update request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<ParametersSchema>,
}

/// One parameters schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParametersSchema {
    /// A JSON Schema (draft 4 to 2020-12) the `parameters` object must satisfy.
    pub parameters: serde_json::Value,
}

/// One service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// The instance id: a UUID, as the platform gives it.
    pub id: String,
    /// The service id from the catalog.
    pub service: String,
    /// The plan id (or the plan name within the service).
    pub plan: String,
    /// Parameters for the manifest template (`${params.NAME}`).
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// The Cloud Foundry organization GUID the instance belongs to.
    #[serde(default)]
    pub organization_guid: String,
    /// The Cloud Foundry space GUID the instance belongs to.
    #[serde(default)]
    pub space_guid: String,
    /// Set when the instance comes from `anvil broker`'s store rather than a spec file
    /// (never read from YAML): plans mark it, and its index entry's final status is
    /// Blacksmith's `provisioning_completed`.
    #[serde(skip)]
    pub from_broker: bool,
}

/// The generated JSON Schema for a kind (`"Resources"`, matched case-insensitively), with
/// `$id`, `title` and `description` set; `None` for an unknown kind.
#[must_use]
pub fn schema_for_kind(kind: &str) -> Option<serde_json::Value> {
    let canonical = KINDS.iter().find(|k| k.eq_ignore_ascii_case(kind))?;
    let (schema, description) = match *canonical {
        "Resources" => (
            schemars::schema_for!(ResourcesDoc),
            "An anvil `Resources` document: resources written by hand, each addressed as TYPE.NAME.",
        ),
        "Foundation" => (
            schemars::schema_for!(FoundationDoc),
            "An anvil `Foundation` document: a BOSH Director, a Vault, a service catalog and its instances (Blacksmith's world).",
        ),
        "Environment" => (
            schemars::schema_for!(super::environment::EnvironmentDoc),
            "An anvil `Environment` document: a cloud environment (network, Kubernetes cluster, database, bucket) sized by one profile, normalised into AWS resources (docs/environment.md).",
        ),
        _ => return None,
    };
    let mut value = serde_json::to_value(schema).ok()?;
    let obj = value.as_object_mut()?;
    let file = format!("{}.schema.json", canonical.to_ascii_lowercase());
    obj.insert(
        "$id".into(),
        serde_json::Value::String(format!("{SCHEMA_BASE}/{file}")),
    );
    obj.insert(
        "title".into(),
        serde_json::Value::String(format!("anvil {canonical}")),
    );
    obj.insert(
        "description".into(),
        serde_json::Value::String(description.into()),
    );
    Some(value)
}
