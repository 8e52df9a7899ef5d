//! The `aws` provider against moto (issue 10): a `kind: Resources` spec of every aws_*
//! type applies, plans empty the second time, reports drift made behind anvil's back (a
//! route table association deleted, bucket versioning suspended, an ingress rule added)
//! with `anvil drift` exit 2, is restored by `apply`, and leaves no object with its
//! lineage tag after `destroy` (checked with describe calls per type, through boto3).
//! The example environment does the same (apply, empty plan, outputs, the three drifts
//! restored, destroy). Objects created but not recorded are adopted by tag, never created
//! twice (records dropped from state; SIGKILL at 10 random points of the example's apply,
//! some followed by a killed destroy, after which one apply converges with every object
//! once by tag and an empty plan); bad credentials and an unreachable endpoint fail with
//! exit 1 naming the endpoint and the AWS error code.

mod common;
mod moto_support;

use common::*;

/// Every aws_* type, wired as a small environment would be.
const SPEC: &str = r#"apiVersion: anvil/v1
kind: Resources
metadata:
  name: awstest
resources:
  - type: aws_vpc
    name: main
    attributes:
      cidr_block: 10.0.0.0/16
      enable_dns_support: true
      enable_dns_hostnames: true
      tags: {Name: awstest}
  - type: aws_subnet
    name: public_a
    attributes:
      vpc_id: ${aws_vpc.main.id}
      cidr_block: 10.0.0.0/24
      availability_zone: us-east-1a
      map_public_ip_on_launch: true
  - type: aws_subnet
    name: private_a
    attributes:
      vpc_id: ${aws_vpc.main.id}
      cidr_block: 10.0.10.0/24
      availability_zone: us-east-1a
  - type: aws_subnet
    name: private_b
    attributes:
      vpc_id: ${aws_vpc.main.id}
      cidr_block: 10.0.11.0/24
      availability_zone: us-east-1b
  - type: aws_internet_gateway
    name: igw
    attributes:
      vpc_id: ${aws_vpc.main.id}
  - type: aws_eip
    name: nat
    attributes:
      domain: vpc
  - type: aws_nat_gateway
    name: nat
    attributes:
      allocation_id: ${aws_eip.nat.id}
      subnet_id: ${aws_subnet.public_a.id}
  - type: aws_route_table
    name: public
    attributes:
      vpc_id: ${aws_vpc.main.id}
      route:
        - {cidr_block: 0.0.0.0/0, gateway_id: "${aws_internet_gateway.igw.id}"}
  - type: aws_route_table
    name: private
    attributes:
      vpc_id: ${aws_vpc.main.id}
      route:
        - {cidr_block: 0.0.0.0/0, nat_gateway_id: "${aws_nat_gateway.nat.id}"}
  - type: aws_route_table_association
    name: public_a
    attributes:
      subnet_id: ${aws_subnet.public_a.id}
      route_table_id: ${aws_route_table.public.id}
  - type: aws_route_table_association
    name: private_a
    attributes:
      subnet_id: ${aws_subnet.private_a.id}
      route_table_id: ${aws_route_table.private.id}
  - type: aws_security_group
    name: db
    attributes:
      name: awstest-db
      description: database access
      vpc_id: ${aws_vpc.main.id}
      ingress:
        - {protocol: tcp, from_port: 5432, to_port: 5432, cidr_blocks: [10.0.0.0/16], description: postgres}
  - type: aws_s3_bucket
    name: data
    attributes:
      bucket: awstest-data
      force_destroy: true
      tags: {purpose: blobs}
  - type: aws_s3_bucket_versioning
    name: data
    attributes:
      bucket: ${aws_s3_bucket.data.id}
      status: Enabled
  - type: aws_s3_bucket_lifecycle_configuration
    name: data
    attributes:
      bucket: ${aws_s3_bucket.data.id}
      expiration_days: 30
  - type: aws_s3_bucket_public_access_block
    name: data
    attributes:
      bucket: ${aws_s3_bucket.data.id}
  - type: aws_db_subnet_group
    name: main
    attributes:
      name: awstest
      subnet_ids: ["${aws_subnet.private_a.id}", "${aws_subnet.private_b.id}"]
  - type: aws_db_instance
    name: main
    attributes:
      identifier: awstest
      engine: postgres
      engine_version: "16.4"
      instance_class: db.t3.micro
      allocated_storage: 20
      backup_retention_period: 7
      username: anvil
      password: correct-horse-battery-staple
      db_subnet_group_name: ${aws_db_subnet_group.main.id}
      vpc_security_group_ids: ["${aws_security_group.db.id}"]
      skip_final_snapshot: true
  - type: aws_eks_cluster
    name: main
    attributes:
      name: awstest
      role_arn: arn:aws:iam::123456789012:role/eks
      subnet_ids: ["${aws_subnet.private_a.id}", "${aws_subnet.private_b.id}"]
      version: "1.31"
  - type: aws_eks_node_group
    name: main
    attributes:
      cluster_name: ${aws_eks_cluster.main.id}
      node_group_name: default
      node_role_arn: arn:aws:iam::123456789012:role/nodes
      subnet_ids: ["${aws_subnet.private_a.id}", "${aws_subnet.private_b.id}"]
      instance_types: [t3.medium]
      disk_size: 20
      scaling_config: {desired_size: 2, min_size: 1, max_size: 3}
"#;

#[test]
fn plan_works_without_aws_and_names_every_type() {
    // Planning needs no AWS at all (and no `aws` feature): nothing exists yet, so nothing
    // is read.
    let s = Scratch::new();
    s.write("aws.yaml", SPEC);
    let o = s.run(&["plan", "aws.yaml"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for ty in [
        "aws_vpc",
        "aws_subnet",
        "aws_internet_gateway",
        "aws_eip",
        "aws_nat_gateway",
        "aws_route_table",
        "aws_route_table_association",
        "aws_security_group",
        "aws_eks_cluster",
        "aws_eks_node_group",
        "aws_db_subnet_group",
        "aws_db_instance",
        "aws_s3_bucket",
        "aws_s3_bucket_versioning",
        "aws_s3_bucket_lifecycle_configuration",
        "aws_s3_bucket_public_access_block",
    ] {
        assert!(
            out.contains(&format!("{ty}.")),
            "{ty} missing from plan:\n{out}"
        );
    }
}

/// Everything that talks to moto needs the SDK.
#[cfg(feature = "aws")]
mod on_moto {
    use super::common::*;
    use super::moto_support::{venv_bin, Moto};
    use super::SPEC;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;
    use std::process::{Command, Output, Stdio};
    use std::time::Duration;

    /// The addresses of the spec by resource type family, as [`owned`] reports them.
    fn expected() -> BTreeMap<String, Vec<String>> {
        let m = json!({
            "vpc": ["aws_vpc.main"],
            "subnet": ["aws_subnet.private_a", "aws_subnet.private_b", "aws_subnet.public_a"],
            "igw": ["aws_internet_gateway.igw"],
            "eip": ["aws_eip.nat"],
            "nat": ["aws_nat_gateway.nat"],
            "rtb": ["aws_route_table.private", "aws_route_table.public"],
            "assoc": ["aws_route_table.private", "aws_route_table.public"],
            "sg": ["aws_security_group.db"],
            "bucket": ["aws_s3_bucket.data"],
            "db_subnet_group": ["aws_db_subnet_group.main"],
            "db": ["aws_db_instance.main"],
            "eks": ["aws_eks_cluster.main"],
            "nodegroup": ["aws_eks_node_group.main"],
        });
        serde_json::from_value(m).unwrap()
    }

    /// What exists on the server with this lineage's tag: per type family, the
    /// `anvil:address` of each object (sorted, duplicates kept), and for route table
    /// associations the address of the table once per associated subnet.
    fn owned(moto: &Moto, lineage: &str) -> BTreeMap<String, Vec<String>> {
        owned_in(moto, lineage, "us-east-1")
    }

    /// [`owned`] in a region.
    fn owned_in(moto: &Moto, lineage: &str, region: &str) -> BTreeMap<String, Vec<String>> {
        let v = moto.python(&format!(
        r#"
LIN = {lineage:?}
def client(name):
    return boto3.client(name, endpoint_url=ENDPOINT, region_name={region:?}, aws_access_key_id='testing', aws_secret_access_key='testing')
ec2 = client('ec2')
f = [{{'Name': 'tag:anvil:lineage', 'Values': [LIN]}}]
def addr(tags):
    d = {{t['Key']: t['Value'] for t in (tags or [])}}
    return d.get('anvil:address') if d.get('anvil:lineage') == LIN else None
def addrs(items, key='Tags'):
    return sorted(a for a in (addr(i.get(key)) for i in items) if a)
r = {{}}
r['vpc'] = addrs(ec2.describe_vpcs(Filters=f)['Vpcs'])
r['subnet'] = addrs(ec2.describe_subnets(Filters=f)['Subnets'])
r['igw'] = addrs(ec2.describe_internet_gateways(Filters=f)['InternetGateways'])
r['eip'] = addrs(ec2.describe_addresses(Filters=f)['Addresses'])
r['nat'] = addrs([n for n in ec2.describe_nat_gateways(Filter=f)['NatGateways'] if n['State'] in ('pending', 'available')])
tables = ec2.describe_route_tables(Filters=f)['RouteTables']
r['rtb'] = addrs(tables)
r['assoc'] = sorted(addr(t['Tags']) for t in tables for a in t.get('Associations', []) if a.get('SubnetId'))
r['sg'] = addrs(ec2.describe_security_groups(Filters=f)['SecurityGroups'])
s3 = client('s3')
b = []
for bk in s3.list_buckets()['Buckets']:
    try:
        b.append(addr(s3.get_bucket_tagging(Bucket=bk['Name'])['TagSet']))
    except botocore.exceptions.ClientError:
        pass
r['bucket'] = sorted(x for x in b if x)
rds = client('rds')
r['db_subnet_group'] = sorted(x for x in (addr(rds.list_tags_for_resource(ResourceName=g['DBSubnetGroupArn'])['TagList']) for g in rds.describe_db_subnet_groups()['DBSubnetGroups']) if x)
r['db'] = addrs([d for d in rds.describe_db_instances()['DBInstances'] if d['DBInstanceStatus'] != 'deleting'], 'TagList')
eks = client('eks')
cl, ng = [], []
for name in eks.list_clusters()['clusters']:
    c = eks.describe_cluster(name=name)['cluster']
    cl.append(addr([{{'Key': k, 'Value': v}} for k, v in c.get('tags', {{}}).items()]))
    for g in eks.list_nodegroups(clusterName=name)['nodegroups']:
        n = eks.describe_nodegroup(clusterName=name, nodegroupName=g)['nodegroup']
        ng.append(addr([{{'Key': k, 'Value': v}} for k, v in n.get('tags', {{}}).items()]))
r['eks'] = sorted(x for x in cl if x)
r['nodegroup'] = sorted(x for x in ng if x)
result = r
"#
    ));
        serde_json::from_value(v).unwrap()
    }

    /// A scratch directory with the spec, and the moto server anvil talks to.
    struct World {
        moto: Moto,
        s: Scratch,
    }

    impl World {
        fn new() -> World {
            let s = Scratch::new();
            s.write("aws.yaml", SPEC);
            World {
                moto: Moto::start(),
                s,
            }
        }

        fn run(&self, args: &[&str]) -> Output {
            let mut cmd = self.s.cmd(args);
            self.moto.apply_env(&mut cmd);
            cmd.output().expect("run anvil")
        }

        fn lineage(&self) -> String {
            self.s.state_json("awstest")["lineage"]
                .as_str()
                .expect("lineage")
                .to_string()
        }
    }

    fn ok(o: &Output) -> String {
        assert_code(o, 0);
        stdout(o)
    }

    #[test]
    fn apply_plan_drift_restore_and_destroy_on_moto() {
        let w = World::new();
        let out = ok(&w.run(&["apply", "--auto-approve", "aws.yaml"]));
        assert!(out.contains("aws_eks_node_group.main"), "{out}");
        let lineage = w.lineage();
        assert_eq!(owned(&w.moto, &lineage), expected());

        // State keeps the password only as a fingerprint, and the computed outputs.
        let st = w.s.state_json("awstest");
        let db = &st["resources"]["aws_db_instance.main"];
        assert!(
            !st.to_string().contains("correct-horse-battery-staple"),
            "password in state"
        );
        assert!(
            db["sensitive"]["password"]
                .as_str()
                .is_some_and(|f| f.starts_with("sha256:")),
            "{db}"
        );
        assert!(
            db["outputs"]["endpoint"]
                .as_str()
                .is_some_and(|e| e.contains(':')),
            "{db}"
        );
        assert!(st["resources"]["aws_vpc.main"]["outputs"]["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("vpc-")));

        // A second plan is empty: what AWS reports back matches the spec.
        let o = w.run(&["plan", "--detailed-exitcode", "aws.yaml"]);
        assert_code(&o, 0);
        assert_code(&w.run(&["drift", "aws.yaml"]), 0);

        // Behind anvil's back: drop the private association, suspend versioning, open SSH.
        let rtb = st["resources"]["aws_route_table.private"]["outputs"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let sg = st["resources"]["aws_security_group.db"]["outputs"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        w.moto.python(&format!(
        r#"
ec2 = client('ec2')
t = ec2.describe_route_tables(RouteTableIds=[{rtb:?}])['RouteTables'][0]
for a in t['Associations']:
    if a.get('SubnetId'):
        ec2.disassociate_route_table(AssociationId=a['RouteTableAssociationId'])
client('s3').put_bucket_versioning(Bucket='awstest-data', VersioningConfiguration={{'Status': 'Suspended'}})
ec2.authorize_security_group_ingress(GroupId={sg:?}, IpPermissions=[{{'IpProtocol': 'tcp', 'FromPort': 22, 'ToPort': 22, 'IpRanges': [{{'CidrIp': '0.0.0.0/0'}}]}}])
"#
    ));
        let o = w.run(&["drift", "aws.yaml"]);
        assert_code(&o, 2);
        let report = stdout(&o);
        for a in [
            "aws_route_table_association.private_a",
            "aws_s3_bucket_versioning.data",
            "aws_security_group.db",
        ] {
            assert!(report.contains(a), "drift does not name {a}:\n{report}");
        }
        for quiet in [
            "aws_vpc.main",
            "aws_db_instance.main",
            "aws_route_table_association.public_a",
        ] {
            assert!(!report.contains(quiet), "drift names {quiet}:\n{report}");
        }

        // apply restores all three; drift is then clean and the extra rule is gone.
        ok(&w.run(&["apply", "--auto-approve", "aws.yaml"]));
        assert_code(&w.run(&["drift", "aws.yaml"]), 0);
        let real = w.moto.python(&format!(
            r#"
ec2 = client('ec2')
g = ec2.describe_security_groups(GroupIds=[{sg:?}])['SecurityGroups'][0]
t = ec2.describe_route_tables(RouteTableIds=[{rtb:?}])['RouteTables'][0]
result = {{
  'ports': sorted(p.get('FromPort', -1) for p in g['IpPermissions']),
  'versioning': client('s3').get_bucket_versioning(Bucket='awstest-data').get('Status'),
  'assoc': len([a for a in t['Associations'] if a.get('SubnetId')]),
}}
"#
        ));
        assert_eq!(
            real,
            json!({"ports": [5432], "versioning": "Enabled", "assoc": 1})
        );
        assert_eq!(owned(&w.moto, &lineage), expected());

        // An in-place change: node group scaling is updated, not replaced.
        w.s.write(
            "aws.yaml",
            &SPEC.replace(
                "{desired_size: 2, min_size: 1, max_size: 3}",
                "{desired_size: 4, min_size: 2, max_size: 6}",
            ),
        );
        let plan = ok(&w.run(&["plan", "aws.yaml"]));
        assert!(plan.contains("aws_eks_node_group.main"), "{plan}");
        assert!(plan.contains("update") || plan.contains("~"), "{plan}");
        assert!(!plan.contains("replace"), "{plan}");
        ok(&w.run(&["apply", "--auto-approve", "aws.yaml"]));
        let scaling = w.moto.python(
        "result = client('eks').describe_nodegroup(clusterName='awstest', nodegroupName='default')['nodegroup']['scalingConfig']",
    );
        assert_eq!(
            scaling,
            json!({"desiredSize": 4, "minSize": 2, "maxSize": 6})
        );

        // destroy leaves nothing carrying the lineage tag.
        ok(&w.run(&["destroy", "--auto-approve", "aws.yaml"]));
        let left = owned(&w.moto, &lineage);
        assert!(
            left.values().all(Vec::is_empty),
            "left after destroy: {left:?}"
        );
    }

    #[test]
    fn objects_created_but_not_recorded_are_adopted_not_duplicated() {
        let w = World::new();
        ok(&w.run(&["apply", "--auto-approve", "aws.yaml"]));
        let lineage = w.lineage();
        // Forget every record (as if each create's result never reached the journal), keeping
        // the lineage: the next apply plans creates, and each must find its object by tag.
        let path = w.s.state_file("awstest");
        let mut st = w.s.state_json("awstest");
        st["resources"] = json!({});
        st["serial"] = json!(st["serial"].as_u64().unwrap() + 1);
        std::fs::write(&path, serde_json::to_string_pretty(&st).unwrap()).unwrap();
        let _ = std::fs::remove_file(w.s.path().join("state/awstest.json.journal"));
        let out = ok(&w.run(&["apply", "--auto-approve", "aws.yaml"]));
        assert!(out.contains("aws_vpc.main"), "{out}");
        assert_eq!(owned(&w.moto, &lineage), expected());
        assert_code(&w.run(&["plan", "--detailed-exitcode", "aws.yaml"]), 0);
    }

    /// The `anvil:address`es the state records, by the type families [`owned_in`]
    /// reports (route table associations as the address of their table).
    fn recorded_families(st: &Value) -> BTreeMap<String, Vec<String>> {
        let res = st["resources"].as_object().expect("resources");
        let table_of: BTreeMap<&str, &str> = res
            .iter()
            .filter(|(a, _)| a.starts_with("aws_route_table."))
            .filter_map(|(a, r)| Some((r["outputs"]["id"].as_str()?, a.as_str())))
            .collect();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (addr, r) in res {
            let ty = addr.split('.').next().unwrap_or_default();
            let (family, name) = match ty {
                "aws_vpc" => ("vpc", addr.as_str()),
                "aws_subnet" => ("subnet", addr.as_str()),
                "aws_internet_gateway" => ("igw", addr.as_str()),
                "aws_eip" => ("eip", addr.as_str()),
                "aws_nat_gateway" => ("nat", addr.as_str()),
                "aws_route_table" => ("rtb", addr.as_str()),
                "aws_route_table_association" => (
                    "assoc",
                    r["attributes"]["route_table_id"]
                        .as_str()
                        .and_then(|t| table_of.get(t).copied())
                        .expect("association of a recorded table"),
                ),
                "aws_security_group" => ("sg", addr.as_str()),
                "aws_s3_bucket" => ("bucket", addr.as_str()),
                "aws_db_subnet_group" => ("db_subnet_group", addr.as_str()),
                "aws_db_instance" => ("db", addr.as_str()),
                "aws_eks_cluster" => ("eks", addr.as_str()),
                "aws_eks_node_group" => ("nodegroup", addr.as_str()),
                _ => continue,
            };
            out.entry(family.to_string())
                .or_default()
                .push(name.to_string());
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Runs `anvil ARGS` and SIGKILLs it once it has printed `lines` lines of events
    /// (each started or finished operation is one), or lets it end. Returns whether it
    /// was killed.
    fn kill_after(s: &Scratch, moto: &Moto, args: &[&str], lines: usize) -> bool {
        use std::io::BufRead;
        let mut cmd = s.cmd(args);
        moto.apply_env(&mut cmd);
        let mut child = cmd
            // A killed run's lock expires quickly, so the next one need not wait long.
            .env("ANVIL_LOCK_LEASE", "1s")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn anvil");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = 0;
        for line in out.lines() {
            if line.is_err() {
                break;
            }
            seen += 1;
            if seen >= lines {
                let _ = child.kill();
                break;
            }
        }
        let status = child.wait().expect("wait for anvil");
        // Killed by our SIGKILL: no exit code.
        status.code().is_none()
    }

    #[test]
    fn sigkill_during_apply_of_the_example_then_apply_converges_with_each_object_once() {
        use rand::{RngExt, SeedableRng};
        let moto = Moto::start();
        // The seed is printed, and taken from ANVIL_CRASH_SEED, so a failure replays.
        let seed = std::env::var("ANVIL_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs())
            });
        eprintln!("ANVIL_CRASH_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let args = ["apply", "--auto-approve", "--lock-timeout", "30s", "env"];
        // How many event lines a whole apply prints: the range kill points are drawn from.
        let full = {
            let s = Scratch::new();
            s.copy_example("environment", "env");
            let mut cmd = s.cmd(&args);
            moto.apply_env(&mut cmd);
            let o = cmd.output().expect("run anvil");
            assert_code(&o, 0);
            stdout(&o).lines().count()
        };
        assert!(full > 40, "a whole apply printed only {full} lines");
        let mut killed = 0;
        for trial in 0..10 {
            moto.reset();
            let s = Scratch::new();
            s.copy_example("environment", "env");
            let at = rng.random_range(1..full);
            killed += usize::from(kill_after(&s, &moto, &args, at));
            // Every other trial also kills the destroy that follows, at a random point:
            // what it leaves (objects whose parent is gone) must be cleaned up or adopted.
            let mut what = format!("apply killed after {at} lines");
            if trial % 2 == 1 {
                let at = rng.random_range(1..full / 2);
                kill_after(
                    &s,
                    &moto,
                    &["destroy", "--auto-approve", "--lock-timeout", "30s", "env"],
                    at,
                );
                what.push_str(&format!(", then destroy killed after {at} lines"));
            }
            let mut cmd = s.cmd(&args);
            moto.apply_env(&mut cmd);
            let o = cmd.output().expect("run anvil");
            assert!(
                o.status.success(),
                "trial {trial} ({what}, seed {seed}): the next apply failed:\n{}{}",
                stdout(&o),
                stderr(&o)
            );
            let ws = std::fs::read_dir(s.path().join("state"))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find_map(|n| n.strip_suffix(".json").map(str::to_string))
                .expect("a state file");
            let st = s.state_json(&ws);
            let lineage = st["lineage"].as_str().unwrap().to_string();
            let want = recorded_families(&st);
            assert_eq!(want["subnet"].len(), 6, "{want:?}");
            assert_eq!(
                owned_in(&moto, &lineage, "eu-central-1"),
                want,
                "trial {trial} ({what}, seed {seed}): AWS objects by tag differ from the state; \
                 the converging apply said:\n{}",
                stdout(&o)
            );
            let mut cmd = s.cmd(&["plan", "--detailed-exitcode", "env"]);
            moto.apply_env(&mut cmd);
            let o = cmd.output().expect("run anvil");
            assert!(
                o.status.code() == Some(0),
                "trial {trial} ({what}, seed {seed}): the plan after is not empty:\n{}{}",
                stdout(&o),
                stderr(&o)
            );
        }
        assert!(
            killed >= 3,
            "only {killed} of 10 applies were killed mid-run"
        );
    }

    /// A moto server that checks credentials (moto's IAM auth from the first request on).
    struct AuthMoto {
        child: std::process::Child,
        port: u16,
    }

    impl AuthMoto {
        fn start() -> AuthMoto {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let child = Command::new(venv_bin("moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let start = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "moto did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            AuthMoto { child, port }
        }
    }

    impl Drop for AuthMoto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn bad_credentials_and_unreachable_endpoints_name_the_endpoint_and_the_code() {
        let s = Scratch::new();
        s.write("aws.yaml", SPEC);
        let env = |cmd: &mut Command, endpoint: &str| {
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("AWS_") {
                    cmd.env_remove(k);
                }
            }
            cmd.envs([
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1"),
                ("AWS_SECRET_ACCESS_KEY", "wrong"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_CONFIG_FILE", "/dev/null"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_MAX_ATTEMPTS", "1"),
            ]);
        };
        let moto = AuthMoto::start();
        let endpoint = format!("http://127.0.0.1:{}", moto.port);
        let mut cmd = s.cmd(&["apply", "--auto-approve", "aws.yaml"]);
        env(&mut cmd, &endpoint);
        let o = cmd.output().unwrap();
        assert_code(&o, 1);
        let err = format!("{}{}", stdout(&o), stderr(&o));
        assert!(err.contains(&endpoint), "{err}");
        assert!(
            err.contains("InvalidClientTokenId") || err.contains("AuthFailure"),
            "{err}"
        );
        assert!(err.contains("check the credentials"), "{err}");
        drop(moto);

        // Nothing listens on port 9 of the loopback.
        let closed = "http://127.0.0.1:9";
        let mut cmd = s.cmd(&["apply", "--auto-approve", "aws.yaml"]);
        env(&mut cmd, closed);
        let o = cmd.output().unwrap();
        assert_code(&o, 1);
        let err = format!("{}{}", stdout(&o), stderr(&o));
        assert!(err.contains(closed), "{err}");
        assert!(err.contains("DispatchFailure"), "{err}");
        assert!(err.contains("reachable"), "{err}");
    }

    #[test]
    fn the_example_environment_applies_plans_empty_outputs_drifts_restores_and_destroys_on_moto() {
        let moto = Moto::start();
        let s = Scratch::new();
        s.copy_example("environment", "env");
        let run = |args: &[&str]| {
            let mut cmd = s.cmd(args);
            moto.apply_env(&mut cmd);
            cmd.output().expect("run anvil")
        };
        let out = ok(&run(&["apply", "--auto-approve", "env"]));
        assert!(out.contains("aws_eks_node_group."), "{out}");
        assert_code(&run(&["plan", "--detailed-exitcode", "env"]), 0);
        let o = run(&["output", "--json", "--spec", "env"]);
        let outputs: Value = serde_json::from_str(&ok(&o)).expect("output --json is JSON");
        for name in [
            "vpc_id",
            "cluster_name",
            "cluster_endpoint",
            "rds_endpoint",
            "bucket_name",
            "bucket_arn",
        ] {
            assert!(
                outputs[name]["value"]
                    .as_str()
                    .is_some_and(|v| !v.is_empty()),
                "output {name}: {outputs}"
            );
        }
        let state_dir = s.path().join("state");
        let ws = std::fs::read_dir(&state_dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|n| n.ends_with(".json"))
            .expect("a state file");
        let st: Value =
            serde_json::from_str(&std::fs::read_to_string(state_dir.join(&ws)).unwrap()).unwrap();
        let lineage = st["lineage"].as_str().unwrap().to_string();
        let before = owned_in(&moto, &lineage, "eu-central-1");
        // Each resource exists exactly once: 3 zones of subnets, NAT gateways and tables.
        assert_eq!(before["subnet"].len(), 6, "{before:?}");
        assert_eq!(before["nat"].len(), 3, "{before:?}");
        for (k, v) in &before {
            let mut d = v.clone();
            d.dedup();
            if k != "assoc" {
                assert_eq!(&d, v, "{k} duplicated: {v:?}");
            }
            assert!(!v.is_empty(), "no {k} made: {before:?}");
        }

        // Drift on the example (acceptance 2): behind anvil's back drop a private subnet's
        // route table association, suspend the bucket's versioning, open SSH on the
        // database's security group.
        let id_of = |a: &str| {
            st["resources"][a]["outputs"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no id for {a}"))
                .to_string()
        };
        let rtb = id_of("aws_route_table.demo-private-a");
        let sg = id_of("aws_security_group.demo-db");
        let bucket = id_of("aws_s3_bucket.demo");
        moto.python(&format!(
            r#"
def eu(name):
    return boto3.client(name, endpoint_url=ENDPOINT, region_name='eu-central-1', aws_access_key_id='testing', aws_secret_access_key='testing')
ec2 = eu('ec2')
t = ec2.describe_route_tables(RouteTableIds=[{rtb:?}])['RouteTables'][0]
for a in t['Associations']:
    if a.get('SubnetId'):
        ec2.disassociate_route_table(AssociationId=a['RouteTableAssociationId'])
eu('s3').put_bucket_versioning(Bucket={bucket:?}, VersioningConfiguration={{'Status': 'Suspended'}})
ec2.authorize_security_group_ingress(GroupId={sg:?}, IpPermissions=[{{'IpProtocol': 'tcp', 'FromPort': 22, 'ToPort': 22, 'IpRanges': [{{'CidrIp': '0.0.0.0/0'}}]}}])
"#
        ));
        let o = run(&["drift", "env"]);
        assert_code(&o, 2);
        let report = stdout(&o);
        for a in [
            "aws_route_table_association.demo-private-a",
            "aws_s3_bucket_versioning.demo",
            "aws_security_group.demo-db",
        ] {
            assert!(report.contains(a), "drift does not name {a}:\n{report}");
        }
        for quiet in [
            "aws_vpc.demo",
            "aws_route_table_association.demo-private-b",
            "aws_security_group.demo-cluster",
        ] {
            assert!(!report.contains(quiet), "drift names {quiet}:\n{report}");
        }
        ok(&run(&["apply", "--auto-approve", "env"]));
        assert_code(&run(&["drift", "env"]), 0);
        let real = moto.python(&format!(
            r#"
def eu(name):
    return boto3.client(name, endpoint_url=ENDPOINT, region_name='eu-central-1', aws_access_key_id='testing', aws_secret_access_key='testing')
ec2 = eu('ec2')
g = ec2.describe_security_groups(GroupIds=[{sg:?}])['SecurityGroups'][0]
t = ec2.describe_route_tables(RouteTableIds=[{rtb:?}])['RouteTables'][0]
result = {{
  'ssh': [p for p in g['IpPermissions'] if p.get('FromPort') == 22],
  'versioning': eu('s3').get_bucket_versioning(Bucket={bucket:?}).get('Status'),
  'assoc': len([a for a in t['Associations'] if a.get('SubnetId')]),
}}
"#
        ));
        assert_eq!(
            real,
            json!({"ssh": [], "versioning": "Enabled", "assoc": 1})
        );
        assert_eq!(owned_in(&moto, &lineage, "eu-central-1"), before);

        ok(&run(&["destroy", "--auto-approve", "env"]));
        let left = owned_in(&moto, &lineage, "eu-central-1");
        assert!(
            left.values().all(Vec::is_empty),
            "left after destroy: {left:?}"
        );
    }
}
