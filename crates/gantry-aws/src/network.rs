//! The network a cluster's instances launch into: the default VPC, a given VPC or subnet, or
//! (`vpc: create`) a VPC, internet gateway, route table and one subnet per zone, all tagged
//! with the cluster's tags and found by them — this world's only (`TagFilter::world`, matched
//! on the tags read back): another world's network with the same cluster tags is never used or
//! deleted.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, Subnet};
use gantry_core::Tags;
use gantry_core::tags::TagFilter;
use gantry_provider::{ClusterRequest, ErrorKind};

use crate::{AwsProvider, filter, sdk, tag_filters, tag_spec, tags_of, world_of};

pub(crate) struct Net {
    pub(crate) vpc: Option<String>,
    pub(crate) subnets: Vec<String>,
}

const CREATED_CIDR: &str = "10.77.0.0/16";

/// Subnets to spread nodes over, in zone order; empty: let EC2 choose.
pub(crate) async fn subnets_for(
    p: &AwsProvider,
    f: &TagFilter,
    vpc: Option<&str>,
) -> gantry_provider::Result<Vec<String>> {
    let o = &p.cfg.options;
    if let Some(s) = &o.subnet {
        return Ok(vec![s.clone()]);
    }
    match (o.vpc.as_deref(), vpc) {
        (Some("create"), v) => {
            let mut fs = tag_filters(f);
            if let Some(v) = v {
                fs.push(filter("vpc-id", v));
            }
            let subs: Vec<Subnet> = describe_subnets(p, fs)
                .await?
                .into_iter()
                .filter(|s| f.matches(&tags_of(s.tags())))
                .collect();
            Ok(order(&subs, &o.zones))
        }
        (Some(id), _) if id.starts_with("vpc-") => {
            let subs = describe_subnets(p, vec![filter("vpc-id", id)]).await?;
            Ok(order(&subs, &o.zones))
        }
        _ => Ok(vec![]),
    }
}

/// One subnet per zone (zone order), or every subnet sorted by zone when no zones are given.
fn order(subs: &[Subnet], zones: &[String]) -> Vec<String> {
    let mut subs: Vec<&Subnet> = subs.iter().collect();
    subs.sort_by(|a, b| {
        (a.availability_zone(), a.subnet_id()).cmp(&(b.availability_zone(), b.subnet_id()))
    });
    if zones.is_empty() {
        return subs
            .iter()
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .collect();
    }
    zones
        .iter()
        .filter_map(|z| {
            subs.iter()
                .find(|s| s.availability_zone() == Some(z.as_str()))
                .and_then(|s| s.subnet_id().map(str::to_string))
        })
        .collect()
}

async fn describe_subnets(
    p: &AwsProvider,
    filters: Vec<Filter>,
) -> gantry_provider::Result<Vec<Subnet>> {
    let c = p.clients().await?;
    let mut pages = c
        .ec2
        .describe_subnets()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk(p.region(), "DescribeSubnets", "subnets", e))?;
        out.extend(page.subnets().iter().cloned());
    }
    Ok(out)
}

pub(crate) async fn ensure(
    p: &AwsProvider,
    req: &ClusterRequest,
    t: &Tags,
) -> gantry_provider::Result<Net> {
    let o = &p.cfg.options;
    let c = p.clients().await?;
    let f = TagFilter::cluster(&req.project, &req.cluster).in_world(world_of(t));
    if let Some(s) = &o.subnet {
        let subs = c
            .ec2
            .describe_subnets()
            .subnet_ids(s)
            .send()
            .await
            .map_err(|e| sdk(p.region(), "DescribeSubnets", s, e))?;
        let vpc = subs
            .subnets()
            .first()
            .and_then(|x| x.vpc_id())
            .map(str::to_string);
        return Ok(Net {
            vpc,
            subnets: vec![s.clone()],
        });
    }
    match o.vpc.as_deref() {
        Some("create") => create(p, &f, t).await,
        Some(id) if id.starts_with("vpc-") => {
            let subnets = subnets_for(p, &f, Some(id)).await?;
            if subnets.is_empty() {
                return Err(p
                    .e(
                        "DescribeSubnets",
                        id,
                        ErrorKind::InvalidInput,
                        "the vpc has no subnet (in the given zones)",
                    )
                    .with_hint("give `subnet: subnet-…`, other `zones`, or `vpc: create`"));
            }
            Ok(Net {
                vpc: Some(id.to_string()),
                subnets,
            })
        }
        _ => {
            let vpcs = c
                .ec2
                .describe_vpcs()
                .filters(filter("is-default", "true"))
                .send()
                .await
                .map_err(|e| sdk(p.region(), "DescribeVpcs", "default vpc", e))?;
            let Some(v) = vpcs.vpcs().first().and_then(|v| v.vpc_id()) else {
                return Err(p
                    .e(
                        "DescribeVpcs",
                        "default vpc",
                        ErrorKind::InvalidInput,
                        "the region has no default vpc",
                    )
                    .with_hint("use `vpc: create`, or give `vpc: vpc-…` / `subnet: subnet-…`"));
            };
            Ok(Net {
                vpc: Some(v.to_string()),
                subnets: vec![],
            })
        }
    }
}

/// How many times a create EC2 cannot make idempotent is tried (each try first looks for what an
/// earlier one made).
const CREATE_ATTEMPTS: u32 = 6;

/// Per-call config for creates that have no `ClientToken` (CreateVpc, CreateInternetGateway,
/// CreateSubnet, CreateRouteTable as gantry uses it, CreateSecurityGroup): one attempt, no SDK
/// retry. The SDK would resend a call whose answer was lost and make a second, equally tagged
/// resource (or fail on a name or range the first one took); instead the failure comes back to
/// [`find_or_create`], which looks for the first one by its tags before trying again.
pub(crate) fn once() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default()
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
}

/// Finds a resource (by tags) or creates it, retrying retryable failures (throttling, 5xx, a
/// lost answer) with backoff; every retry looks again first, so a create whose answer was lost
/// is adopted, not repeated.
pub(crate) async fn find_or_create<F, FF, C, CF>(
    find: F,
    create: C,
) -> gantry_provider::Result<String>
where
    F: Fn() -> FF,
    FF: std::future::Future<Output = gantry_provider::Result<Option<String>>>,
    C: Fn() -> CF,
    CF: std::future::Future<Output = gantry_provider::Result<String>>,
{
    let mut attempt = 0;
    loop {
        if let Some(id) = find().await? {
            return Ok(id);
        }
        match create().await {
            Ok(id) => return Ok(id),
            Err(e) if e.is_retryable() && attempt + 1 < CREATE_ATTEMPTS => {
                tracing::debug!(op = %e.op, error = %e.message, "create failed; looking again");
                crate::backoff(attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The id a create returned; an answer without one is a broken answer, retried like a lost one.
pub(crate) fn id_of(
    r: &str,
    op: &str,
    res: &str,
    id: Option<&str>,
) -> gantry_provider::Result<String> {
    match id {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(crate::error::err(
            r,
            op,
            res,
            ErrorKind::Retryable,
            "the answer carried no id",
        )),
    }
}

/// Creates (or completes) the cluster's own network. Every part is found by its tags first and
/// every follow-up (attachment, default route, public IPs, association) is checked, so a run cut
/// short at any call, or a call whose answer was lost, converges on the next try to one VPC, one
/// internet gateway, one route table and one subnet per zone.
async fn create(p: &AwsProvider, f: &TagFilter, t: &Tags) -> gantry_provider::Result<Net> {
    let c = p.clients().await?;
    let r = p.region().to_string();
    let r = r.as_str();
    let vpc = find_or_create(
        || async {
            let out = c
                .ec2
                .describe_vpcs()
                .set_filters(Some(tag_filters(f)))
                .send()
                .await
                .map_err(|e| sdk(r, "DescribeVpcs", "cluster vpc", e))?;
            // Deterministic if an older version left two: the lowest id.
            let own = out
                .vpcs()
                .iter()
                .filter(|v| f.matches(&tags_of(v.tags())))
                .filter_map(|v| v.vpc_id())
                .min()
                .map(str::to_string);
            if own.is_none()
                && let Some(v) = out.vpcs().first()
            {
                let what = format!("vpc {}", v.vpc_id().unwrap_or_default());
                return Err(crate::foreign(r, "DescribeVpcs", &what, &tags_of(v.tags())));
            }
            Ok(own)
        },
        || async {
            let out = c
                .ec2
                .create_vpc()
                .cidr_block(CREATED_CIDR)
                .tag_specifications(tag_spec(ResourceType::Vpc, t))
                .customize()
                .config_override(once())
                .send()
                .await
                .map_err(|e| sdk(r, "CreateVpc", CREATED_CIDR, e))?;
            id_of(
                r,
                "CreateVpc",
                CREATED_CIDR,
                out.vpc().and_then(|v| v.vpc_id()),
            )
        },
    )
    .await?;
    let vpc = vpc.as_str();

    let igw = find_or_create(
        || async {
            let out = c
                .ec2
                .describe_internet_gateways()
                .set_filters(Some(tag_filters(f)))
                .send()
                .await
                .map_err(|e| sdk(r, "DescribeInternetGateways", vpc, e))?;
            Ok(out
                .internet_gateways()
                .iter()
                .filter(|g| f.matches(&tags_of(g.tags())))
                .filter_map(|g| g.internet_gateway_id())
                .min()
                .map(str::to_string))
        },
        || async {
            let out = c
                .ec2
                .create_internet_gateway()
                .tag_specifications(tag_spec(ResourceType::InternetGateway, t))
                .customize()
                .config_override(once())
                .send()
                .await
                .map_err(|e| sdk(r, "CreateInternetGateway", vpc, e))?;
            id_of(
                r,
                "CreateInternetGateway",
                vpc,
                out.internet_gateway().and_then(|g| g.internet_gateway_id()),
            )
        },
    )
    .await?;
    let gws = c
        .ec2
        .describe_internet_gateways()
        .internet_gateway_ids(&igw)
        .send()
        .await
        .map_err(|e| sdk(r, "DescribeInternetGateways", &igw, e))?;
    let attached = gws
        .internet_gateways()
        .iter()
        .flat_map(|g| g.attachments())
        .any(|a| a.vpc_id() == Some(vpc));
    if !attached {
        match c
            .ec2
            .attach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(vpc)
            .send()
            .await
        {
            Ok(_) => {}
            // The SDK resent an attach whose answer was lost.
            Err(e) if crate::error::code(&e) == Some("Resource.AlreadyAssociated") => {}
            Err(e) => return Err(sdk(r, "AttachInternetGateway", &igw, e)),
        }
    }

    let rt = find_or_create(
        || async {
            let out = c
                .ec2
                .describe_route_tables()
                .set_filters(Some(tag_filters(f)))
                .send()
                .await
                .map_err(|e| sdk(r, "DescribeRouteTables", vpc, e))?;
            Ok(out
                .route_tables()
                .iter()
                .filter(|t| t.vpc_id() == Some(vpc) && f.matches(&tags_of(t.tags())))
                .filter_map(|t| t.route_table_id())
                .min()
                .map(str::to_string))
        },
        || async {
            let out = c
                .ec2
                .create_route_table()
                .vpc_id(vpc)
                .tag_specifications(tag_spec(ResourceType::RouteTable, t))
                .customize()
                .config_override(once())
                .send()
                .await
                .map_err(|e| sdk(r, "CreateRouteTable", vpc, e))?;
            id_of(
                r,
                "CreateRouteTable",
                vpc,
                out.route_table().and_then(|t| t.route_table_id()),
            )
        },
    )
    .await?;
    let table = describe_route_table(p, &rt).await?;
    let has_default = table.as_ref().is_some_and(|t| {
        t.routes()
            .iter()
            .any(|x| x.destination_cidr_block() == Some("0.0.0.0/0"))
    });
    if !has_default {
        match c
            .ec2
            .create_route()
            .route_table_id(&rt)
            .destination_cidr_block("0.0.0.0/0")
            .gateway_id(&igw)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if crate::error::code(&e) == Some("RouteAlreadyExists") => {}
            Err(e) => return Err(sdk(r, "CreateRoute", &rt, e)),
        }
    }

    let zones: Vec<Option<String>> = if p.cfg.options.zones.is_empty() {
        vec![None]
    } else {
        p.cfg.options.zones.iter().cloned().map(Some).collect()
    };
    for z in &zones {
        find_or_create(
            || async {
                let subs = describe_subnets(p, tag_filters(f)).await?;
                Ok(subs
                    .iter()
                    .filter(|s| s.vpc_id() == Some(vpc) && f.matches(&tags_of(s.tags())))
                    .filter(|s| z.is_none() || s.availability_zone() == z.as_deref())
                    .filter_map(|s| s.subnet_id())
                    .min()
                    .map(str::to_string))
            },
            || async {
                // The first /24 no subnet of the VPC uses (zones may have been added or removed
                // since the last run, so a zone's position does not name its range).
                let used: Vec<String> = describe_subnets(p, vec![filter("vpc-id", vpc)])
                    .await?
                    .iter()
                    .filter_map(|s| s.cidr_block().map(str::to_string))
                    .collect();
                let Some(cidr) = (0..=255)
                    .map(|k| format!("10.77.{k}.0/24"))
                    .find(|c| !used.contains(c))
                else {
                    return Err(p.e(
                        "CreateSubnet",
                        vpc,
                        ErrorKind::InvalidInput,
                        "the cluster vpc has no free /24 left",
                    ));
                };
                let out = c
                    .ec2
                    .create_subnet()
                    .vpc_id(vpc)
                    .cidr_block(&cidr)
                    .set_availability_zone(z.clone())
                    .tag_specifications(tag_spec(ResourceType::Subnet, t))
                    .customize()
                    .config_override(once())
                    .send()
                    .await
                    .map_err(|e| {
                        // In gantry's own VPC a conflict can only be a subnet an earlier,
                        // unanswered try made: look again.
                        let conflict = crate::error::code(&e) == Some("InvalidSubnet.Conflict");
                        let mut pe = sdk(r, "CreateSubnet", &cidr, e);
                        if conflict {
                            pe.kind = ErrorKind::Retryable;
                        }
                        pe
                    })?;
                id_of(
                    r,
                    "CreateSubnet",
                    &cidr,
                    out.subnet().and_then(|s| s.subnet_id()),
                )
            },
        )
        .await?;
    }

    // Follow-ups, checked for every subnet of the cluster: public IPs on launch, and the route
    // table association (a run cut short between a subnet and these leaves them undone). The
    // table's associations are as described above: nothing since has associated a subnet.
    let associated: Vec<String> = table
        .iter()
        .flat_map(|t| t.associations())
        .filter_map(|a| a.subnet_id().map(str::to_string))
        .collect();
    for s in describe_subnets(p, tag_filters(f)).await? {
        let Some(sub) = s
            .subnet_id()
            .filter(|_| s.vpc_id() == Some(vpc) && f.matches(&tags_of(s.tags())))
        else {
            continue;
        };
        if s.map_public_ip_on_launch() != Some(true) {
            c.ec2
                .modify_subnet_attribute()
                .subnet_id(sub)
                .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
                .send()
                .await
                .map_err(|e| sdk(r, "ModifySubnetAttribute", sub, e))?;
        }
        if !associated.iter().any(|a| a == sub) {
            match c
                .ec2
                .associate_route_table()
                .route_table_id(&rt)
                .subnet_id(sub)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if crate::error::code(&e) == Some("Resource.AlreadyAssociated") => {}
                Err(e) => return Err(sdk(r, "AssociateRouteTable", sub, e)),
            }
        }
    }
    let subnets = subnets_for(p, f, Some(vpc)).await?;
    Ok(Net {
        vpc: Some(vpc.to_string()),
        subnets,
    })
}

async fn describe_route_table(
    p: &AwsProvider,
    id: &str,
) -> gantry_provider::Result<Option<aws_sdk_ec2::types::RouteTable>> {
    let c = p.clients().await?;
    let out = c
        .ec2
        .describe_route_tables()
        .route_table_ids(id)
        .send()
        .await
        .map_err(|e| sdk(p.region(), "DescribeRouteTables", id, e))?;
    Ok(out.route_tables().first().cloned())
}

/// Deletes the network resources carrying the filter's tags (and of its world): subnets, route
/// tables, internet gateways, VPCs (in that order, retrying dependency violations).
pub(crate) async fn delete(p: &AwsProvider, f: &TagFilter) -> gantry_provider::Result<()> {
    let c = p.clients().await?;
    let r = p.region().to_string();
    for s in describe_subnets(p, tag_filters(f)).await? {
        if !f.matches(&tags_of(s.tags())) {
            continue;
        }
        let id = s.subnet_id().unwrap_or_default();
        p.retry_dependency("DeleteSubnet", id, move || async move {
            c.ec2.delete_subnet().subnet_id(id).send().await
        })
        .await?;
    }
    let rts = c
        .ec2
        .describe_route_tables()
        .set_filters(Some(tag_filters(f)))
        .send()
        .await
        .map_err(|e| sdk(&r, "DescribeRouteTables", "route tables", e))?;
    for t in rts.route_tables() {
        if !f.matches(&tags_of(t.tags())) {
            continue;
        }
        let id = t.route_table_id().unwrap_or_default();
        for a in t.associations() {
            if a.main() == Some(true) {
                continue;
            }
            if let Some(aid) = a.route_table_association_id() {
                p.retry_dependency("DisassociateRouteTable", aid, move || async move {
                    c.ec2
                        .disassociate_route_table()
                        .association_id(aid)
                        .send()
                        .await
                })
                .await?;
            }
        }
        p.retry_dependency("DeleteRouteTable", id, move || async move {
            c.ec2.delete_route_table().route_table_id(id).send().await
        })
        .await?;
    }
    let igws = c
        .ec2
        .describe_internet_gateways()
        .set_filters(Some(tag_filters(f)))
        .send()
        .await
        .map_err(|e| sdk(&r, "DescribeInternetGateways", "internet gateways", e))?;
    for g in igws.internet_gateways() {
        if !f.matches(&tags_of(g.tags())) {
            continue;
        }
        let id = g.internet_gateway_id().unwrap_or_default();
        for a in g.attachments() {
            if let Some(v) = a.vpc_id() {
                p.retry_dependency("DetachInternetGateway", id, move || async move {
                    c.ec2
                        .detach_internet_gateway()
                        .internet_gateway_id(id)
                        .vpc_id(v)
                        .send()
                        .await
                })
                .await?;
            }
        }
        p.retry_dependency("DeleteInternetGateway", id, move || async move {
            c.ec2
                .delete_internet_gateway()
                .internet_gateway_id(id)
                .send()
                .await
        })
        .await?;
    }
    let vpcs = c
        .ec2
        .describe_vpcs()
        .set_filters(Some(tag_filters(f)))
        .send()
        .await
        .map_err(|e| sdk(&r, "DescribeVpcs", "vpcs", e))?;
    for v in vpcs.vpcs() {
        if !f.matches(&tags_of(v.tags())) {
            continue;
        }
        let id = v.vpc_id().unwrap_or_default();
        p.retry_dependency("DeleteVpc", id, move || async move {
            c.ec2.delete_vpc().vpc_id(id).send().await
        })
        .await?;
    }
    Ok(())
}
