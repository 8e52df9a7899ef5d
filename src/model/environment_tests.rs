//! Unit tests of the Environment normalisation: CIDR carving, name and ARN checks, the
//! size-profile table against docs and schema, the resources of the example (insta
//! snapshot) and the model they build against the AWS resource contract.

use super::*;
use crate::model::{self, AttrKind, AttrSchema, ResourceSchema, Schemas};
use crate::spec::{load_str, DocumentBody, LoadOptions, Spec};
use std::path::Path;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn carving_cuts_equal_power_of_two_subnets_public_first() {
    let c = carve(net("10.0.0.0/16"), 3).unwrap();
    let show = |v: &[Ipv4Net]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        show(&c.public),
        ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
    );
    assert_eq!(
        show(&c.private),
        ["10.0.96.0/19", "10.0.128.0/19", "10.0.160.0/19"]
    );
    let c = carve(net("192.168.4.0/24"), 2).unwrap();
    assert_eq!(show(&c.public), ["192.168.4.0/26", "192.168.4.64/26"]);
    assert_eq!(show(&c.private), ["192.168.4.128/26", "192.168.4.192/26"]);
    // 6 zones: 12 subnets need 4 bits.
    let c = carve(net("10.1.0.0/16"), 6).unwrap();
    assert_eq!(c.public[0].to_string(), "10.1.0.0/20");
    assert_eq!(c.private[5].to_string(), "10.1.176.0/20");
    // The smallest block that still fits 2 zones: /26 → four /28s.
    assert_eq!(
        carve(net("10.0.0.0/26"), 2).unwrap().private[1].to_string(),
        "10.0.0.48/28"
    );
}

#[test]
fn carving_refuses_blocks_too_small_and_says_what_fits() {
    let e = carve(net("10.0.0.0/27"), 3).unwrap_err();
    assert!(e.contains("10.0.0.0/27 cannot hold 6 subnets"), "{e}");
    assert!(e.contains("they would be /30"), "{e}");
    assert!(
        e.contains("use a block of /25 or bigger, e.g. 10.0.0.0/25"),
        "{e}"
    );
    assert!(carve(net("10.0.0.0/27"), 2).is_err());
    // Absurd zone counts are refused, not overflowed.
    assert!(carve(net("10.0.0.0/16"), u32::MAX)
        .unwrap_err()
        .contains("no VPC block holds 8589934590 subnets"));
}

#[test]
fn vpc_cidrs_must_parse_be_network_addresses_and_in_range() {
    assert_eq!(
        parse_vpc_cidr("10.0.0.0/16").unwrap().to_string(),
        "10.0.0.0/16"
    );
    let e = parse_vpc_cidr("10.0.0.300/16").unwrap_err();
    assert!(e.contains("is not an IPv4 CIDR block"), "{e}");
    assert!(parse_vpc_cidr("10.0.0.0")
        .unwrap_err()
        .contains("ADDRESS/PREFIX"));
    assert!(parse_vpc_cidr("fd00::/48").is_err());
    let e = parse_vpc_cidr("10.0.1.0/16").unwrap_err();
    assert!(
        e.contains("host bits set") && e.contains("write `10.0.0.0/16`"),
        "{e}"
    );
    let e = parse_vpc_cidr("10.0.0.0/8").unwrap_err();
    assert!(e.contains("/8 block: AWS VPCs take /16 to /28"), "{e}");
    assert!(parse_vpc_cidr("10.0.0.0/29").is_err());
}

#[test]
fn bucket_names_aws_would_refuse() {
    for ok in ["abc", "my-bucket.logs", "a1-b2", &"a".repeat(63)] {
        assert_eq!(bucket_name_problem(ok), None, "{ok}");
    }
    for (bad, why) in [
        ("ab", "3 to 63"),
        (&*"a".repeat(64), "3 to 63"),
        ("My-Bucket", "contains `M`"),
        ("my_bucket", "contains `_`"),
        ("-bucket", "start and end"),
        ("bucket-", "start and end"),
        ("my..bucket", "`..`"),
        ("my.-bucket", "`.-`"),
        ("192.168.5.4", "IP address"),
        ("xn--bucket", "`xn--`"),
        ("sthree-data", "`sthree-`"),
        ("amzn-s3-demo-x", "`amzn-s3-demo-`"),
        ("data-s3alias", "`-s3alias`"),
        ("data--ol-s3", "`--ol-s3`"),
        ("data.mrap", "`.mrap`"),
        ("data--x-s3", "`--x-s3`"),
    ] {
        let p = bucket_name_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(p.contains(why), "{bad}: {p}");
    }
}

#[test]
fn role_arns_must_be_iam_roles_of_the_account() {
    let acct = "123456789012";
    assert_eq!(
        role_arn_problem("arn:aws:iam::123456789012:role/x", acct),
        None
    );
    assert_eq!(
        role_arn_problem("arn:aws:iam::123456789012:role/path/to/x", acct),
        None
    );
    for (bad, why) in [
        ("role/x", "not an IAM role ARN"),
        ("arn:aws:s3:::bucket/x:y", "service `s3`"),
        (
            "arn:aws:iam:eu-west-1:123456789012:role/x",
            "region `eu-west-1`",
        ),
        ("arn:aws:iam::1234:role/x", "account `1234`"),
        ("arn:aws:iam::123456789012:user/x", "not a role"),
        ("arn:aws:iam::123456789012:role/", "role name ``"),
        (
            "arn:aws:iam::210987654321:role/x",
            "is in account 210987654321, but account_id is 123456789012",
        ),
        ("arn:gcp:iam::123456789012:role/x", "not an IAM role ARN"),
    ] {
        let p = role_arn_problem(bad, acct).unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(p.contains(why), "{bad}: {p}");
    }
}

/// The profile table is written three times (code, docs, schema); they must agree.
#[test]
fn size_table_is_the_same_in_code_docs_and_schema() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/environment.md"))
            .unwrap();
    let schema = crate::spec::schema_for_kind("Environment").unwrap();
    let described = schema["properties"]["size"]["description"]
        .as_str()
        .unwrap();
    for p in &PROFILES {
        let row = p.table_row();
        assert!(
            docs.contains(&row),
            "docs/environment.md lacks the row\n{row}"
        );
        assert!(
            described.contains(&row),
            "the schema's `size` lacks the row\n{row}"
        );
    }
    for r in REGIONS {
        assert!(
            docs.contains(&format!("| {} | {} |", r.name, r.zones.len())),
            "docs/environment.md lacks region {}",
            r.name
        );
    }
}

const EXAMPLE: &str = include_str!("../../examples/environment/environment.yaml");

fn load(text: &str) -> Spec {
    load_str(Path::new("env.yaml"), text, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn normalised(text: &str) -> (Normalised, Vec<SpecError>) {
    let spec = load(text);
    let doc = &spec.documents[0];
    let DocumentBody::Environment(e) = &doc.body else {
        panic!("not an Environment")
    };
    let mut errors = Vec::new();
    let n = normalise(doc, e, &mut errors);
    (n, errors)
}

fn addresses(n: &Normalised) -> Vec<String> {
    n.resources
        .iter()
        .map(|r| format!("{}.{}", r.ty, r.name))
        .collect()
}

fn find<'a>(n: &'a Normalised, addr: &str) -> &'a ResourceSpec {
    n.resources
        .iter()
        .find(|r| format!("{}.{}", r.ty, r.name) == addr)
        .unwrap_or_else(|| panic!("no {addr} in {:?}", addresses(n)))
}

#[test]
fn the_example_normalises_into_the_whole_environment() {
    let (n, errors) = normalised(EXAMPLE);
    assert!(errors.is_empty(), "{errors:?}");
    let text = n
        .resources
        .iter()
        .map(|r| {
            format!(
                "{}.{} (provider {}, after {:?})\n{}\n",
                r.ty,
                r.name,
                r.provider.as_deref().unwrap_or("-"),
                r.depends_on,
                serde_json::to_string_pretty(&r.attributes).unwrap()
            )
        })
        .collect::<String>();
    insta::assert_snapshot!("example_resources", text);
    let outputs: Vec<String> = n
        .outputs
        .iter()
        .map(|(k, v, _)| format!("{k} = {v}"))
        .collect();
    assert_eq!(
        outputs,
        [
            "vpc_id = ${aws_vpc.demo.id}",
            "cluster_name = ${aws_eks_cluster.demo.name}",
            "cluster_endpoint = ${aws_eks_cluster.demo.endpoint}",
            "rds_endpoint = ${aws_db_instance.demo.endpoint}",
            "rds_secret_arn = ${aws_db_instance.demo.master_user_secret_arn}",
            "bucket_name = ${aws_s3_bucket.demo.bucket}",
            "bucket_arn = ${aws_s3_bucket.demo.arn}",
        ]
    );
    // 3 zones × (2 subnets, 2 associations, private table, EIP, NAT) + VPC, IGW, public
    // table, 2 security groups, cluster, node group, subnet group, DB, bucket × 4.
    assert_eq!(n.resources.len(), 3 * 7 + 3 + 2 + 2 + 2 + 4);
}

/// Every reference and `depends_on` of the generated resources names a generated
/// resource: the normalisation never leaves a dangling edge.
#[test]
fn every_edge_points_inside_the_environment() {
    for size in ["small", "medium", "large"] {
        let (n, errors) = normalised(&EXAMPLE.replace("size: medium", &format!("size: {size}")));
        assert!(errors.is_empty(), "{errors:?}");
        let all = addresses(&n);
        for r in &n.resources {
            let mut targets: Vec<String> = r.depends_on.clone();
            for v in r.attributes.values() {
                let e = model::Expr::parse(v).unwrap();
                let mut refs = Vec::new();
                e.references(&mut refs);
                targets.extend(refs.iter().map(|x| x.target.to_string()));
            }
            for t in targets {
                assert!(all.contains(&t), "{size}: {}.{} names {t}", r.ty, r.name);
            }
        }
    }
}

#[test]
fn size_profiles_pick_types_counts_and_nat_gateways() {
    let (small, _) = normalised(&EXAMPLE.replace("size: medium", "size: small"));
    let (large, _) = normalised(&EXAMPLE.replace("size: medium", "size: large"));
    let ng = |n: &Normalised| {
        find(n, "aws_eks_node_group.demo-default")
            .attributes
            .clone()
    };
    assert_eq!(ng(&small)["instance_types"], json!(["t3.large"]));
    assert_eq!(
        ng(&small)["scaling_config"],
        json!({"desired_size": 2, "min_size": 1, "max_size": 3})
    );
    assert_eq!(ng(&large)["instance_types"], json!(["m5.xlarge"]));
    assert_eq!(
        ng(&large)["scaling_config"],
        json!({"desired_size": 6, "min_size": 3, "max_size": 12})
    );
    assert_eq!(ng(&large)["disk_size"], json!(100));
    let nats = |n: &Normalised| {
        n.resources
            .iter()
            .filter(|r| r.ty == "aws_nat_gateway")
            .count()
    };
    assert_eq!(nats(&small), 1);
    assert_eq!(nats(&large), 3);
    // small: every private table routes through the one NAT gateway, in zone a.
    let rt = find(&small, "aws_route_table.demo-private-c");
    assert_eq!(
        rt.attributes["route"][0]["nat_gateway_id"],
        json!("${aws_nat_gateway.demo-a.id}")
    );
    // The database class follows `database.size` when set, the environment's otherwise;
    // storage and backups set in the spec win over the profile.
    let db = |n: &Normalised| find(n, "aws_db_instance.demo").attributes.clone();
    assert_eq!(db(&small)["instance_class"], json!("db.t3.medium"));
    assert_eq!(db(&large)["instance_class"], json!("db.r5.xlarge"));
    assert_eq!(db(&large)["allocated_storage"], json!(100));
    let (mixed, _) = normalised(&EXAMPLE.replace(
        "  engine: postgres\n",
        "  engine: postgres\n  size: small\n",
    ));
    assert_eq!(db(&mixed)["instance_class"], json!("db.t3.medium"));
    assert_eq!(db(&mixed)["multi_az"], json!(true));
}

#[test]
fn a_minimal_environment_uses_the_defaults() {
    let text = "apiVersion: anvil/v1\nkind: Environment\nmetadata: { name: mini }\nprovider: aws\nregion: us-west-2\naccount_id: \"123456789012\"\nsize: small\nnetwork: { cidr: 10.9.0.0/20, az_count: 2 }\nkubernetes: { version: \"1.30\" }\nstorage: {}\n";
    let (n, errors) = normalised(text);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!addresses(&n).iter().any(|a| a.starts_with("aws_db_")));
    assert!(!addresses(&n).contains(&"aws_s3_bucket_lifecycle_configuration.mini".to_string()));
    assert_eq!(
        find(&n, "aws_s3_bucket.mini").attributes["bucket"],
        json!("mini-123456789012-us-west-2")
    );
    assert_eq!(
        find(&n, "aws_eks_cluster.mini").attributes["role_arn"],
        json!("arn:aws:iam::123456789012:role/mini-eks-cluster")
    );
    assert_eq!(
        find(&n, "aws_eks_node_group.mini-default").attributes["node_role_arn"],
        json!("arn:aws:iam::123456789012:role/mini-eks-node")
    );
    assert_eq!(
        find(&n, "aws_subnet.mini-private-b").attributes["availability_zone"],
        json!("us-west-2b")
    );
    let names: Vec<&str> = n.outputs.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "vpc_id",
            "cluster_name",
            "cluster_endpoint",
            "bucket_name",
            "bucket_arn"
        ]
    );
}

#[test]
fn a_named_environment_prefixes_its_outputs_and_names() {
    let (n, _) = normalised(&EXAMPLE.replace("provider: aws\n", "provider: aws\nname: blue\n"));
    assert!(addresses(&n).contains(&"aws_vpc.blue".to_string()));
    assert_eq!(n.outputs[0].0, "blue.vpc_id");
    assert!(n
        .resources
        .iter()
        .all(|r| r.provider.as_deref() == Some("aws.blue")));
}

#[test]
fn a_given_password_is_sensitive_input_and_not_managed() {
    let (n, errors) = normalised(&EXAMPLE.replace(
        "  engine: postgres\n",
        "  engine: postgres\n  password: \"s3cret-${x}-pw\"\n",
    ));
    assert!(errors.is_empty(), "{errors:?}");
    let db = &find(&n, "aws_db_instance.demo").attributes;
    // `${` is escaped so the model reads it back literally.
    assert_eq!(db["password"], json!("s3cret-$${x}-pw"));
    assert_eq!(db["manage_master_user_password"], json!(false));
    assert!(!n.outputs.iter().any(|o| o.0 == "rds_secret_arn"));
}

#[test]
fn password_problems_never_echo_the_password() {
    let (_, errors) = normalised(&EXAMPLE.replace(
        "  engine: postgres\n",
        "  engine: postgres\n  password: \"has space\"\n",
    ));
    let text = format!("{errors:?}");
    assert!(text.contains("database.password"), "{text}");
    assert!(text.contains("a character RDS refuses"), "{text}");
    assert!(!text.contains("has space"), "{text}");
}

#[test]
fn any_problem_produces_no_resources() {
    let (n, errors) = normalised(&EXAMPLE.replace("az_count: 3", "az_count: 4"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("az_count 4: eu-central-1 has 3 zones"),
        "{}",
        errors[0]
    );
    assert!(n.resources.is_empty() && n.outputs.is_empty());
}

/// The AWS resource types and attributes agreed with the `aws` provider (issue 10),
/// as schemas, so the model can be built before the provider's own schemas exist.
fn contract() -> Schemas {
    let types: &[(&str, &[&str], &[&str])] = &[
        (
            "aws_vpc",
            &[
                "cidr_block",
                "enable_dns_support",
                "enable_dns_hostnames",
                "tags",
            ],
            &["id", "arn"],
        ),
        (
            "aws_subnet",
            &[
                "vpc_id",
                "cidr_block",
                "availability_zone",
                "map_public_ip_on_launch",
                "tags",
            ],
            &["id", "arn"],
        ),
        ("aws_internet_gateway", &["vpc_id", "tags"], &["id"]),
        ("aws_eip", &["domain", "tags"], &["id", "public_ip"]),
        (
            "aws_nat_gateway",
            &["allocation_id", "subnet_id", "tags"],
            &["id"],
        ),
        ("aws_route_table", &["vpc_id", "route", "tags"], &["id"]),
        (
            "aws_route_table_association",
            &["subnet_id", "route_table_id"],
            &["id"],
        ),
        (
            "aws_security_group",
            &["name", "description", "vpc_id", "ingress", "egress", "tags"],
            &["id", "arn"],
        ),
        (
            "aws_eks_cluster",
            &[
                "name",
                "role_arn",
                "version",
                "subnet_ids",
                "security_group_ids",
                "tags",
            ],
            &["id", "arn", "endpoint", "status"],
        ),
        (
            "aws_eks_node_group",
            &[
                "cluster_name",
                "node_group_name",
                "node_role_arn",
                "subnet_ids",
                "instance_types",
                "scaling_config",
                "disk_size",
                "tags",
            ],
            &["id", "arn", "status"],
        ),
        (
            "aws_db_subnet_group",
            &["name", "description", "subnet_ids", "tags"],
            &["id", "arn"],
        ),
        (
            "aws_db_instance",
            &[
                "identifier",
                "engine",
                "engine_version",
                "instance_class",
                "allocated_storage",
                "multi_az",
                "backup_retention_period",
                "db_subnet_group_name",
                "vpc_security_group_ids",
                "username",
                "password",
                "manage_master_user_password",
                "skip_final_snapshot",
                "tags",
            ],
            &["id", "arn", "endpoint", "address", "master_user_secret_arn"],
        ),
        (
            "aws_s3_bucket",
            &["bucket", "force_destroy", "tags"],
            &["id", "arn"],
        ),
        ("aws_s3_bucket_versioning", &["bucket", "status"], &[]),
        (
            "aws_s3_bucket_lifecycle_configuration",
            &["bucket", "expiration_days"],
            &[],
        ),
        (
            "aws_s3_bucket_public_access_block",
            &[
                "bucket",
                "block_public_acls",
                "block_public_policy",
                "ignore_public_acls",
                "restrict_public_buckets",
            ],
            &[],
        ),
    ];
    types
        .iter()
        .map(|(ty, attrs, outs)| {
            let mut attributes: BTreeMap<String, AttrSchema> = attrs
                .iter()
                .map(|a| (a.to_string(), AttrSchema::new(AttrKind::Any, "")))
                .collect();
            if let Some(p) = attributes.get_mut("password") {
                p.sensitive = true;
            }
            let schema = ResourceSchema {
                ty: ty.to_string(),
                provider: "aws".into(),
                attributes,
                outputs: outs.iter().map(|o| (o.to_string(), "")).collect(),
            };
            (ty.to_string(), schema)
        })
        .collect()
}

#[test]
fn the_example_builds_a_model_against_the_contract() {
    let spec = load(EXAMPLE);
    let m = model::build(&spec, &contract()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.len(), 34);
    let provider = &m.providers[0];
    assert_eq!(provider.name(), "aws.demo");
    assert_eq!(
        serde_json::Value::Object(provider.settings.clone()),
        json!({"region": "eu-central-1", "role_arn": "arn:aws:iam::123456789012:role/anvil-provisioner"})
    );
    // Edges by references: the node group waits for the cluster, which waits for the
    // private routes, which wait for the NAT gateways.
    let deps = |a: &str| {
        m.get(&model::Address::parse(a).unwrap())
            .unwrap()
            .dependencies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert!(deps("aws_eks_node_group.demo-default").contains(&"aws_eks_cluster.demo".to_string()));
    assert!(deps("aws_eks_cluster.demo").contains(&"aws_subnet.demo-private-a".to_string()));
    assert!(deps("aws_eks_cluster.demo")
        .contains(&"aws_route_table_association.demo-private-c".to_string()));
    assert_eq!(
        deps("aws_route_table.demo-private-b"),
        ["aws_nat_gateway.demo-b", "aws_vpc.demo"]
    );
    assert_eq!(
        deps("aws_nat_gateway.demo-a"),
        [
            "aws_eip.demo-nat-a",
            "aws_internet_gateway.demo",
            "aws_subnet.demo-public-a"
        ]
    );
    let names: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bucket_arn",
            "bucket_name",
            "cluster_endpoint",
            "cluster_name",
            "rds_endpoint",
            "rds_secret_arn",
            "vpc_id"
        ]
    );
    // The longest dependency chain (what an apply must wait through): VPC → subnet →
    // NAT → private table → association → cluster → node group.
    let order = m.topo_order();
    assert_eq!(order.len(), 34);
}

#[test]
fn two_environments_in_one_workspace_need_their_own_names() {
    let second = EXAMPLE.replace("# yaml-language-server", "---\n# x");
    let twice = format!("{EXAMPLE}{second}");
    let spec = load(&twice);
    let e = model::build(&spec, &contract()).unwrap_err().to_string();
    assert!(e.contains("duplicate address aws_vpc.demo"), "{e}");
    let named = format!(
        "{}{}",
        EXAMPLE.replace("provider: aws\n", "provider: aws\nname: blue\n"),
        second
            .replace("provider: aws\n", "provider: aws\nname: green\n")
            .replace("bucket: demo-artifacts", "bucket: green-artifacts")
    );
    let m = model::build(&load(&named), &contract()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.len(), 68);
    assert_eq!(m.providers.len(), 2);
    assert!(m.outputs.iter().any(|o| o.name == "green.vpc_id"));
}
