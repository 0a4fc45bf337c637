//! `secep up` end to end: the live topology, checked with independent describe calls (never secep's state file).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::types::{AssignPublicIp, Compatibility, LaunchType, NetworkMode};
use aws_sdk_servicediscovery::types::{NamespaceType, RecordType, RoutingPolicy, ServiceFilter, ServiceFilterName};

use crate::harness::{Aws, Project, Proxy, aws, ec2_filter};

/// What the live account holds for one stack, read back with describes.
struct Live {
    vpc_id: String,
    subnet_ids: BTreeSet<String>,
    /// group id → service name (from the group's own `secep:node` tag).
    groups: BTreeMap<String, String>,
    /// The shared group every task carries to reach the VPC endpoints (egress = "endpoints" only).
    clients_group: Option<String>,
    /// service name → (Cloud Map service id, ARN).
    sd_services: BTreeMap<String, (String, String)>,
}

/// The ECS cluster named `name`, with its tags.
async fn live_cluster(aws: &Aws, name: &str) -> aws_sdk_ecs::types::Cluster {
    let out = aws
        .ecs
        .describe_clusters()
        .clusters(name)
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .unwrap();
    out.clusters().first().cloned().unwrap_or_else(|| panic!("no cluster {name}"))
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

async fn check_network(aws: &Aws, p: &Project, cidr: &str, azs: usize) -> Live {
    let vpcs = aws.ec2.describe_vpcs().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "exactly one VPC is tagged for the stack");
    let vpc = &vpcs.vpcs()[0];
    let vpc_id = vpc.vpc_id().unwrap().to_string();
    assert_eq!(vpc.cidr_block(), Some(cidr));
    assert_eq!(tag(vpc.tags(), "secep:node"), Some("vpc"));
    for attr in [
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
    ] {
        let out = aws.ec2.describe_vpc_attribute().vpc_id(&vpc_id).attribute(attr.clone()).send().await.unwrap();
        let on = out.enable_dns_support().or(out.enable_dns_hostnames()).and_then(|a| a.value());
        assert_eq!(on, Some(true), "{attr:?} must be enabled");
    }

    let subnets = aws.ec2.describe_subnets().filters(ec2_filter("vpc-id", &vpc_id)).send().await.unwrap();
    assert_eq!(subnets.subnets().len(), azs, "one private subnet per AZ");
    let zones: BTreeSet<_> = subnets.subnets().iter().map(|s| s.availability_zone().unwrap()).collect();
    assert_eq!(zones.len(), azs, "subnets are in distinct AZs");
    for s in subnets.subnets() {
        assert_eq!(s.map_public_ip_on_launch(), Some(false), "no public IPs on launch");
        assert_eq!(tag(s.tags(), "secep:stack"), Some(p.stack.as_str()));
    }

    let groups = aws.ec2.describe_security_groups().filters(ec2_filter("vpc-id", &vpc_id)).send().await.unwrap();
    let clients_group = groups
        .security_groups()
        .iter()
        .filter(|g| tag(g.tags(), "secep:stack") == Some(p.stack.as_str()))
        .find(|g| tag(g.tags(), "secep:node") == Some("vpce-clients-sg"))
        .map(|g| g.group_id().unwrap().to_string());
    let groups: BTreeMap<String, String> = groups
        .security_groups()
        .iter()
        .filter(|g| tag(g.tags(), "secep:stack") == Some(p.stack.as_str()))
        .filter(|g| tag(g.tags(), "secep:node").is_some_and(|n| n.starts_with("sg/")))
        .map(|g| {
            let node = tag(g.tags(), "secep:node").unwrap();
            (g.group_id().unwrap().to_string(), node.strip_prefix("sg/").unwrap().to_string())
        })
        .collect();

    let cluster = live_cluster(aws, &p.stack).await;
    assert_eq!(cluster.status(), Some("ACTIVE"));
    assert!(cluster.tags().iter().any(|t| t.key() == Some("secep:stack") && t.value() == Some(p.stack.as_str())));

    let namespaces = aws.sd.list_namespaces().send().await.unwrap();
    let ns: Vec<_> = namespaces.namespaces().iter().filter(|n| n.name() == Some(p.namespace.as_str())).collect();
    assert_eq!(ns.len(), 1, "exactly one namespace named {}", p.namespace);
    assert_eq!(ns[0].r#type(), Some(&NamespaceType::DnsPrivate));
    let ns_tags = aws.sd.list_tags_for_resource().resource_arn(ns[0].arn().unwrap()).send().await.unwrap();
    assert!(ns_tags.tags().iter().any(|t| t.key() == "secep:stack" && t.value() == p.stack));
    let ns_id = ns[0].id().unwrap();
    let sd = aws
        .sd
        .list_services()
        .filters(ServiceFilter::builder().name(ServiceFilterName::NamespaceId).values(ns_id).build().unwrap())
        .send()
        .await
        .unwrap();
    let mut sd_services = BTreeMap::new();
    for s in sd.services() {
        // Other tests share the emulator (whose ListServices ignores filters): their services may vanish meanwhile.
        let Ok(full) = aws.sd.get_service().id(s.id().unwrap()).send().await else { continue };
        let svc = full.service().unwrap();
        // moto 5.2.5 ignores ListServices filters and returns every namespace's services.
        if svc.namespace_id() != Some(ns_id) {
            continue;
        }
        let dns = svc.dns_config().unwrap();
        assert_eq!(dns.routing_policy(), Some(&RoutingPolicy::Multivalue));
        assert_eq!(dns.dns_records().len(), 1);
        assert_eq!(dns.dns_records()[0].r#type(), &RecordType::A);
        assert!(svc.health_check_custom_config().is_some(), "a custom health check lets ECS report task health");
        let tags = aws.sd.list_tags_for_resource().resource_arn(svc.arn().unwrap()).send().await.unwrap();
        assert!(
            tags.tags().iter().any(|t| t.key() == "secep:stack" && t.value() == p.stack),
            "{} in {ns_id}: {:?}",
            svc.name().unwrap(),
            tags.tags()
        );
        sd_services
            .insert(svc.name().unwrap().to_string(), (svc.id().unwrap().to_string(), svc.arn().unwrap().to_string()));
    }
    Live {
        vpc_id,
        subnet_ids: subnets.subnets().iter().map(|s| s.subnet_id().unwrap().to_string()).collect(),
        groups,
        clients_group,
        sd_services,
    }
}

/// Each group's ingress must be exactly the declared callers on the callee's port: nothing from CIDRs, no extra rule.
async fn check_ingress(aws: &Aws, live: &Live, expected: &BTreeMap<&str, (i32, Vec<&str>)>) {
    let by_service: BTreeMap<&str, &str> = live.groups.iter().map(|(id, svc)| (svc.as_str(), id.as_str())).collect();
    assert_eq!(
        by_service.keys().copied().collect::<BTreeSet<_>>(),
        expected.keys().copied().collect(),
        "one group per service"
    );
    for (service, (port, callers)) in expected {
        let group_id = by_service[service];
        let out = aws.ec2.describe_security_groups().group_ids(group_id).send().await.unwrap();
        let group = &out.security_groups()[0];
        let mut actual = BTreeSet::new();
        for perm in group.ip_permissions() {
            assert!(
                perm.ip_ranges().is_empty() && perm.ipv6_ranges().is_empty(),
                "{service}: no CIDR ingress, ever: {perm:?}"
            );
            assert!(perm.prefix_list_ids().is_empty(), "{service}: no prefix-list ingress: {perm:?}");
            for pair in perm.user_id_group_pairs() {
                let source = live.groups[pair.group_id().unwrap()].clone();
                actual.insert((perm.ip_protocol().unwrap().to_string(), perm.from_port(), perm.to_port(), source));
            }
        }
        let wanted: BTreeSet<_> =
            callers.iter().map(|c| ("tcp".to_string(), Some(*port), Some(*port), c.to_string())).collect();
        assert_eq!(actual, wanted, "ingress of {service}");
    }
}

async fn check_services(
    aws: &Aws,
    p: &Project,
    live: &Live,
    expected: &BTreeMap<&str, (i32, Vec<&str>)>,
    peers: &BTreeMap<&str, Vec<(&str, String)>>,
) {
    let names: Vec<&str> = expected.keys().copied().collect();
    let out = aws
        .ecs
        .describe_services()
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .cluster(&p.stack)
        .set_services(Some(names.iter().map(|s| s.to_string()).collect()))
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
        .unwrap();
    assert!(out.failures().is_empty(), "{:?}", out.failures());
    assert_eq!(out.services().len(), names.len());
    for svc in out.services() {
        let name = svc.service_name().unwrap();
        assert_eq!(svc.status(), Some("ACTIVE"));
        assert_eq!(svc.launch_type(), Some(&LaunchType::Fargate));
        let vpc_conf = svc.network_configuration().unwrap().awsvpc_configuration().unwrap();
        assert_eq!(vpc_conf.assign_public_ip(), Some(&AssignPublicIp::Disabled), "{name}: no public IP");
        assert_eq!(
            vpc_conf.subnets().iter().cloned().collect::<BTreeSet<_>>(),
            live.subnet_ids,
            "{name}: the private subnets"
        );
        let own_group = live.groups.iter().find(|(_, s)| s.as_str() == name).unwrap().0;
        let wanted: BTreeSet<&String> = std::iter::once(own_group).chain(&live.clients_group).collect();
        assert_eq!(
            vpc_conf.security_groups().iter().collect::<BTreeSet<_>>(),
            wanted,
            "{name}: its own group (and the endpoint clients group) only"
        );
        assert_eq!(svc.service_registries().len(), 1);
        assert_eq!(
            svc.service_registries()[0].registry_arn(),
            Some(live.sd_services[name].1.as_str()),
            "{name}: its Cloud Map service"
        );
        assert!(svc.tags().iter().any(|t| t.key() == Some("secep:node") && t.value() == Some(&format!("svc/{name}"))));

        let td =
            aws.ecs.describe_task_definition().task_definition(svc.task_definition().unwrap()).send().await.unwrap();
        let td = td.task_definition().unwrap();
        assert_eq!(td.network_mode(), Some(&NetworkMode::Awsvpc));
        assert!(td.requires_compatibilities().contains(&Compatibility::Fargate));
        let container = &td.container_definitions()[0];
        assert_eq!(container.port_mappings()[0].container_port(), Some(expected[name].0));
        let env: BTreeMap<&str, &str> =
            container.environment().iter().map(|kv| (kv.name().unwrap(), kv.value().unwrap())).collect();
        for (var, value) in &peers[name] {
            assert_eq!(env.get(var), Some(&value.as_str()), "{name}: peer address {var}");
        }
    }
}

#[tokio::test]
async fn seed_config_provisions_a_live_secure_topology_and_reapplies_as_a_no_op() {
    let p = Project::from_shipped("secure-endpoints.toml", "seed");
    let wire = Proxy::start(&[]);
    let first = p.secep_at(&wire.url, &["up"]).success();
    assert!(first.stderr.contains("Deployed 35 created"), "{}", first.stderr);
    let ns = &p.namespace;
    assert!(first.stdout.contains(&format!("service1.{ns}:8080")), "endpoints are printed: {}", first.stdout);

    let aws = aws().await;
    let live = check_network(&aws, &p, "10.0.0.0/16", 2).await;
    assert!(live.vpc_id.starts_with("vpc-"));
    // moto does not record a private namespace's VPC association (its hosted zone lists no VPCs), so the binding is
    // checked on the wire: the namespace was created in the stack's VPC, the one found by describe above.
    let created: Vec<_> = wire.calls().into_iter().filter(|c| c["operation"] == "CreatePrivateDnsNamespace").collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["params"]["Vpc"], live.vpc_id.as_str());
    assert_eq!(created[0]["params"]["Name"], ns.as_str());
    let expected = BTreeMap::from([("service1", (8080, vec!["service2"])), ("service2", (8080, vec!["service1"]))]);
    check_ingress(&aws, &live, &expected).await;
    assert_eq!(live.sd_services.keys().map(String::as_str).collect::<Vec<_>>(), ["service1", "service2"]);
    let peers = BTreeMap::from([
        (
            "service1",
            vec![
                ("SERVICE2_URL", format!("service2.{ns}:8080")),
                ("SERVICE_URL", format!("service2.{ns}:8080")),
                ("LOG_LEVEL", "info".to_string()),
            ],
        ),
        (
            "service2",
            vec![("SERVICE1_URL", format!("service1.{ns}:8080")), ("SERVICE_URL", format!("service1.{ns}:8080"))],
        ),
    ]);
    check_services(&aws, &p, &live, &expected, &peers).await;

    // A second `up` changes nothing and creates no twin; the proxy's call log proves no mutating call was made.
    let proxy = Proxy::start(&[]);
    let second = p.secep_at(&proxy.url, &["up", "--json"]).success();
    let summary = second.json();
    assert_eq!(summary["summary"]["created"], 0);
    assert_eq!(summary["summary"]["unchanged"], 35);
    let mutating: Vec<_> = proxy.calls().into_iter().filter(|c| c["mutating"] == true).collect();
    assert!(mutating.is_empty(), "a no-op up made mutating calls: {mutating:?}");
    assert!(second.stderr.contains("Up to date"), "{}", second.stderr);
    let again = check_network(&aws, &p, "10.0.0.0/16", 2).await;
    assert_eq!(again.vpc_id, live.vpc_id);
    assert_eq!(again.groups, live.groups);
    assert_eq!(again.sd_services, live.sd_services);
}

#[tokio::test]
async fn larger_mesh_gets_exactly_the_declared_one_way_edges() {
    let p = Project::from_shipped("shop.toml", "shop");
    p.secep(&["up", "--parallelism", "4"]).success();
    let aws = aws().await;
    let live = check_network(&aws, &p, "10.20.0.0/16", 3).await;
    // Callers per callee, from config/shop.toml: direction matters, and `web` accepts nobody.
    let expected = BTreeMap::from([
        ("web", (80, vec![])),
        ("api", (8000, vec!["web"])),
        ("orders", (8001, vec!["api", "payments"])),
        ("catalog", (8002, vec!["api"])),
        ("users", (8003, vec!["api", "orders"])),
        ("payments", (8004, vec!["orders"])),
    ]);
    check_ingress(&aws, &live, &expected).await;
    let ns = &p.namespace;
    let peers = BTreeMap::from([
        ("web", vec![("API_URL", format!("api.{ns}:8000")), ("SERVICE_URL", format!("api.{ns}:8000"))]),
        (
            "api",
            vec![
                ("ORDERS_URL", format!("orders.{ns}:8001")),
                ("CATALOG_URL", format!("catalog.{ns}:8002")),
                ("USERS_URL", format!("users.{ns}:8003")),
            ],
        ),
        ("orders", vec![("PAYMENTS_URL", format!("payments.{ns}:8004")), ("USERS_URL", format!("users.{ns}:8003"))]),
        ("catalog", vec![]),
        ("users", vec![]),
        ("payments", vec![("ORDERS_URL", format!("orders.{ns}:8001")), ("SERVICE_URL", format!("orders.{ns}:8001"))]),
    ]);
    check_services(&aws, &p, &live, &expected, &peers).await;
    let sd = aws.sd.get_service().id(&live.sd_services["catalog"].0).send().await.unwrap();
    assert_eq!(sd.service().unwrap().dns_config().unwrap().dns_records()[0].ttl(), 60, "per-service TTL");
    let sd = aws.sd.get_service().id(&live.sd_services["web"].0).send().await.unwrap();
    assert_eq!(sd.service().unwrap().dns_config().unwrap().dns_records()[0].ttl(), 15, "namespace TTL");
}

async fn dns_attributes(aws: &Aws, vpc_id: &str) -> (Option<bool>, Option<bool>) {
    use aws_sdk_ec2::types::VpcAttributeName::{EnableDnsHostnames, EnableDnsSupport};
    let read = |attr| aws.ec2.describe_vpc_attribute().vpc_id(vpc_id).attribute(attr).send();
    let (support, hostnames) = (read(EnableDnsSupport).await.unwrap(), read(EnableDnsHostnames).await.unwrap());
    (support.enable_dns_support().and_then(|a| a.value()), hostnames.enable_dns_hostnames().and_then(|a| a.value()))
}

#[tokio::test]
async fn dns_attributes_a_failed_up_left_off_are_set_by_the_next_up() {
    // Regression: the attributes were set inside the VPC's own step, so a VPC whose attribute call failed (or whose
    // run was killed in between) was found by its tag and adopted by the next run without them. Cloud Map names
    // and the endpoints' private DNS then never resolved. They are a node of their own now (`vpc-dns`).
    let p = Project::from_shipped("secure-endpoints.toml", "vpcdns");
    // Both attribute calls fail: they run at once, so failing only the first to arrive could hit DNS support,
    // which a new VPC has on already, and leave nothing off to check.
    let deny = "UnauthorizedOperation:403";
    let failing = Proxy::start(&[
        "--fail-nth",
        &format!("ModifyVpcAttribute:1:{deny}"),
        "--fail-nth",
        &format!("ModifyVpcAttribute:2:{deny}"),
    ]);
    let first = p.secep_at(&failing.url, &["up"]);
    assert_eq!(first.code, 1, "the attribute call fails: {}", first.stderr);
    assert!(first.stderr.contains("UnauthorizedOperation"), "{}", first.stderr);
    let aws = aws().await;
    let vpcs = aws.ec2.describe_vpcs().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    let vpc_id = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
    assert_ne!(dns_attributes(&aws, &vpc_id).await, (Some(true), Some(true)), "the failure left DNS hostnames off");

    p.secep(&["up"]).success();
    assert_eq!(dns_attributes(&aws, &vpc_id).await, (Some(true), Some(true)));
    check_network(&aws, &p, "10.0.0.0/16", 2).await;
    p.secep(&["down", "--yes"]).success();
}

#[tokio::test]
async fn a_subnet_disassociated_behind_seceps_back_is_associated_again() {
    let p = Project::from_shipped("secure-endpoints.toml", "reassoc");
    p.secep(&["up"]).success();
    let aws = aws().await;
    let tables = aws.ec2.describe_route_tables().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    let private: Vec<_> = tables.route_tables().iter().filter(|t| !t.associations().is_empty()).collect();
    assert_eq!(private.len(), 2, "one private table per AZ, each associated");
    let association = &private[0].associations()[0];
    let (subnet, table) = (association.subnet_id().unwrap(), private[0].route_table_id().unwrap());
    aws.ec2
        .disassociate_route_table()
        .association_id(association.route_table_association_id().unwrap())
        .send()
        .await
        .unwrap();

    let status = p.secep(&["status"]);
    assert_eq!(status.code, 2, "a missing association is a difference: {}", status.stdout);
    assert!(
        status.stdout.lines().any(|l| l.starts_with("rtb-assoc/") && l.contains("MISSING LIVE")),
        "{}",
        status.stdout
    );
    p.secep(&["up"]).success();
    let now =
        aws.ec2.describe_route_tables().filters(ec2_filter("association.subnet-id", subnet)).send().await.unwrap();
    assert_eq!(now.route_tables().iter().filter_map(|t| t.route_table_id()).collect::<Vec<_>>(), [table]);
    p.secep(&["status"]).success();
    p.secep(&["down", "--yes"]).success();
}

#[tokio::test]
async fn a_cluster_of_the_stacks_name_that_is_not_the_stacks_is_never_taken_over() {
    // CreateCluster on a taken name answers with the existing cluster, so `up` must look first. The live read now
    // does the looking (the extra DescribeClusters lay on the path to every ECS service): it must still see this.
    let p = Project::from_shipped("secure-endpoints.toml", "foreigncluster");
    let aws = aws().await;
    let theirs = aws_sdk_ecs::types::Tag::builder().key("secep:stack").value("somebody-else").build();
    aws.ecs.create_cluster().cluster_name(&p.stack).tags(theirs).send().await.unwrap();

    let run = p.secep(&["up"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("already exists and is not this stack's"), "{}", run.stderr);
    assert!(run.stderr.contains("secep:stack=somebody-else"), "{}", run.stderr);
    let services = aws.ecs.list_services().cluster(&p.stack).send().await.unwrap();
    assert!(services.service_arns().is_empty(), "no service was put into somebody else's cluster");
    let cluster = live_cluster(&aws, &p.stack).await;
    let tags: Vec<_> = cluster.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, [(Some("secep:stack"), Some("somebody-else"))], "their cluster is untouched");

    p.secep(&["down", "--yes"]).success();
    assert_eq!(live_cluster(&aws, &p.stack).await.status(), Some("ACTIVE"), "down leaves a cluster it does not own");
    aws.ecs.delete_cluster().cluster(&p.stack).send().await.unwrap();
}
