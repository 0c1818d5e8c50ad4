//! The network a cluster's instances launch into: the default VPC, a given VPC or subnet, or
//! (`vpc: create`) a VPC, internet gateway, route table and one subnet per zone, all tagged
//! with the cluster's tags and found by them.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, Subnet};
use gantry_core::Tags;
use gantry_core::tags::TagFilter;
use gantry_provider::{ClusterRequest, ErrorKind};

use crate::{AwsProvider, filter, sdk, tag_filters, tag_spec};

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
        (Some("create"), _) => {
            let subs = describe_subnets(p, tag_filters(f)).await?;
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
    let f = TagFilter::cluster(&req.project, &req.cluster);
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

async fn create(p: &AwsProvider, f: &TagFilter, t: &Tags) -> gantry_provider::Result<Net> {
    let c = p.clients().await?;
    let r = p.region().to_string();
    let vpcs = c
        .ec2
        .describe_vpcs()
        .set_filters(Some(tag_filters(f)))
        .send()
        .await
        .map_err(|e| sdk(&r, "DescribeVpcs", "cluster vpc", e))?;
    let vpc = match vpcs.vpcs().first().and_then(|v| v.vpc_id()) {
        Some(v) => v.to_string(),
        None => c
            .ec2
            .create_vpc()
            .cidr_block(CREATED_CIDR)
            .tag_specifications(tag_spec(ResourceType::Vpc, t))
            .send()
            .await
            .map_err(|e| sdk(&r, "CreateVpc", CREATED_CIDR, e))?
            .vpc()
            .and_then(|v| v.vpc_id())
            .unwrap_or_default()
            .to_string(),
    };
    let igws = c
        .ec2
        .describe_internet_gateways()
        .set_filters(Some(tag_filters(f)))
        .send()
        .await
        .map_err(|e| sdk(&r, "DescribeInternetGateways", &vpc, e))?;
    let (igw, attached) = match igws.internet_gateways().first() {
        Some(g) => (
            g.internet_gateway_id().unwrap_or_default().to_string(),
            g.attachments()
                .iter()
                .any(|a| a.vpc_id() == Some(vpc.as_str())),
        ),
        None => (
            c.ec2
                .create_internet_gateway()
                .tag_specifications(tag_spec(ResourceType::InternetGateway, t))
                .send()
                .await
                .map_err(|e| sdk(&r, "CreateInternetGateway", &vpc, e))?
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .unwrap_or_default()
                .to_string(),
            false,
        ),
    };
    if !attached {
        match c
            .ec2
            .attach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&vpc)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if crate::error::code(&e) == Some("Resource.AlreadyAssociated") => {}
            Err(e) => return Err(sdk(&r, "AttachInternetGateway", &igw, e)),
        }
    }
    let rts = c
        .ec2
        .describe_route_tables()
        .set_filters(Some(tag_filters(f)))
        .send()
        .await
        .map_err(|e| sdk(&r, "DescribeRouteTables", &vpc, e))?;
    let rt = match rts.route_tables().first().and_then(|t| t.route_table_id()) {
        Some(id) => id.to_string(),
        None => {
            let id = c
                .ec2
                .create_route_table()
                .vpc_id(&vpc)
                .tag_specifications(tag_spec(ResourceType::RouteTable, t))
                .send()
                .await
                .map_err(|e| sdk(&r, "CreateRouteTable", &vpc, e))?
                .route_table()
                .and_then(|t| t.route_table_id())
                .unwrap_or_default()
                .to_string();
            c.ec2
                .create_route()
                .route_table_id(&id)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(&igw)
                .send()
                .await
                .map_err(|e| sdk(&r, "CreateRoute", &id, e))?;
            id
        }
    };
    let existing = describe_subnets(p, tag_filters(f)).await?;
    let zones: Vec<Option<String>> = if p.cfg.options.zones.is_empty() {
        vec![None]
    } else {
        p.cfg.options.zones.iter().cloned().map(Some).collect()
    };
    for (k, z) in zones.iter().enumerate() {
        let have = existing
            .iter()
            .any(|s| z.is_none() || s.availability_zone() == z.as_deref());
        if have {
            continue;
        }
        let cidr = format!("10.77.{k}.0/24");
        let sub = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(&cidr)
            .set_availability_zone(z.clone())
            .tag_specifications(tag_spec(ResourceType::Subnet, t))
            .send()
            .await
            .map_err(|e| sdk(&r, "CreateSubnet", &cidr, e))?
            .subnet()
            .and_then(|s| s.subnet_id())
            .unwrap_or_default()
            .to_string();
        c.ec2
            .modify_subnet_attribute()
            .subnet_id(&sub)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| sdk(&r, "ModifySubnetAttribute", &sub, e))?;
        c.ec2
            .associate_route_table()
            .route_table_id(&rt)
            .subnet_id(&sub)
            .send()
            .await
            .map_err(|e| sdk(&r, "AssociateRouteTable", &sub, e))?;
    }
    let subnets = subnets_for(p, f, Some(&vpc)).await?;
    Ok(Net {
        vpc: Some(vpc),
        subnets,
    })
}

/// Deletes the network resources carrying the filter's tags: subnets, route tables, internet
/// gateways, VPCs (in that order, retrying dependency violations).
pub(crate) async fn delete(p: &AwsProvider, f: &TagFilter) -> gantry_provider::Result<()> {
    let c = p.clients().await?;
    let r = p.region().to_string();
    for s in describe_subnets(p, tag_filters(f)).await? {
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
        let id = v.vpc_id().unwrap_or_default();
        p.retry_dependency("DeleteVpc", id, move || async move {
            c.ec2.delete_vpc().vpc_id(id).send().await
        })
        .await?;
    }
    Ok(())
}
