//! The desired topology as nodes: one per AWS resource, with a typed id ([`NodeId`]), a spec, and its
//! dependencies; and the teardown graph of recorded nodes, derived from their ids alone.

mod id;

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

pub use id::{NodeId, UnknownNode};

use crate::config::public::{LB_CALLER, Public};
use crate::config::secrets::{SecretArn, Store};
use crate::config::{Config, Egress, NatGateways, validate_carve_bits};
use crate::resource::group_rules::{Peer, Permission};
use crate::resource::task_definition::{RoleRef, TaskDefinitionSpec};
use crate::resource::{Spec, *};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub spec: Spec,
    pub deps: Vec<NodeId>,
}

/// The interface endpoints a task in a private subnet needs to pull from ECR and ship logs (S3 is a gateway).
pub const INTERFACE_ENDPOINTS: [&str; 3] = ["ecr.api", "ecr.dkr", "logs"];
/// AWS's managed execution policy, in the region's partition.
pub fn execution_policy_arn(region: &str) -> String {
    let partition = crate::config::secrets::partition_of(region);
    format!("arn:{partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
}
pub const HTTPS: u16 = 443;
pub const HTTP: u16 = 80;

/// Every node the config asks for, in a deterministic order.
pub fn desired_nodes(config: &Config, azs: &[String], region: &str) -> Vec<Node> {
    let stack = &config.stack.name;
    let egress = config.network.egress;
    let mut nodes = Vec::new();
    let mut push = |id: NodeId, spec: Spec, deps: Vec<NodeId>| nodes.push(Node { id, spec, deps });
    let services: Vec<String> = config.services.keys().cloned().collect();
    let groups: Vec<NodeId> = services.iter().map(|s| NodeId::group(s)).collect();
    let subnets: Vec<NodeId> = azs.iter().map(|az| NodeId::subnet(az)).collect();

    push(
        NodeId::LinkedRole("ecs".into()),
        Spec::LinkedRole(linked_role::Spec { service: "ecs.amazonaws.com".into() }),
        vec![],
    );
    push(NodeId::Vpc, Spec::Vpc(vpc::Spec { cidr: config.network.cidr.to_string(), name: stack.clone() }), vec![]);
    push(NodeId::VpcDns, Spec::VpcDns(vpc_dns::Spec), vec![NodeId::Vpc]);
    push(NodeId::DefaultGroup, Spec::DefaultGroup(default_group::Spec), vec![NodeId::Vpc]);
    for (i, az) in azs.iter().enumerate() {
        let spec = subnet::Spec { az: az.clone(), cidr: subnet_cidr(config, i), name: format!("{stack}-private-{az}") };
        push(subnets[i].clone(), Spec::Subnet(spec), vec![NodeId::Vpc]);
    }

    // Public subnets: the NAT gateways' and the load balancer's (see README: egress modes, public services).
    let mut nats = Vec::new();
    let public: Vec<NodeId> = azs.iter().map(|az| NodeId::PublicSubnet(az.clone())).collect();
    if config.has_public_subnets() {
        for (i, az) in azs.iter().enumerate() {
            let spec = subnet::Spec {
                az: az.clone(),
                cidr: public_subnet_cidr(config, i),
                name: format!("{stack}-public-{az}"),
            };
            push(public[i].clone(), Spec::Subnet(spec), vec![NodeId::Vpc]);
        }
        push(
            NodeId::InternetGateway,
            Spec::InternetGateway(internet_gateway::Spec { name: stack.clone() }),
            vec![NodeId::Vpc],
        );
        let public_table = NodeId::RouteTable("public".into());
        push(
            public_table.clone(),
            Spec::RouteTable(route_table::Spec {
                name: format!("{stack}-public"),
                default_route: Some(NodeId::InternetGateway),
            }),
            vec![NodeId::Vpc, NodeId::InternetGateway],
        );
        for subnet in &public {
            push(
                NodeId::association_of(subnet),
                association(&public_table, subnet),
                vec![public_table.clone(), subnet.clone()],
            );
        }
    }
    // The way out of the private subnets (see README: egress modes).
    if egress == Egress::Nat {
        let nat_azs = match config.network.nat_gateways {
            NatGateways::One => &azs[..1],
            NatGateways::PerAz => azs,
        };
        for az in nat_azs {
            let name = format!("{stack}-{az}");
            let (subnet, eip) = (NodeId::PublicSubnet(az.clone()), NodeId::ElasticIp(az.clone()));
            push(eip.clone(), Spec::ElasticIp(elastic_ip::Spec { name: name.clone() }), vec![]);
            push(
                NodeId::NatGateway(az.clone()),
                Spec::NatGateway(nat_gateway::Spec { name, subnet: subnet.clone(), eip: eip.clone() }),
                vec![subnet.clone(), eip, NodeId::InternetGateway, NodeId::association_of(&subnet)],
            );
            nats.push(NodeId::NatGateway(az.clone()));
        }
    }
    let mut private_tables = Vec::new();
    let mut private_associations = Vec::new();
    if egress != Egress::None {
        for (i, az) in azs.iter().enumerate() {
            let default_route = match config.network.nat_gateways {
                NatGateways::PerAz => nats.get(i).cloned(),
                NatGateways::One => nats.first().cloned(),
            };
            let mut deps = vec![NodeId::Vpc];
            deps.extend(nats.iter().cloned());
            let table = NodeId::RouteTable(az.clone());
            let spec = route_table::Spec { name: format!("{stack}-private-{az}"), default_route };
            push(table.clone(), Spec::RouteTable(spec), deps);
            let subnet = &subnets[i];
            push(NodeId::association_of(subnet), association(&table, subnet), vec![table.clone(), subnet.clone()]);
            private_tables.push(table);
            private_associations.push(NodeId::association_of(subnet));
        }
    }

    push(NodeId::Cluster, Spec::Cluster(cluster::Spec { name: stack.clone() }), vec![NodeId::LinkedRole("ecs".into())]);
    push(
        NodeId::Namespace,
        Spec::Namespace(namespace::Spec { name: config.namespace.name.clone() }),
        vec![NodeId::Vpc],
    );
    let mut td_deps = vec![NodeId::LogGroup];
    let execution_role = match &config.stack.execution_role_arn {
        Some(arn) => RoleRef::Arn(arn.clone()),
        None => {
            push(
                NodeId::ExecutionRole,
                Spec::ExecutionRole(execution_role::Spec {
                    name: execution_role_name(stack),
                    policy_arn: execution_policy_arn(region),
                    secrets: secret_grants(config),
                }),
                vec![],
            );
            td_deps.push(NodeId::ExecutionRole);
            RoleRef::Node(NodeId::ExecutionRole)
        }
    };
    let log_group = log_group_name(stack);
    push(
        NodeId::LogGroup,
        Spec::LogGroup(log_group::Spec { name: log_group.clone(), retention_days: config.logs.retention_days }),
        vec![],
    );

    let mut endpoint_nodes = Vec::new();
    if egress == Egress::Endpoints {
        let s3 = NodeId::PrefixList("s3".into());
        push(s3.clone(), Spec::PrefixList(prefix_list::Spec { service: "s3".into() }), vec![]);
        push(
            NodeId::EndpointGroup,
            Spec::SecurityGroup(security_group::Spec {
                service: String::new(),
                group_name: format!("{stack}-vpc-endpoints"),
                description: format!("secep {stack}: VPC endpoints accept HTTPS only from the service groups"),
            }),
            vec![NodeId::Vpc],
        );
        for service in interface_endpoints(config) {
            // Private DNS names need the VPC's DNS attributes.
            let mut deps = vec![NodeId::VpcDns, NodeId::EndpointGroup];
            deps.extend(subnets.iter().cloned());
            let id = NodeId::Endpoint(service.into());
            push(
                id.clone(),
                Spec::Endpoint(endpoint::Spec { service: service.into(), gateway: false, buckets: Default::default() }),
                deps,
            );
            endpoint_nodes.push(id);
        }
        let mut deps = vec![NodeId::Vpc];
        deps.extend(private_tables.iter().cloned());
        let s3_endpoint = NodeId::Endpoint("s3".into());
        let spec = endpoint::Spec { service: "s3".into(), gateway: true, buckets: bucket_grants(config) };
        push(s3_endpoint.clone(), Spec::Endpoint(spec), deps);
        endpoint_nodes.push(s3_endpoint);
        // Every task carries the clients group besides its own: the endpoints admit that one group, and only it
        // may reach them and S3, so the endpoint group needs one rule however many services there are.
        push(
            NodeId::ClientGroup,
            Spec::SecurityGroup(security_group::Spec {
                service: String::new(),
                group_name: format!("{stack}-vpc-endpoint-clients"),
                description: format!("secep {stack}: on every task; reaches the VPC endpoints and S3, admits nothing"),
            }),
            vec![NodeId::Vpc],
        );
        push(
            NodeId::ClientRules,
            Spec::GroupRules(group_rules::Spec {
                group: NodeId::ClientGroup,
                ingress: Some(vec![]),
                egress: Some(vec![
                    Permission { port: HTTPS, peer: Peer::Group(NodeId::EndpointGroup) },
                    Permission { port: HTTPS, peer: Peer::PrefixList(s3.clone()) },
                ]),
            }),
            vec![NodeId::ClientGroup, NodeId::EndpointGroup, s3.clone()],
        );
        push(
            NodeId::EndpointRules,
            Spec::GroupRules(group_rules::Spec {
                group: NodeId::EndpointGroup,
                ingress: Some(vec![Permission { port: HTTPS, peer: Peer::Group(NodeId::ClientGroup) }]),
                egress: Some(vec![]),
            }),
            vec![NodeId::EndpointGroup, NodeId::ClientGroup],
        );
        endpoint_nodes.extend([NodeId::ClientGroup, NodeId::ClientRules, NodeId::EndpointRules]);
    }

    for svc in config.services.values() {
        let name = &svc.name;
        push(
            NodeId::SdService(name.clone()),
            Spec::SdService(sd_service::Spec { service: name.clone(), ttl: svc.dns_ttl }),
            vec![NodeId::Namespace],
        );
        push(
            NodeId::group(name),
            Spec::SecurityGroup(security_group::Spec {
                service: name.clone(),
                group_name: format!("{stack}-{name}"),
                description: format!("secep {stack}: {name} accepts only its declared callers"),
            }),
            vec![NodeId::Vpc],
        );
        let td = task_definition(config, svc, &execution_role, &log_group, region);
        push(NodeId::TaskDef(name.clone()), Spec::TaskDefinition(td), td_deps.clone());
        push(
            NodeId::Egress(name.clone()),
            Spec::GroupRules(group_rules::Spec {
                group: NodeId::group(name),
                ingress: None,
                egress: Some(egress_permissions(config, svc)),
            }),
            groups.clone(),
        );
    }
    for (caller, callee) in edges(config) {
        let port = config.services[&callee].port;
        push(
            NodeId::rule(&caller, &callee),
            Spec::IngressRule(ingress_rule::Spec { caller: caller.clone(), callee: callee.clone(), port }),
            vec![NodeId::group(&caller), NodeId::group(&callee)],
        );
    }
    let lb_nodes = load_balancer_nodes(config, &public, &mut push);
    for svc in config.services.values() {
        let name = &svc.name;
        let mut deps = vec![
            NodeId::VpcDns,
            NodeId::Cluster,
            NodeId::TaskDef(name.clone()),
            NodeId::SdService(name.clone()),
            NodeId::group(name),
            NodeId::Egress(name.clone()),
        ];
        deps.extend(subnets.iter().cloned());
        // Its tasks can pull their image and ship logs from the first start.
        deps.extend(private_tables.iter().cloned());
        deps.extend(private_associations.iter().cloned());
        deps.extend(endpoint_nodes.iter().cloned());
        // The service starts only once its callers are let in, so it is reachable as declared from its first task.
        deps.extend(
            edges(config)
                .into_iter()
                .filter(|(_, callee)| callee == name)
                .map(|(caller, callee)| NodeId::rule(&caller, &callee)),
        );
        // Behind the load balancer: it starts once its target group is attached and the load balancer may reach it.
        deps.extend(lb_nodes.iter().filter(|(service, _)| service == name).map(|(_, node)| node.clone()));
        push(
            NodeId::Service(name.clone()),
            Spec::Service(service::Spec {
                service: name.clone(),
                desired_count: svc.desired_count,
                public_port: svc.public.as_ref().map(|_| svc.port),
            }),
            deps,
        );
    }
    nodes
}

/// The load balancer and what goes with it, when some service is public: its group and that group's rules, the
/// `lb-><service>` rules, a target group per public service and a listener per port. Returns, per public service,
/// the nodes its ECS service waits for.
fn load_balancer_nodes(
    config: &Config,
    public_subnets: &[NodeId],
    push: &mut impl FnMut(NodeId, Spec, Vec<NodeId>),
) -> Vec<(String, NodeId)> {
    let stack = &config.stack.name;
    let public: Vec<(&crate::config::Service, &Public)> = config.public_services().collect();
    if public.is_empty() {
        return Vec::new();
    }
    let mut waits = Vec::new();
    push(
        NodeId::LbGroup,
        Spec::SecurityGroup(security_group::Spec {
            service: String::new(),
            group_name: format!("{stack}-load-balancer"),
            description: format!(
                "secep {stack}: the load balancer; admits its listener ports, reaches the public services"
            ),
        }),
        vec![NodeId::Vpc],
    );
    let listeners = listener_specs(&public);
    let mut ingress: Vec<Permission> = Vec::new();
    for (_, p) in &public {
        let mut ports = vec![p.port];
        if p.redirect_http && p.https() {
            ports.push(HTTP);
        }
        for port in ports {
            ingress.extend(p.allow_cidrs.iter().map(|c| Permission { port, peer: Peer::Cidr(c.clone()) }));
        }
    }
    ingress.sort();
    ingress.dedup();
    let egress: Vec<Permission> = public
        .iter()
        .map(|(svc, _)| Permission { port: svc.port, peer: Peer::Group(NodeId::group(&svc.name)) })
        .collect();
    let mut deps = vec![NodeId::LbGroup];
    deps.extend(public.iter().map(|(svc, _)| NodeId::group(&svc.name)));
    push(
        NodeId::LbRules,
        Spec::GroupRules(group_rules::Spec { group: NodeId::LbGroup, ingress: Some(ingress), egress: Some(egress) }),
        deps,
    );
    for (svc, p) in &public {
        let name = &svc.name;
        let rule = NodeId::rule(LB_CALLER, name);
        push(
            rule.clone(),
            Spec::IngressRule(ingress_rule::Spec { caller: LB_CALLER.into(), callee: name.clone(), port: svc.port }),
            vec![NodeId::LbGroup, NodeId::group(name)],
        );
        let tg = NodeId::TargetGroup(name.clone());
        push(
            tg.clone(),
            Spec::TargetGroup(target_group::Spec {
                name: crate::resource::elb::tg_name(stack, name, svc.port),
                service: name.clone(),
                port: svc.port,
                health_check_path: p.health_check_path.clone(),
            }),
            vec![NodeId::Vpc],
        );
        waits.extend([(name.clone(), rule), (name.clone(), tg), (name.clone(), NodeId::LbRules)]);
    }
    let mut deps: Vec<NodeId> = public_subnets.to_vec();
    deps.extend(public_subnets.iter().map(NodeId::association_of));
    deps.extend([NodeId::LbGroup, NodeId::InternetGateway, NodeId::RouteTable("public".into())]);
    push(
        NodeId::LoadBalancer,
        Spec::LoadBalancer(load_balancer::Spec { name: crate::resource::elb::lb_name(stack) }),
        deps,
    );
    for spec in listeners {
        let node = NodeId::Listener(spec.port);
        let mut deps = vec![NodeId::LoadBalancer];
        let served: Vec<String> = match &spec.default {
            listener::Target::Service(s) => vec![s.clone()],
            _ => Vec::new(),
        }
        .into_iter()
        .chain(spec.routes.iter().map(|r| r.service.clone()))
        .collect();
        deps.extend(served.iter().map(|s| NodeId::TargetGroup(s.clone())));
        waits.extend(served.iter().map(|s| (s.clone(), node.clone())));
        push(node, Spec::Listener(spec), deps);
    }
    waits
}

/// One listener per public port (with the default service and the routed ones, most specific route first), and
/// port 80's redirect to HTTPS when a service asks for it.
pub fn listener_specs(public: &[(&crate::config::Service, &Public)]) -> Vec<listener::Spec> {
    let mut by_port: std::collections::BTreeMap<u16, Vec<(&crate::config::Service, &Public)>> = Default::default();
    for (svc, p) in public {
        by_port.entry(p.port).or_default().push((svc, p));
    }
    let mut out = Vec::new();
    for (port, services) in &by_port {
        let default = services
            .iter()
            .find(|(_, p)| p.path.is_none() && p.host.is_none())
            .map_or(listener::Target::NotFound, |(svc, _)| listener::Target::Service(svc.name.clone()));
        let mut routed: Vec<&(&crate::config::Service, &Public)> =
            services.iter().filter(|(_, p)| p.path.is_some() || p.host.is_some()).collect();
        // Host and path before host alone before path alone; a longer pattern before a shorter one.
        routed.sort_by_key(|(svc, p)| {
            let rank = match (&p.host, &p.path) {
                (Some(_), Some(_)) => 0,
                (Some(_), None) => 1,
                _ => 2,
            };
            let length = p.host.as_deref().unwrap_or("").len() + p.path.as_deref().unwrap_or("").len();
            (rank, std::cmp::Reverse(length), svc.name.clone())
        });
        let routes = routed
            .iter()
            .map(|(svc, p)| listener::Route { service: svc.name.clone(), host: p.host.clone(), path: p.path.clone() })
            .collect();
        out.push(listener::Spec {
            port: *port,
            certificate_arn: services[0].1.certificate_arn.clone(),
            default,
            routes,
        });
    }
    if let Some((_, p)) = public.iter().find(|(_, p)| p.redirect_http && p.https()) {
        out.push(listener::Spec {
            port: HTTP,
            certificate_arn: None,
            default: listener::Target::Redirect(p.port),
            routes: Vec::new(),
        });
    }
    out
}

fn association(table: &NodeId, subnet: &NodeId) -> Spec {
    Spec::RouteTableAssociation(association::Spec { table: table.clone(), subnet: subnet.clone() })
}

/// Where a service's tasks may connect: the services it calls, on their ports, and with NAT HTTPS anywhere (with
/// endpoints, the clients group every task carries reaches them). Nothing else, not even the default allow-all
/// egress AWS gives a new group.
fn egress_permissions(config: &Config, svc: &crate::config::Service) -> Vec<Permission> {
    let mut out: Vec<Permission> = svc
        .calls
        .iter()
        .map(|callee| Permission { port: config.services[callee].port, peer: Peer::Group(NodeId::group(callee)) })
        .collect();
    match config.network.egress {
        Egress::Nat => out.push(Permission { port: HTTPS, peer: Peer::Cidr("0.0.0.0/0".into()) }),
        Egress::Endpoints | Egress::None => {}
    }
    out.sort();
    out.dedup();
    out
}

/// The interface endpoints the tasks need: ECR and Logs always, Secrets Manager, SSM and KMS when a service reads
/// a secret from them (so that no task reaches them over the internet).
pub fn interface_endpoints(config: &Config) -> Vec<&'static str> {
    let stores: BTreeSet<Store> = config
        .services
        .values()
        .flat_map(|s| s.secrets.values())
        .filter_map(|arn| SecretArn::parse(arn).ok())
        .map(|s| s.store)
        .collect();
    let mut out = INTERFACE_ENDPOINTS.to_vec();
    if stores.contains(&Store::SecretsManager) {
        out.push("secretsmanager");
    }
    if stores.contains(&Store::Parameter) {
        out.push("ssm");
    }
    if !stores.is_empty() && config.stack.kms_key_arn.is_some() {
        out.push("kms");
    }
    out
}

/// Which task role may reach which buckets through the S3 endpoint (`s3_buckets`; validated to come with a role).
fn bucket_grants(config: &Config) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut grants = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for svc in config.services.values() {
        if let Some(role) = svc.task_role_arn.as_ref().filter(|_| !svc.s3_buckets.is_empty()) {
            grants.entry(role.clone()).or_default().extend(svc.s3_buckets.iter().cloned());
        }
    }
    grants
}

/// What the execution role may read for the services' secrets: exactly their ARNs, and the KMS key if given.
fn secret_grants(config: &Config) -> execution_role::SecretGrants {
    let mut grants = execution_role::SecretGrants::default();
    for arn in config.services.values().flat_map(|s| s.secrets.values()) {
        let Ok(secret) = SecretArn::parse(arn) else { continue };
        match secret.store {
            Store::SecretsManager => grants.secrets.insert(secret.resource),
            Store::Parameter => grants.parameters.insert(secret.resource),
        };
    }
    if !grants.is_empty() {
        grants.kms_key = config.stack.kms_key_arn.clone();
    }
    grants
}

/// IAM role names are at most 64 characters and account-wide: the stack name, shortened with a hash if need be.
pub fn execution_role_name(stack: &str) -> String {
    let name = format!("{stack}-ecs-execution");
    if name.len() <= 64 {
        return name;
    }
    let hash = hex(&Sha256::digest(stack.as_bytes())[..4]);
    format!("{}-{hash}-ecs-execution", &stack[..40])
}

/// The stack's log group.
pub fn log_group_name(stack: &str) -> String {
    format!("/secep/{stack}")
}

/// Declared (caller, callee) pairs, sorted.
pub fn edges(config: &Config) -> Vec<(String, String)> {
    let mut edges: Vec<_> = config
        .services
        .values()
        .flat_map(|s| s.calls.iter().map(move |callee| (s.name.clone(), callee.clone())))
        .collect();
    edges.sort();
    edges
}

/// The environment variable that carries a callee's address: `api-gw` → `API_GW_URL`.
pub fn peer_env_name(callee: &str) -> String {
    format!("{}_URL", callee.to_ascii_uppercase().replace('-', "_"))
}

fn task_definition(
    config: &Config,
    svc: &crate::config::Service,
    execution_role: &RoleRef,
    log_group: &str,
    region: &str,
) -> TaskDefinitionSpec {
    let mut environment = svc.environment.clone();
    for callee in &svc.calls {
        environment.insert(peer_env_name(callee), config.endpoint(&config.services[callee]));
    }
    if let [only] = svc.calls.as_slice() {
        // The seed chapter's services read a single peer from SERVICE_URL.
        environment.insert("SERVICE_URL".into(), config.endpoint(&config.services[only]));
    }
    TaskDefinitionSpec {
        service: svc.name.clone(),
        family: format!("{}-{}", config.stack.name, svc.name),
        image: svc.image.clone(),
        port: svc.port,
        cpu: svc.cpu,
        memory: svc.memory,
        environment,
        secrets: svc.secrets.clone(),
        execution_role: execution_role.clone(),
        task_role_arn: svc.task_role_arn.clone(),
        log_group: log_group.to_string(),
        region: region.to_string(),
    }
}

fn subnet_cidr(config: &Config, index: usize) -> String {
    if let Some(explicit) = &config.network.subnet_cidrs {
        return explicit[index].to_string();
    }
    let vpc = config.network.cidr;
    let prefix = vpc.prefix_len() + validate_carve_bits(config.network.max_azs);
    vpc.subnets(prefix).expect("validated: prefix fits").nth(index).expect("validated: enough subnets").to_string()
}

/// Public subnets (NAT only) come after the private ones in the carving: the carve reserves room for both.
fn public_subnet_cidr(config: &Config, index: usize) -> String {
    if let Some(explicit) = &config.network.public_subnet_cidrs {
        return explicit[index].to_string();
    }
    let vpc = config.network.cidr;
    let prefix = vpc.prefix_len() + validate_carve_bits(config.network.max_azs);
    let slot = config.network.max_azs + index;
    vpc.subnets(prefix).expect("validated: prefix fits").nth(slot).expect("validated: enough subnets").to_string()
}

/// A deterministic idempotency token for a node (ECS clientToken: at most 36 ASCII characters).
pub fn idempotency_token(stack: &str, node_id: &str, digest: &str) -> String {
    let d = Sha256::digest(format!("{stack}\0{node_id}\0{digest}").as_bytes());
    hex(&d[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The dependencies of recorded nodes, derived from their ids alone, so teardown needs neither the config that
/// created them nor a config that still matches. Only nodes in `ids` are linked.
pub fn recorded_graph(ids: &[NodeId]) -> Vec<(NodeId, Vec<NodeId>)> {
    let present: std::collections::BTreeSet<&NodeId> = ids.iter().collect();
    let all = |keep: fn(&NodeId) -> bool| ids.iter().filter(move |i| keep(i)).cloned();
    let private_tables = || all(|i| matches!(i, NodeId::RouteTable(n) if n != "public"));
    ids.iter()
        .map(|id| {
            let mut deps: Vec<NodeId> = Vec::new();
            // A twin found by tag sits where its node would.
            match id.base() {
                NodeId::Subnet(_)
                | NodeId::PublicSubnet(_)
                | NodeId::Namespace
                | NodeId::Group(_)
                | NodeId::EndpointGroup
                | NodeId::LbGroup
                | NodeId::TargetGroup(_)
                | NodeId::InternetGateway
                | NodeId::VpcDns
                | NodeId::DefaultGroup => deps.push(NodeId::Vpc),
                NodeId::SdService(_) => deps.push(NodeId::Namespace),
                NodeId::Cluster => deps.extend(all(|i| matches!(i, NodeId::LinkedRole(_)))),
                NodeId::TaskDef(_) => deps.extend(all(|i| matches!(i, NodeId::ExecutionRole | NodeId::LogGroup))),
                NodeId::Rule { caller, callee } => deps.extend([NodeId::caller_group(caller), NodeId::group(callee)]),
                NodeId::LbRules => {
                    deps.push(NodeId::LbGroup);
                    deps.extend(all(|i| matches!(i, NodeId::Group(_))));
                }
                // Its network interfaces hold public addresses: it goes before the gateway, the subnets and group.
                NodeId::LoadBalancer => {
                    deps.extend([NodeId::LbGroup, NodeId::InternetGateway, NodeId::RouteTable("public".into())]);
                    deps.extend(all(|i| matches!(i, NodeId::PublicSubnet(_))));
                    deps.extend(all(|i| matches!(i, NodeId::Association(s) if matches!(**s, NodeId::PublicSubnet(_)))));
                }
                NodeId::Listener(_) => {
                    deps.push(NodeId::LoadBalancer);
                    deps.extend(all(|i| matches!(i, NodeId::TargetGroup(_))));
                }
                NodeId::RouteTable(name) if name == "public" => {
                    deps.extend([NodeId::Vpc, NodeId::InternetGateway]);
                    deps.extend(all(|i| matches!(i, NodeId::PublicSubnet(_))));
                }
                // A table still goes before its subnets: one found by tag, without its association nodes, is
                // disassociated by its own deletion.
                NodeId::RouteTable(az) => {
                    deps.extend([NodeId::Vpc, NodeId::subnet(az)]);
                    deps.extend(all(|i| matches!(i, NodeId::NatGateway(_))));
                }
                NodeId::Association(subnet) => match subnet.as_ref() {
                    NodeId::PublicSubnet(_) => deps.extend([NodeId::RouteTable("public".into()), (**subnet).clone()]),
                    NodeId::Subnet(az) => deps.extend([NodeId::RouteTable(az.clone()), (**subnet).clone()]),
                    _ => {}
                },
                NodeId::NatGateway(az) => {
                    let subnet = NodeId::PublicSubnet(az.clone());
                    deps.extend([
                        subnet.clone(),
                        NodeId::ElasticIp(az.clone()),
                        NodeId::InternetGateway,
                        NodeId::association_of(&subnet),
                    ]);
                }
                NodeId::Endpoint(s) if s == "s3" => {
                    deps.push(NodeId::Vpc);
                    deps.extend(private_tables());
                }
                NodeId::Endpoint(_) => {
                    deps.extend([NodeId::VpcDns, NodeId::EndpointGroup]);
                    deps.extend(all(|i| matches!(i, NodeId::Subnet(_))));
                }
                NodeId::EndpointRules => {
                    deps.extend([NodeId::EndpointGroup, NodeId::ClientGroup]);
                    // Before the clients group, a rule per service group.
                    deps.extend(all(|i| matches!(i, NodeId::Group(_))));
                }
                NodeId::ClientGroup => deps.push(NodeId::Vpc),
                NodeId::ClientRules => {
                    deps.extend([NodeId::ClientGroup, NodeId::EndpointGroup, NodeId::PrefixList("s3".into())])
                }
                NodeId::Egress(_) => {
                    deps.extend(all(|i| matches!(i, NodeId::Group(_))));
                    deps.extend([NodeId::EndpointGroup, NodeId::PrefixList("s3".into())]);
                }
                NodeId::Service(name) => {
                    deps.extend([
                        NodeId::Cluster,
                        NodeId::TaskDef(name.clone()),
                        NodeId::SdService(name.clone()),
                        NodeId::group(name),
                        NodeId::Egress(name.clone()),
                    ]);
                    deps.extend(all(|i| matches!(i, NodeId::Subnet(_))));
                    deps.extend(private_tables());
                    deps.extend(all(|i| matches!(i, NodeId::Association(s) if matches!(**s, NodeId::Subnet(_)))));
                    deps.extend(all(|i| {
                        matches!(
                            i,
                            NodeId::VpcDns
                                | NodeId::Endpoint(_)
                                | NodeId::EndpointRules
                                | NodeId::ClientGroup
                                | NodeId::ClientRules
                        )
                    }));
                    let callee = name.clone();
                    deps.extend(
                        ids.iter().filter(|i| matches!(i, NodeId::Rule { callee: c, .. } if *c == callee)).cloned(),
                    );
                    deps.extend([NodeId::TargetGroup(name.clone()), NodeId::LbRules]);
                    deps.extend(all(|i| matches!(i, NodeId::Listener(_))));
                }
                _ => {}
            }
            deps.retain(|d| present.contains(d) && d != id);
            (id.clone(), deps)
        })
        .collect()
}

#[cfg(test)]
mod tests;
