//! The AWS provider against a real moto server started by this test (`scripts/services.sh start
//! moto`: AMI, instance type and key pair validation on). The shared conformance suite, a
//! created VPC spread over zones, and bad input; what is left is counted through the raw EC2 API
//! by tags. No instance address is ever contacted.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use aws_sdk_ec2::types::Filter;
use gantry_aws::{AwsConfig, AwsProvider};
use gantry_core::tags::{self, TagFilter};
use gantry_core::{AllowRule, AwsOptions, Tags};
use gantry_provider::{ClusterRequest, ErrorKind, NodeRequest, Provider};

const PUBKEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEF6khsyBJikRYaeRt6ygSRs2gafxuCDKH/u3/mtbXJ8 gantry-test";
/// An AMI moto knows in us-east-1 (al2023, kernel 6.18).
const AMI: &str = "ami-0e1e769742d1cfb49";

struct Moto {
    port: u16,
    pid: u32,
}

impl Moto {
    fn start() -> Option<Moto> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
        let out = Command::new(script)
            .args(["start", "moto"])
            .env("SERVICES_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/services.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("not installed") && std::env::var("CI").as_deref() != Ok("true") {
                eprintln!("skipped: {}", stderr.trim());
                return None;
            }
            panic!("scripts/services.sh start moto failed: {stderr}");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut it = stdout.split_whitespace();
        Some(Moto {
            port: it.next().and_then(|p| p.parse().ok()).expect("port"),
            pid: it.next().and_then(|p| p.parse().ok()).expect("pid"),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
        let _ = Command::new(script)
            .args(["stop", &self.pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

fn options(moto: &Moto) -> AwsOptions {
    AwsOptions {
        region: "us-east-1".into(),
        endpoint: Some(moto.endpoint()),
        ami: Some(AMI.into()),
        caller_cidr: Some("203.0.113.7/32".into()),
        ..AwsOptions::default()
    }
}

fn provider(opts: AwsOptions) -> AwsProvider {
    AwsProvider::new(AwsConfig {
        options: opts,
        ssh_user: None,
        pools: vec![("small".into(), "default".into())],
        static_credentials: Some(("test".into(), "test".into())),
    })
}

async fn raw(moto: &Moto) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::new()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

fn tag(k: &str, v: &str) -> Filter {
    Filter::builder().name(format!("tag:{k}")).values(v).build()
}

/// What carries `key=value`, asked of EC2 directly: (live instances, security groups, key
/// pairs, vpcs, subnets, internet gateways, route tables).
async fn tagged(ec2: &aws_sdk_ec2::Client, k: &str, v: &str) -> [usize; 7] {
    let inst = ec2
        .describe_instances()
        .filters(tag(k, v))
        .send()
        .await
        .unwrap();
    let live = inst
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated") | Some("shutting-down")
            )
        })
        .count();
    let sgs = ec2
        .describe_security_groups()
        .filters(tag(k, v))
        .send()
        .await
        .unwrap();
    let keys = ec2
        .describe_key_pairs()
        .filters(tag(k, v))
        .send()
        .await
        .unwrap();
    let vpcs = ec2.describe_vpcs().filters(tag(k, v)).send().await.unwrap();
    let subs = ec2
        .describe_subnets()
        .filters(tag(k, v))
        .send()
        .await
        .unwrap();
    let igws = ec2
        .describe_internet_gateways()
        .filters(tag(k, v))
        .send()
        .await
        .unwrap();
    let rts = ec2
        .describe_route_tables()
        .filters(tag(k, v))
        .send()
        .await
        .unwrap();
    [
        live,
        sgs.security_groups().len(),
        keys.key_pairs().len(),
        vpcs.vpcs().len(),
        subs.subnets().len(),
        igws.internet_gateways().len(),
        rts.route_tables().len(),
    ]
}

fn creq(project: &str, cluster: &str, allow: Vec<AllowRule>) -> ClusterRequest {
    let mut t = Tags::new();
    t.insert(tags::PROJECT.into(), project.into());
    t.insert(tags::CLUSTER.into(), cluster.into());
    t.insert(tags::CLUSTER_UID.into(), format!("{cluster}-uid"));
    ClusterRequest {
        project: project.into(),
        cluster: cluster.into(),
        tags: t,
        allow,
        ssh_public_key: PUBKEY.into(),
    }
}

fn nreq(project: &str, cluster: &str, index: u32) -> NodeRequest {
    let extra = Tags::new();
    let t = tags::node_tags(&tags::NodeTagInput {
        project,
        cluster,
        cluster_uid: &format!("{cluster}-uid"),
        pool: "db",
        index,
        owner: "test",
        expires: "2099-01-01T00:00:00Z",
        extra: &extra,
    });
    NodeRequest {
        name: gantry_core::node_name(cluster, "db", index),
        project: project.into(),
        cluster: cluster.into(),
        pool: "db".into(),
        index,
        size: "small".into(),
        image: "default".into(),
        labels: Default::default(),
        tags: t,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_provider_on_moto() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = raw(&moto).await;

    // The shared conformance suite (its cluster is `conf`), with the cluster's resources first.
    let project = "confp";
    let p = provider(options(&moto));
    let allow = vec![
        AllowRule {
            port: 22,
            from: "caller".into(),
        },
        AllowRule {
            port: 2379,
            from: "cluster".into(),
        },
        AllowRule {
            port: 443,
            from: "10.0.0.0/8".into(),
        },
    ];
    p.ensure_cluster_resources(&creq(project, "conf", allow.clone()))
        .await
        .unwrap();
    // Idempotent: a second ensure adds nothing.
    p.ensure_cluster_resources(&creq(project, "conf", allow))
        .await
        .unwrap();
    assert_eq!(
        tagged(&ec2, tags::CLUSTER, "conf").await[1],
        1,
        "one security group"
    );
    let sgs = ec2
        .describe_security_groups()
        .filters(tag(tags::PROJECT, project))
        .send()
        .await
        .unwrap();
    let perms = sgs.security_groups()[0].ip_permissions();
    let mut rules: Vec<String> = perms
        .iter()
        .flat_map(|p| {
            let port = p.from_port().unwrap_or_default();
            p.ip_ranges()
                .iter()
                .map(move |r| format!("{port} {}", r.cidr_ip().unwrap_or_default()))
                .chain(
                    p.user_id_group_pairs()
                        .iter()
                        .map(move |_| format!("{port} cluster")),
                )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        ["22 203.0.113.7/32", "2379 cluster", "443 10.0.0.0/8"],
        "the security group has exactly the spec's rules"
    );
    assert_eq!(
        ec2.describe_key_pairs()
            .key_names("gantry-confp-conf")
            .send()
            .await
            .unwrap()
            .key_pairs()
            .len(),
        1
    );
    // A fresh provider (another process) finds the resources by tags.
    let p2 = provider(options(&moto));
    gantry_provider::conformance::run_all(&p2, project).await;
    p2.delete_cluster_resources(&TagFilter::cluster(project, "conf"))
        .await
        .unwrap();
    assert_eq!(
        tagged(&ec2, tags::PROJECT, project).await,
        [0; 7],
        "nothing tagged may remain"
    );

    // vpc: create over two zones: nodes spread round-robin, everything deleted by tags.
    let project = "netp";
    let mut o = options(&moto);
    o.vpc = Some("create".into());
    o.zones = vec!["us-east-1a".into(), "us-east-1b".into()];
    let p = provider(o);
    p.ensure_cluster_resources(&creq(project, "net", vec![]))
        .await
        .unwrap();
    let counts = tagged(&ec2, tags::CLUSTER, "net").await;
    assert_eq!(
        counts[1..],
        [1, 1, 1, 2, 1, 1],
        "sg, key pair, vpc, 2 subnets, igw, route table"
    );
    let mut zones = Vec::new();
    for i in 1..=3 {
        let n = p.create_node(&nreq(project, "net", i)).await.unwrap();
        let d = ec2
            .describe_instances()
            .instance_ids(&n.provider_id)
            .send()
            .await
            .unwrap();
        let inst = &d.reservations()[0].instances()[0];
        zones.push(
            inst.placement()
                .and_then(|p| p.availability_zone())
                .unwrap_or_default()
                .to_string(),
        );
        // Tags on the instance and its volumes.
        let vols = ec2
            .describe_volumes()
            .filters(tag("Name", &n.name))
            .send()
            .await
            .unwrap();
        assert!(
            !vols.volumes().is_empty(),
            "the volume of {} is tagged",
            n.name
        );
    }
    assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1a"]);
    for n in p.list(&TagFilter::cluster(project, "net")).await.unwrap() {
        p.delete_node(&n).await.unwrap();
    }
    p.delete_cluster_resources(&TagFilter::cluster(project, "net"))
        .await
        .unwrap();
    assert_eq!(tagged(&ec2, tags::PROJECT, project).await, [0; 7]);

    // Bad input: errors name the region, the call and the code, with a hint; nothing created.
    let mut o = options(&moto);
    o.ami = Some("ami-12345678".into());
    let e = provider(o)
        .ensure_cluster_resources(&creq("badp", "bad", vec![]))
        .await
        .unwrap_err();
    let text = format!("{e}");
    assert!(
        text.contains("us-east-1")
            && text.contains("DescribeImages")
            && text.contains("InvalidAMIID"),
        "{text}"
    );
    assert!(e.hint.as_deref().unwrap_or("").contains("ami"), "{e:?}");
    let mut o = options(&moto);
    o.instance_types.insert("small".into(), "t3.bogus".into());
    let e = provider(o)
        .ensure_cluster_resources(&creq("badp", "bad", vec![]))
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("InvalidInstanceType"), "{e}");
    assert!(e.hint.is_some());
    let mut o = options(&moto);
    o.region = "us-nowhere-1".into();
    let e = provider(o)
        .list(&TagFilter::project("badp"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
    assert!(
        format!("{e}").contains("unknown region `us-nowhere-1`"),
        "{e}"
    );
    let mut o = options(&moto);
    o.caller_cidr = None;
    if std::env::var_os(gantry_aws::CALLER_CIDR_ENV).is_none() {
        let e = provider(o)
            .ensure_cluster_resources(&creq("badp", "bad", vec![]))
            .await
            .unwrap_err();
        assert!(
            e.hint.as_deref().unwrap_or("").contains("caller_cidr"),
            "{e:?}"
        );
    }
    assert_eq!(
        tagged(&ec2, tags::PROJECT, "badp").await,
        [0; 7],
        "bad input creates nothing"
    );
}

#[test]
fn client_tokens_are_deterministic_and_short() {
    let a = gantry_aws::client_token("uid-1", "demo-db-1", "");
    assert_eq!(a, gantry_aws::client_token("uid-1", "demo-db-1", ""));
    assert_ne!(a, gantry_aws::client_token("uid-2", "demo-db-1", ""));
    assert_ne!(a, gantry_aws::client_token("uid-1", "demo-db-2", ""));
    assert!(a.len() <= 64);
}
