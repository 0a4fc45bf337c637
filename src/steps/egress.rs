//! The way out of the private subnets, per `network.egress`: route tables, VPC endpoints (interface and gateway),
//! the S3 prefix list, and for NAT an internet gateway, elastic IPs and NAT gateways.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{Filter, ResourceType, VpcEndpointType};

use super::{Created, Ctx, Deleted, Owner, api_error, ec2_tags, error_code, owner_from_tag, retry_while_blocked};

/// AWS's prefix list for a service in the region (`com.amazonaws.us-east-1.s3`): looked up, never created.
pub async fn find_prefix_list(ctx: &Ctx, service: &str) -> Result<Created> {
    let name = format!("com.amazonaws.{}.{service}", ctx.clients.region);
    let out = ctx
        .clients
        .ec2
        .describe_prefix_lists()
        .filters(Filter::builder().name("prefix-list-name").values(&name).build())
        .send()
        .await
        .map_err(|e| api_error(format!("look up prefix list {name}"), e))?;
    match out.prefix_lists().first().and_then(|p| p.prefix_list_id()) {
        Some(id) => Ok(Created { id: id.to_string(), arn: None }),
        None => bail!(
            "region {} has no prefix list {name}\n  hint: use network.egress = \"nat\" where S3 has no gateway endpoint",
            ctx.clients.region
        ),
    }
}

/// A route table with a default route to an internet gateway (`igw`) or NAT gateway (`nat/...`), if any. Its
/// subnets are associated by nodes of their own (`rtb-assoc/...`).
pub async fn create_route_table(
    ctx: &Ctx,
    node: &str,
    name: &str,
    default_route: Option<&str>,
    token: &str,
) -> Result<Created> {
    let vpc_id = ctx.id_of("vpc")?;
    let out = ctx
        .clients
        .ec2
        .create_route_table()
        .vpc_id(&vpc_id)
        .client_token(token)
        .tag_specifications(ec2_tags(ctx, ResourceType::RouteTable, node, name))
        .send()
        .await
        .map_err(|e| api_error(format!("create route table {name} in {vpc_id}"), e))?;
    let id = out.route_table().and_then(|r| r.route_table_id()).unwrap_or_default().to_string();
    // The answer describes the new table: no read-back before routing (one round trip off the deploy's chain).
    converge_route_table(ctx, &id, out.route_table().cloned(), default_route).await?;
    Ok(Created { id, arn: None })
}

/// Points the table's default route where the spec says: used at creation and to repair drift.
/// `known`: the table as just described (by its create call), else it is read first.
pub async fn converge_route_table(
    ctx: &Ctx,
    id: &str,
    known: Option<aws_sdk_ec2::types::RouteTable>,
    default_route: Option<&str>,
) -> Result<()> {
    let ec2 = &ctx.clients.ec2;
    let table = match known {
        Some(table) => table,
        None => {
            let out = ec2
                .describe_route_tables()
                .route_table_ids(id)
                .send()
                .await
                .map_err(|e| api_error(format!("read route table {id}"), e))?;
            out.route_tables().first().cloned().unwrap_or_else(|| aws_sdk_ec2::types::RouteTable::builder().build())
        }
    };
    if let Some(target) = default_route {
        let target_id = ctx.id_of(target)?;
        let current = table.routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
        let points_there = current.is_some_and(|r| {
            r.gateway_id() == Some(target_id.as_str()) || r.nat_gateway_id() == Some(target_id.as_str())
        });
        if !points_there {
            let is_nat = super::kind_of(target) == "nat";
            if current.is_some() {
                let replace = ec2.replace_route().route_table_id(id).destination_cidr_block("0.0.0.0/0");
                let replace = if is_nat { replace.nat_gateway_id(&target_id) } else { replace.gateway_id(&target_id) };
                replace
                    .send()
                    .await
                    .map_err(|e| api_error(format!("point the default route of {id} at {target_id}"), e))?;
            } else {
                let create = ec2.create_route().route_table_id(id).destination_cidr_block("0.0.0.0/0");
                let create = if is_nat { create.nat_gateway_id(&target_id) } else { create.gateway_id(&target_id) };
                create
                    .send()
                    .await
                    .map_err(|e| api_error(format!("add a default route to {id} via {target_id}"), e))?;
            }
        }
    }
    Ok(())
}

/// Associates a subnet with a route table (both node ids). A subnet already associated with that table (a crash
/// came before the state write) is adopted; one associated with another table is an error that names it.
pub async fn associate(ctx: &Ctx, table: &str, subnet: &str) -> Result<Created> {
    let ec2 = &ctx.clients.ec2;
    let (table_id, subnet_id) = (ctx.id_of(table)?, ctx.id_of(subnet)?);
    let out = ec2.associate_route_table().route_table_id(&table_id).subnet_id(&subnet_id).send().await;
    match out.map_err(|e| api_error(format!("associate route table {table_id} with {subnet_id}"), e)) {
        Ok(out) => Ok(Created { id: out.association_id().unwrap_or_default().to_string(), arn: None }),
        Err(e) if error_code(&e) == Some("Resource.AlreadyAssociated") => {
            match association_of(ctx, &subnet_id).await? {
                Some((id, of)) if of == table_id => Ok(Created { id, arn: None }),
                other => Err(e.context(format!(
                    "{subnet_id} is associated with {}, not {table_id}\n  hint: disassociate it (aws ec2 disassociate-route-table) and re-run",
                    other.map_or("another route table".to_string(), |(_, t)| t)
                ))),
            }
        }
        Err(e) => Err(e),
    }
}

/// A subnet's explicit association: (association id, route table id).
async fn association_of(ctx: &Ctx, subnet_id: &str) -> Result<Option<(String, String)>> {
    let filter = aws_sdk_ec2::types::Filter::builder().name("association.subnet-id").values(subnet_id).build();
    let out = ctx
        .clients
        .ec2
        .describe_route_tables()
        .filters(filter)
        .send()
        .await
        .map_err(|e| api_error(format!("read the route table of {subnet_id}"), e))?;
    Ok(out.route_tables().iter().find_map(|t| {
        let a = t.associations().iter().find(|a| a.subnet_id() == Some(subnet_id))?;
        Some((a.route_table_association_id()?.to_string(), t.route_table_id()?.to_string()))
    }))
}

/// The owner of an association is the owner of its route table.
pub async fn association_owner(ctx: &Ctx, association_id: &str) -> Result<super::Owner> {
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("association.route-table-association-id")
        .values(association_id)
        .build();
    let out = ctx
        .clients
        .ec2
        .describe_route_tables()
        .filters(filter)
        .send()
        .await
        .map_err(|e| api_error(format!("read the route table of association {association_id}"), e))?;
    let table = out
        .route_tables()
        .iter()
        .find(|t| t.associations().iter().any(|a| a.route_table_association_id() == Some(association_id)));
    Ok(match table {
        Some(t) => super::owner_from_tag(ctx, super::vpc::stack_tag(t.tags())),
        None => super::Owner::Gone,
    })
}

pub async fn disassociate(ctx: &Ctx, association_id: &str) -> Result<Deleted> {
    let out = ctx.clients.ec2.disassociate_route_table().association_id(association_id).send().await;
    match out.map_err(|e| api_error(format!("disassociate route table ({association_id})"), e)) {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("InvalidAssociationID.NotFound") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// Disassociates the table from its subnets (any left by a crash or found by tag), then deletes it.
pub async fn delete_route_table(ctx: &Ctx, id: &str) -> Result<Deleted> {
    let ec2 = &ctx.clients.ec2;
    let table = match ec2.describe_route_tables().route_table_ids(id).send().await {
        Ok(out) => out.route_tables().first().cloned(),
        Err(e) => {
            let e = api_error(format!("read route table {id}"), e);
            if error_code(&e) == Some("InvalidRouteTableID.NotFound") {
                return Ok(Deleted::AlreadyGone);
            }
            return Err(e);
        }
    };
    let Some(table) = table else { return Ok(Deleted::AlreadyGone) };
    for association in table.associations().iter().filter(|a| !a.main().unwrap_or(false)) {
        if let Some(association_id) = association.route_table_association_id() {
            ec2.disassociate_route_table()
                .association_id(association_id)
                .send()
                .await
                .map_err(|e| api_error(format!("disassociate route table {id} ({association_id})"), e))?;
        }
    }
    match ec2.delete_route_table().route_table_id(id).send().await {
        Ok(_) => Ok(Deleted::Now),
        Err(e) => {
            let e = api_error(format!("delete route table {id}"), e);
            if error_code(&e) == Some("InvalidRouteTableID.NotFound") { Ok(Deleted::AlreadyGone) } else { Err(e) }
        }
    }
}

/// A VPC endpoint for `com.amazonaws.<region>.<service>`: an interface endpoint in every private subnet behind the
/// endpoint group, with private DNS (so the usual service names resolve to it); or a gateway endpoint on the private
/// route tables (S3).
pub async fn create_endpoint(
    ctx: &Ctx,
    node: &str,
    service: &str,
    gateway: bool,
    deps: &[String],
    token: &str,
) -> Result<Created> {
    let vpc_id = ctx.id_of("vpc")?;
    let service_name = format!("com.amazonaws.{}.{service}", ctx.clients.region);
    let name = format!("{}-{service}", ctx.stack);
    let mut request = ctx
        .clients
        .ec2
        .create_vpc_endpoint()
        .vpc_id(&vpc_id)
        .service_name(&service_name)
        .client_token(token)
        .tag_specifications(ec2_tags(ctx, ResourceType::VpcEndpoint, node, &name));
    if gateway {
        request = request.vpc_endpoint_type(VpcEndpointType::Gateway);
        for table in deps.iter().filter(|d| d.starts_with("rtb/")) {
            request = request.route_table_ids(ctx.id_of(table)?);
        }
    } else {
        request = request
            .vpc_endpoint_type(VpcEndpointType::Interface)
            .private_dns_enabled(true)
            .security_group_ids(ctx.id_of("vpce-sg")?);
        for subnet in deps.iter().filter(|d| d.starts_with("subnet/")) {
            request = request.subnet_ids(ctx.id_of(subnet)?);
        }
    }
    let out = request.send().await.map_err(|e| api_error(format!("create VPC endpoint {service_name}"), e))?;
    let id = out.vpc_endpoint().and_then(|v| v.vpc_endpoint_id()).unwrap_or_default().to_string();
    Ok(Created { id, arn: None })
}

/// Points an endpoint at the recorded subnets (interface) or route tables (gateway) again, after one of them was
/// recreated.
pub async fn converge_endpoint(ctx: &Ctx, id: &str, gateway: bool, deps: &[String]) -> Result<()> {
    let ec2 = &ctx.clients.ec2;
    let out = ec2
        .describe_vpc_endpoints()
        .vpc_endpoint_ids(id)
        .send()
        .await
        .map_err(|e| api_error(format!("read VPC endpoint {id}"), e))?;
    let Some(endpoint) = out.vpc_endpoints().first() else { return Ok(()) };
    let prefix = if gateway { "rtb/" } else { "subnet/" };
    let want: Vec<String> =
        deps.iter().filter(|d| d.starts_with(prefix)).map(|d| ctx.id_of(d)).collect::<Result<_>>()?;
    let have: Vec<String> = if gateway { endpoint.route_table_ids().to_vec() } else { endpoint.subnet_ids().to_vec() };
    let add: Vec<String> = want.iter().filter(|w| !have.contains(w)).cloned().collect();
    let remove: Vec<String> = have.iter().filter(|h| !want.contains(h)).cloned().collect();
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let request = ec2.modify_vpc_endpoint().vpc_endpoint_id(id);
    let request = if gateway {
        request.set_add_route_table_ids(Some(add)).set_remove_route_table_ids(Some(remove))
    } else {
        request.set_add_subnet_ids(Some(add)).set_remove_subnet_ids(Some(remove))
    };
    request.send().await.map_err(|e| api_error(format!("update VPC endpoint {id}"), e))?;
    Ok(())
}

pub async fn delete_endpoint(ctx: &Ctx, id: &str) -> Result<Deleted> {
    let out = ctx
        .clients
        .ec2
        .delete_vpc_endpoints()
        .vpc_endpoint_ids(id)
        .send()
        .await
        .map_err(|e| api_error(format!("delete VPC endpoint {id}"), e))?;
    match out.unsuccessful().first().and_then(|u| u.error()) {
        None => Ok(Deleted::Now),
        Some(err) if err.code().is_some_and(|c| c.contains("NotFound")) => Ok(Deleted::AlreadyGone),
        Some(err) => {
            bail!("delete VPC endpoint {id}: {} ({})", err.message().unwrap_or("failed"), err.code().unwrap_or("?"))
        }
    }
}

pub async fn create_internet_gateway(ctx: &Ctx, node: &str, name: &str) -> Result<Created> {
    let vpc_id = ctx.id_of("vpc")?;
    let ec2 = &ctx.clients.ec2;
    let out = ec2
        .create_internet_gateway()
        .tag_specifications(ec2_tags(ctx, ResourceType::InternetGateway, node, name))
        .send()
        .await
        .map_err(|e| api_error(format!("create internet gateway {name}"), e))?;
    let id = out.internet_gateway().and_then(|g| g.internet_gateway_id()).unwrap_or_default().to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&id)
        .vpc_id(&vpc_id)
        .send()
        .await
        .map_err(|e| api_error(format!("attach internet gateway {id} to {vpc_id}"), e))?;
    Ok(Created { id, arn: None })
}

/// Detaches (AWS refuses while NAT gateways' addresses are still mapped: waited out) and deletes.
pub async fn delete_internet_gateway(ctx: &Ctx, id: &str) -> Result<Deleted> {
    let ec2 = &ctx.clients.ec2;
    let out = match ec2.describe_internet_gateways().internet_gateway_ids(id).send().await {
        Ok(out) => out,
        Err(e) => {
            let e = api_error(format!("read internet gateway {id}"), e);
            return if error_code(&e) == Some("InvalidInternetGatewayID.NotFound") {
                Ok(Deleted::AlreadyGone)
            } else {
                Err(e)
            };
        }
    };
    let Some(gateway) = out.internet_gateways().first() else { return Ok(Deleted::AlreadyGone) };
    for vpc in gateway.attachments().iter().filter_map(|a| a.vpc_id()) {
        let detach = || async {
            ec2.detach_internet_gateway()
                .internet_gateway_id(id)
                .vpc_id(vpc)
                .send()
                .await
                .map_err(|e| api_error(format!("detach internet gateway {id} from {vpc}"), e))
        };
        let blocked = || async { format!("{vpc} still has public addresses mapped (NAT gateways being deleted?)") };
        retry_while_blocked(ctx, &["DependencyViolation"], detach, blocked).await?;
    }
    ec2.delete_internet_gateway()
        .internet_gateway_id(id)
        .send()
        .await
        .map_err(|e| api_error(format!("delete internet gateway {id}"), e))?;
    Ok(Deleted::Now)
}

pub async fn allocate_address(ctx: &Ctx, node: &str, name: &str) -> Result<Created> {
    let out = ctx
        .clients
        .ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .tag_specifications(ec2_tags(ctx, ResourceType::ElasticIp, node, name))
        .send()
        .await
        .map_err(|e| api_error(format!("allocate an elastic IP for {name}"), e))?;
    Ok(Created { id: out.allocation_id().unwrap_or_default().to_string(), arn: None })
}

/// Releases the address; while a NAT gateway being deleted still holds it, AWS says InvalidIPAddress.InUse.
pub async fn release_address(ctx: &Ctx, allocation_id: &str) -> Result<Deleted> {
    let release = || async {
        ctx.clients
            .ec2
            .release_address()
            .allocation_id(allocation_id)
            .send()
            .await
            .map_err(|e| api_error(format!("release elastic IP {allocation_id}"), e))
    };
    let blocked = || async { format!("{allocation_id} is still associated (its NAT gateway is being deleted?)") };
    match retry_while_blocked(ctx, &["InvalidIPAddress.InUse", "AuthFailure"], release, blocked).await {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("InvalidAllocationID.NotFound") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// A NAT gateway in a public subnet with its elastic IP; waits until it is available (minutes on AWS), since a
/// route to a NAT gateway that then fails would leave the tasks without a way out.
pub async fn create_nat_gateway(
    ctx: &Ctx,
    node: &str,
    name: &str,
    subnet: &str,
    eip: &str,
    token: &str,
) -> Result<Created> {
    let subnet_id = ctx.id_of(subnet)?;
    let allocation_id = ctx.id_of(eip)?;
    let out = ctx
        .clients
        .ec2
        .create_nat_gateway()
        .subnet_id(&subnet_id)
        .allocation_id(&allocation_id)
        .client_token(token)
        .tag_specifications(ec2_tags(ctx, ResourceType::Natgateway, node, name))
        .send()
        .await
        .map_err(|e| api_error(format!("create NAT gateway {name} in {subnet_id}"), e))?;
    let id = out.nat_gateway().and_then(|n| n.nat_gateway_id()).unwrap_or_default().to_string();
    wait_nat(ctx, &id, "available", ctx.operation_timeout).await?;
    Ok(Created { id, arn: None })
}

/// The state of a NAT gateway (`pending`, `available`, `deleting`, `deleted`, `failed`), with its failure message.
async fn nat_state(ctx: &Ctx, id: &str) -> Result<Option<(String, Option<String>)>> {
    match ctx.clients.ec2.describe_nat_gateways().nat_gateway_ids(id).send().await {
        Ok(out) => Ok(out.nat_gateways().first().map(|n| {
            (n.state().map(|s| s.as_str().to_string()).unwrap_or_default(), n.failure_message().map(str::to_string))
        })),
        Err(e) => {
            let e = api_error(format!("read NAT gateway {id}"), e);
            if error_code(&e) == Some("NatGatewayNotFound") { Ok(None) } else { Err(e) }
        }
    }
}

async fn wait_nat(ctx: &Ctx, id: &str, want: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let state = nat_state(ctx, id).await?;
        match state.as_ref().map(|(s, m)| (s.as_str(), m)) {
            Some((s, _)) if s == want => return Ok(()),
            None if want == "deleted" => return Ok(()),
            Some(("failed", message)) => {
                bail!("NAT gateway {id} failed: {}", message.as_deref().unwrap_or("no reason given"))
            }
            _ if started.elapsed() > timeout => {
                bail!("NAT gateway {id} is not {want} after {}s\n  hint: raise --operation-timeout", timeout.as_secs())
            }
            _ => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}

pub async fn nat_owner(ctx: &Ctx, id: &str) -> Result<Owner> {
    match nat_state(ctx, id).await? {
        None => Ok(Owner::Gone),
        Some((state, _)) if state == "deleted" || state == "failed" => Ok(Owner::Gone),
        Some(_) => tag_owner(ctx, id).await,
    }
}

/// Deletes and waits until the gateway is gone: its address and subnet stay in use until then.
pub async fn delete_nat_gateway(ctx: &Ctx, id: &str) -> Result<Deleted> {
    let out = ctx.clients.ec2.delete_nat_gateway().nat_gateway_id(id).send().await;
    match out.map_err(|e| api_error(format!("delete NAT gateway {id}"), e)) {
        Ok(_) => {}
        Err(e) if error_code(&e) == Some("NatGatewayNotFound") => return Ok(Deleted::AlreadyGone),
        Err(e) => return Err(e),
    }
    wait_nat(ctx, id, "deleted", ctx.dependency_timeout).await?;
    Ok(Deleted::Now)
}

/// Owner of an EC2 resource by its tags (one DescribeTags call works for every resource type); a resource with no
/// tags at all counts as gone, so nothing untagged is ever deleted.
pub async fn tag_owner(ctx: &Ctx, id: &str) -> Result<Owner> {
    let out = ctx
        .clients
        .ec2
        .describe_tags()
        .filters(Filter::builder().name("resource-id").values(id).build())
        .send()
        .await
        .map_err(|e| api_error(format!("read the tags of {id}"), e))?;
    if out.tags().is_empty() {
        return Ok(Owner::Gone);
    }
    let stack = out.tags().iter().find(|t| t.key() == Some(super::TAG_STACK)).and_then(|t| t.value());
    Ok(owner_from_tag(ctx, stack))
}
