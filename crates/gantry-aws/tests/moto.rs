//! The AWS provider against a real moto server started by this test (`scripts/services.sh start
//! moto`: AMI, instance type and key pair validation on). The shared conformance suite, a
//! created VPC spread over zones, bad input, `RunInstances` batching (concurrent creates share
//! reservations; a crash between launch and tagging is adopted; partial batches), and the
//! caller's address detected from a local "what is my IP" server; what is left is counted
//! through the raw EC2 API by tags. No instance address is ever contacted, and no test sends
//! anything outside 127.0.0.0/8.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_ec2::types::Filter;
use gantry_aws::AwsOptions;
use gantry_aws::{AwsConfig, AwsProvider};
use gantry_core::tags::{self, TagFilter};
use gantry_core::{AllowRule, Tags};
use gantry_provider::{ClusterRequest, ErrorKind, NodeRequest, Provider};

const PUBKEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEF6khsyBJikRYaeRt6ygSRs2gafxuCDKH/u3/mtbXJ8 gantry-test";
/// The project key after `gantry secrets rotate-ssh-key`.
const ROTATED: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ2cfti6VL3VJtjZC9fEqGvRNWa10zOCE0684yaeyufG rotated";
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
    t.insert(
        tags::WORLD.into(),
        gantry_provider::conformance::WORLD.into(),
    );
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
        world: gantry_provider::conformance::WORLD,
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
    let allow_again = allow.clone();
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
    // After the project key is rotated, this world's key pair is replaced with the new key
    // (still one key pair, same name and tags).
    let mut rotated = creq(project, "conf", allow_again.clone());
    rotated.ssh_public_key = ROTATED.into();
    p.ensure_cluster_resources(&rotated).await.unwrap();
    let held = ec2
        .describe_key_pairs()
        .key_names("gantry-confp-conf")
        .include_public_key(true)
        .send()
        .await
        .unwrap();
    assert_eq!(held.key_pairs().len(), 1);
    let pk = held.key_pairs()[0].public_key().unwrap_or_default();
    assert!(
        pk.contains("AAAAC3NzaC1lZDI1NTE5AAAAIJ2cfti6VL3VJtjZC9fEqGvRNWa10zOCE0684yaeyufG"),
        "the key pair holds the rotated key: {pk}"
    );
    assert_eq!(tagged(&ec2, tags::CLUSTER, "conf").await[2], 1);
    p.ensure_cluster_resources(&creq(project, "conf", allow_again))
        .await
        .unwrap();
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
    // No caller address given and its detection fails (a closed loopback port: tests never
    // ask the internet): a clear error, with what was tried and a hint.
    let mut o = options(&moto);
    o.caller_cidr = None;
    if std::env::var_os(gantry_aws::CALLER_CIDR_ENV).is_none() {
        let url = closed_loopback_url();
        let e = provider(o)
            .with_caller_ip_url(url.clone())
            .ensure_cluster_resources(&creq("badp", "bad", vec![]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        let text = format!("{e}");
        assert!(
            text.contains("caller's address is not known") && text.contains(&format!("GET {url}")),
            "{text}"
        );
        let hint = e.hint.as_deref().unwrap_or("");
        assert!(
            hint.contains("caller_cidr") && hint.contains(gantry_aws::CALLER_IP_URL_ENV),
            "{e:?}"
        );
    }
    assert_eq!(
        tagged(&ec2, tags::PROJECT, "badp").await,
        [0; 7],
        "bad input creates nothing"
    );
}

/// `scripts/fault-proxy.py` in front of moto, killed when dropped.
struct Proxy {
    child: std::process::Child,
    port: u16,
}

impl Proxy {
    fn start(moto: &Moto, args: &[&str]) -> Proxy {
        use std::io::BufRead as _;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fault-proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--upstream", &moto.endpoint(), "--max-seconds", "600"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scripts/fault-proxy.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the proxy's port");
        let port = line.trim().parse().expect("the proxy prints its port");
        Proxy { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `by_action` of the proxy's counters.
    fn by_action(&self) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET /__fault-proxy/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str::<serde_json::Value>(body).unwrap()["by_action"].clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every call that makes or changes a supporting resource (`vpc: create` over two zones, the
/// security group, the key pair), and every call that deletes one, takes effect once and loses
/// its answer (`--lose-first 1`: EC2 did it, gantry got a 500). The SDK alone would resend the
/// creates that have no ClientToken and make a second VPC, gateway or route table, or fail on
/// `InvalidSubnet.Conflict`. One `ensure_cluster_resources` must still end with exactly one of
/// each (a subnet per zone, public, associated; one default route), a second one must change
/// nothing, and the delete must leave nothing tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_network_converges_through_lost_answers() {
    let Some(moto) = Moto::start() else { return };
    let creates = [
        "CreateVpc",
        "CreateInternetGateway",
        "AttachInternetGateway",
        "CreateRouteTable",
        "CreateRoute",
        "CreateSubnet",
        "ModifySubnetAttribute",
        "AssociateRouteTable",
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "ImportKeyPair",
    ];
    let deletes = [
        "DeleteSubnet",
        "DisassociateRouteTable",
        "DeleteRouteTable",
        "DetachInternetGateway",
        "DeleteInternetGateway",
        "DeleteVpc",
        "DeleteSecurityGroup",
        "DeleteKeyPair",
    ];
    let all = [&creates[..], &deletes[..]].concat().join(",");
    let proxy = Proxy::start(&moto, &["--lose-first", "1", "--lose-first-actions", &all]);
    let (project, cluster) = ("lossp", "lossy");
    let mut o = options(&moto);
    o.endpoint = Some(proxy.endpoint());
    o.vpc = Some("create".into());
    o.zones = vec!["us-east-1a".into(), "us-east-1b".into()];
    let p = provider(o);
    let req = creq(
        project,
        cluster,
        vec![
            AllowRule {
                port: 22,
                from: "caller".into(),
            },
            AllowRule {
                port: 8080,
                from: "cluster".into(),
            },
        ],
    );
    p.ensure_cluster_resources(&req).await.unwrap();

    let lost = proxy.by_action();
    for a in creates {
        assert_eq!(lost[a]["errors5xx_after"], 1, "{a} lost one answer: {lost}");
    }
    let ec2 = raw(&moto).await;
    assert_eq!(
        tagged(&ec2, tags::CLUSTER, cluster).await[1..],
        [1, 1, 1, 2, 1, 1],
        "one sg, key pair, vpc, igw, route table; a subnet per zone"
    );
    let subs = ec2
        .describe_subnets()
        .filters(tag(tags::CLUSTER, cluster))
        .send()
        .await
        .unwrap();
    let mut zones: Vec<_> = subs
        .subnets()
        .iter()
        .map(|s| s.availability_zone().unwrap_or_default().to_string())
        .collect();
    zones.sort();
    assert_eq!(zones, ["us-east-1a", "us-east-1b"]);
    assert!(
        subs.subnets()
            .iter()
            .all(|s| s.map_public_ip_on_launch() == Some(true)),
        "{subs:?}"
    );
    let rts = ec2
        .describe_route_tables()
        .filters(tag(tags::CLUSTER, cluster))
        .send()
        .await
        .unwrap();
    let rt = &rts.route_tables()[0];
    let mut associated: Vec<_> = rt
        .associations()
        .iter()
        .filter_map(|a| a.subnet_id())
        .collect();
    associated.sort();
    let mut ids: Vec<_> = subs
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id())
        .collect();
    ids.sort();
    assert_eq!(associated, ids, "every subnet associated once");
    let defaults = rt
        .routes()
        .iter()
        .filter(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
        .count();
    assert_eq!(defaults, 1, "{rt:?}");
    let igws = ec2
        .describe_internet_gateways()
        .filters(tag(tags::CLUSTER, cluster))
        .send()
        .await
        .unwrap();
    assert_eq!(
        igws.internet_gateways()[0].attachments().len(),
        1,
        "{igws:?}"
    );
    let sg = ec2
        .describe_security_groups()
        .filters(tag(tags::CLUSTER, cluster))
        .send()
        .await
        .unwrap();
    assert_eq!(sg.security_groups()[0].ip_permissions().len(), 2, "{sg:?}");

    // Again: nothing new.
    p.ensure_cluster_resources(&req).await.unwrap();
    assert_eq!(
        tagged(&ec2, tags::CLUSTER, cluster).await[1..],
        [1, 1, 1, 2, 1, 1]
    );

    p.delete_cluster_resources(&TagFilter::cluster(project, cluster))
        .await
        .unwrap();
    let lost = proxy.by_action();
    for a in deletes {
        assert_eq!(lost[a]["errors5xx_after"], 1, "{a} lost one answer: {lost}");
    }
    assert_eq!(
        tagged(&ec2, tags::PROJECT, project).await,
        [0; 7],
        "nothing tagged may remain"
    );
}

#[test]
fn client_tokens_are_deterministic_and_short() {
    let a = gantry_aws::client_token("uid-1", "demo-db-1", "");
    assert_eq!(a, gantry_aws::client_token("uid-1", "demo-db-1", ""));
    assert_ne!(a, gantry_aws::client_token("uid-2", "demo-db-1", ""));
    assert_ne!(a, gantry_aws::client_token("uid-1", "demo-db-2", ""));
    assert!(a.len() <= 64);
    // A batch's token: from all its names, in order.
    let b = gantry_aws::client_token("uid-1", "demo-db-1,demo-db-2", "on-demand");
    assert_ne!(
        b,
        gantry_aws::client_token("uid-1", "demo-db-1", "on-demand")
    );
    assert_ne!(
        b,
        gantry_aws::client_token("uid-1", "demo-db-1,demo-db-3", "on-demand")
    );
    assert!(b.len() <= 64);
}

/// `http://127.0.0.1:PORT/` with nothing listening on PORT.
fn closed_loopback_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/")
}

/// The live instances carrying `gantry-cluster=cluster`, at moto: (reservation id, instance).
async fn instances(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
) -> Vec<(String, aws_sdk_ec2::types::Instance)> {
    let out = ec2
        .describe_instances()
        .filters(tag(tags::CLUSTER, cluster))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| {
            let id = r.reservation_id().unwrap_or_default().to_string();
            r.instances().iter().map(move |i| (id.clone(), i.clone()))
        })
        .collect()
}

fn tag_of(i: &aws_sdk_ec2::types::Instance, k: &str) -> Option<String> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(k))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// Creates the nodes `indices` of `cluster` at once through `p`: one answer per index.
async fn create_all(
    p: &Arc<AwsProvider>,
    project: &str,
    cluster: &str,
    indices: impl IntoIterator<Item = u32>,
) -> BTreeMap<u32, gantry_provider::Result<gantry_provider::NodeInfo>> {
    let mut set = tokio::task::JoinSet::new();
    for i in indices {
        let (p, req) = (p.clone(), nreq(project, cluster, i));
        set.spawn(async move { (i, p.create_node(&req).await) });
    }
    let mut out = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (i, r) = r.unwrap();
        out.insert(i, r);
    }
    out
}

/// Every instance is its node exactly once, with its Name and index tags.
fn assert_named(found: &[(String, aws_sdk_ec2::types::Instance)], cluster: &str, n: u32) {
    let mut names = BTreeSet::new();
    for (_, i) in found {
        let name = tag_of(i, "Name").unwrap_or_else(|| panic!("no Name on {:?}", i.instance_id()));
        let index = tag_of(i, tags::INDEX).expect("gantry-index");
        assert_eq!(
            name,
            gantry_core::node_name(cluster, "db", index.parse().unwrap())
        );
        assert_eq!(tag_of(i, tags::POOL).as_deref(), Some("db"));
        assert!(names.insert(name.clone()), "{name} twice");
    }
    let want: BTreeSet<String> = (1..=n)
        .map(|i| gantry_core::node_name(cluster, "db", i))
        .collect();
    assert_eq!(names, want);
}

/// Concurrent creates become one `RunInstances` per zone; every caller gets its own instance,
/// named and tagged, in its zone; creating again changes nothing; nothing is left after delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_share_run_instances() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = raw(&moto).await;
    let (project, cluster) = ("batchp", "batch");
    let mut o = options(&moto);
    o.zones = vec!["us-east-1a".into(), "us-east-1b".into()];
    let p = Arc::new(provider(o));
    p.ensure_cluster_resources(&creq(project, cluster, vec![]))
        .await
        .unwrap();

    let got = create_all(&p, project, cluster, 1..=12).await;
    let mut ids = BTreeSet::new();
    for (i, r) in &got {
        let n = r.as_ref().unwrap_or_else(|e| panic!("node {i}: {e}"));
        assert_eq!(n.name, gantry_core::node_name(cluster, "db", *i));
        assert_eq!(n.index, *i);
        assert!(ids.insert(n.provider_id.clone()), "{} twice", n.provider_id);
    }
    let found = instances(&ec2, cluster).await;
    assert_eq!(found.len(), 12, "exactly one instance per node");
    assert_named(&found, cluster, 12);
    let reservations: BTreeSet<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
    eprintln!("12 nodes in {} reservations", reservations.len());
    assert!(
        reservations.len() < 12,
        "concurrent creates must share RunInstances: {} reservations",
        reservations.len()
    );
    for (_, i) in &found {
        let index: usize = tag_of(i, tags::INDEX).unwrap().parse().unwrap();
        assert_eq!(
            i.placement().and_then(|p| p.availability_zone()),
            Some(["us-east-1a", "us-east-1b"][(index - 1) % 2]),
            "nodes spread over the zones by index"
        );
        assert!(tag_of(i, gantry_aws::BATCH_TAG).is_some(), "batch tag");
    }
    // The volumes carry the cluster's tags and their node's name.
    let vols = ec2
        .describe_volumes()
        .filters(tag(tags::CLUSTER, cluster))
        .send()
        .await
        .unwrap();
    assert_eq!(vols.volumes().len(), 12);
    for v in vols.volumes() {
        assert!(
            v.tags().iter().any(|t| t.key() == Some("Name")),
            "{v:?} has no Name"
        );
    }

    // Again (a retry, a re-run): the same instances.
    let again = create_all(&p, project, cluster, 1..=12).await;
    for (i, r) in &again {
        assert_eq!(
            r.as_ref().unwrap().provider_id,
            got[i].as_ref().unwrap().provider_id
        );
    }
    assert_eq!(instances(&ec2, cluster).await.len(), 12);
    let listed = p.list(&TagFilter::cluster(project, cluster)).await.unwrap();
    assert_eq!(listed.len(), 12);

    for n in listed {
        p.delete_node(&n).await.unwrap();
    }
    p.delete_cluster_resources(&TagFilter::cluster(project, cluster))
        .await
        .unwrap();
    assert_eq!(tagged(&ec2, tags::PROJECT, project).await, [0; 7]);
}

/// A crash between `RunInstances` and the per-instance tags leaves instances with the batch's
/// tags but no Name: the next run adopts them (through `create_node` and through `list`)
/// instead of launching more. A partial batch (fewer instances than asked) answers retryable
/// errors to the callers left out, and their retries complete the cluster without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashed_batches_are_adopted_and_partial_batches_complete() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = raw(&moto).await;
    let (project, cluster) = ("adoptp", "adopt");
    let hooks = gantry_aws::TestHooks {
        stop_after_launch: true,
        ..Default::default()
    };
    let crashing = Arc::new(provider(options(&moto)).with_test_hooks(hooks));
    crashing
        .ensure_cluster_resources(&creq(project, cluster, vec![]))
        .await
        .unwrap();

    // The "crash": launched, never tagged one by one.
    let got = create_all(&crashing, project, cluster, 1..=5).await;
    assert!(got.values().all(Result::is_err));
    let found = instances(&ec2, cluster).await;
    assert_eq!(found.len(), 5);
    let launched: BTreeSet<String> = found
        .iter()
        .map(|(_, i)| i.instance_id().unwrap().to_string())
        .collect();
    for (_, i) in &found {
        assert_eq!(
            tag_of(i, "Name").as_deref(),
            Some(gantry_aws::PENDING_NAME),
            "not named yet"
        );
        assert_eq!(
            tag_of(i, gantry_aws::BATCH_INDICES_TAG).as_deref(),
            Some("1,2,3,4,5")
        );
        assert_eq!(tag_of(i, tags::CLUSTER_UID).as_deref(), Some("adopt-uid"));
    }

    // The next run (another process): create_node adopts them; nothing new is launched.
    let next = Arc::new(provider(options(&moto)));
    let got = create_all(&next, project, cluster, 1..=5).await;
    let adopted: BTreeSet<String> = got
        .values()
        .map(|r| r.as_ref().unwrap().provider_id.clone())
        .collect();
    assert_eq!(
        adopted, launched,
        "the crashed batch's instances, no others"
    );
    let found = instances(&ec2, cluster).await;
    assert_eq!(found.len(), 5);
    assert_named(&found, cluster, 5);

    // Another crash, then only a listing (what `up` plans from): the nodes show under their
    // names, and their tags get written.
    let got = create_all(&crashing, project, cluster, 6..=8).await;
    assert!(got.values().all(Result::is_err));
    let listed = next
        .list(&TagFilter::cluster(project, cluster))
        .await
        .unwrap();
    let names: Vec<String> = listed.iter().map(|n| n.name.clone()).collect();
    let want: Vec<String> = (1..=8)
        .map(|i| gantry_core::node_name(cluster, "db", i))
        .collect();
    assert_eq!(names, want);
    assert!(listed.iter().all(|n| n.pool == "db" && n.index >= 1));
    let found = instances(&ec2, cluster).await;
    assert_eq!(found.len(), 8);
    assert_named(&found, cluster, 8);

    // Partial batches: moto launches MinCount (1) of them; the others are retried.
    let partial = Arc::new(
        provider(options(&moto)).with_test_hooks(gantry_aws::TestHooks {
            partial_first: true,
            ..Default::default()
        }),
    );
    let mut left: Vec<u32> = (9..=12).collect();
    let mut rounds = 0;
    while !left.is_empty() {
        rounds += 1;
        assert!(rounds <= 6, "partial batches never completed: {left:?}");
        let got = create_all(&partial, project, cluster, left.clone()).await;
        left.clear();
        for (i, r) in got {
            match r {
                Ok(n) => assert_eq!(n.index, i),
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::Retryable, "{e}");
                    assert!(format!("{e}").contains("RunInstances"), "{e}");
                    left.push(i);
                }
            }
        }
    }
    assert!(rounds > 1, "the first batch was partial");
    let found = instances(&ec2, cluster).await;
    assert_eq!(found.len(), 12);
    assert_named(&found, cluster, 12);

    for n in next
        .list(&TagFilter::cluster(project, cluster))
        .await
        .unwrap()
    {
        next.delete_node(&n).await.unwrap();
    }
    next.delete_cluster_resources(&TagFilter::cluster(project, cluster))
        .await
        .unwrap();
    assert_eq!(tagged(&ec2, tags::PROJECT, project).await, [0; 7]);
}

/// A "what is my IP" server on 127.0.0.1 answering `answer`; counts the requests.
fn ip_server(answer: &'static str) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/", l.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, hits)
}

/// No `caller_cidr` and no GANTRY_CALLER_CIDR: the caller's address is asked of the URL in
/// GANTRY_CALLER_IP_URL (here a server on 127.0.0.1), and SSH is allowed from it as a /32. Run in
/// a child process of this test binary, so that the variable is set for it alone.
#[test]
fn caller_address_is_detected_through_gantry_caller_ip_url() {
    let (url, hits) = ip_server("198.51.100.23\n");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "caller_detection_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(gantry_aws::CALLER_IP_URL_ENV, &url)
        .env_remove(gantry_aws::CALLER_CIDR_ENV)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    if text.contains("skipped:") {
        eprintln!("{text}");
        return;
    }
    assert!(text.contains("1 passed"), "the child did not run:\n{text}");
    assert!(hits.load(Ordering::SeqCst) >= 1, "the server was not asked");
}

#[test]
#[ignore = "run by caller_address_is_detected_through_gantry_caller_ip_url, with its environment"]
fn caller_detection_child() {
    // Only ever against a loopback server: never ask the internet from a test.
    let Ok(url) = std::env::var(gantry_aws::CALLER_IP_URL_ENV) else {
        return;
    };
    if !url.starts_with("http://127.0.0.1:")
        || std::env::var_os(gantry_aws::CALLER_CIDR_ENV).is_some()
    {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let Some(moto) = Moto::start() else { return };
            let ec2 = raw(&moto).await;
            let mut o = options(&moto);
            o.caller_cidr = None;
            let p = provider(o);
            let (project, cluster) = ("callerp", "caller");
            // The default rule: SSH from the caller.
            p.ensure_cluster_resources(&creq(project, cluster, vec![]))
                .await
                .unwrap();
            let sgs = ec2
                .describe_security_groups()
                .filters(tag(tags::CLUSTER, cluster))
                .send()
                .await
                .unwrap();
            let rules: Vec<String> = sgs.security_groups()[0]
                .ip_permissions()
                .iter()
                .flat_map(|p| {
                    let port = p.from_port().unwrap_or_default();
                    p.ip_ranges()
                        .iter()
                        .map(move |r| format!("{port} {}", r.cidr_ip().unwrap_or_default()))
                })
                .collect();
            assert_eq!(rules, ["22 198.51.100.23/32"]);
            p.delete_cluster_resources(&TagFilter::cluster(project, cluster))
                .await
                .unwrap();
            assert_eq!(tagged(&ec2, tags::PROJECT, project).await, [0; 7]);
        });
}
