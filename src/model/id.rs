//! Typed node ids. Each prints as the string secep has always used (`vpc`, `subnet/us-east-1a`, `sg/api`,
//! `sg-rule/web->api`, ...): that string is the key in the state file, the value of the `secep:node` tag, and what
//! the output and the logs show, so state files and tags written by earlier releases keep their meaning.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::resource::Kind;

/// One node of the topology: one AWS resource (or one fact about one, like the VPC's DNS attributes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeId {
    /// `linked-role/<service>`: the account's service-linked role of an AWS service (`ecs`).
    LinkedRole(String),
    Vpc,
    /// `vpc-dns`: the VPC's DNS support and DNS hostnames attributes.
    VpcDns,
    /// `vpc-default-sg`: the VPC's default security group, kept without rules.
    DefaultGroup,
    /// `subnet/<az>`: the private subnet of an AZ.
    Subnet(String),
    /// `public-subnet/<az>` (NAT mode).
    PublicSubnet(String),
    /// `igw`.
    InternetGateway,
    /// `rtb/<az>` (the private subnet's table) or `rtb/public`.
    RouteTable(String),
    /// `rtb-assoc/<az>` or `rtb-assoc/public-<az>`: a subnet's association with its route table. Holds the subnet.
    Association(Box<NodeId>),
    /// `eip/<az>`.
    ElasticIp(String),
    /// `nat/<az>`.
    NatGateway(String),
    Cluster,
    Namespace,
    /// `role/execution`.
    ExecutionRole,
    /// `logs`.
    LogGroup,
    /// `prefix-list/<service>` (AWS's own, looked up).
    PrefixList(String),
    /// `vpce-sg`: the VPC endpoints' security group.
    EndpointGroup,
    /// `vpce/<service>`.
    Endpoint(String),
    /// `vpce-rules`: every rule of the endpoint group.
    EndpointRules,
    /// `vpce-clients-sg`: the group on every task that lets it reach the endpoints and S3. One group for all, so
    /// that the endpoint group admits one source however many services there are (AWS allows 60 rules a group).
    ClientGroup,
    /// `vpce-clients-rules`: every rule of the clients group (egress only: HTTPS to the endpoints and S3).
    ClientRules,
    /// `sd/<service>`: the Cloud Map service.
    SdService(String),
    /// `sg/<service>`.
    Group(String),
    /// `td/<service>`.
    TaskDef(String),
    /// `egress/<service>`: every egress rule of the service's group.
    Egress(String),
    /// `sg-rule/<caller>-><callee>`.
    Rule {
        caller: String,
        callee: String,
    },
    /// `svc/<service>`: the ECS service.
    Service(String),
    /// `lb-sg`: the load balancer's security group.
    LbGroup,
    /// `lb-rules`: every rule of the load balancer's group (in: the listener ports from the allowed CIDRs; out: the
    /// public services on their ports).
    LbRules,
    /// `lb`: the stack's internet-facing application load balancer.
    LoadBalancer,
    /// `tg/<service>`: a public service's target group.
    TargetGroup(String),
    /// `listener/<port>`: a listener of the load balancer, with its routing rules.
    Listener(u16),
    /// `<node>#<aws id>`: a second live resource carrying a node's tag (a twin left by a create whose response was
    /// lost). Found, reported and deleted, never created.
    Twin(Box<NodeId>, String),
}

impl NodeId {
    /// The resource kind that makes this node.
    pub fn kind(&self) -> Kind {
        match self {
            NodeId::LinkedRole(_) => Kind::LinkedRole,
            NodeId::Vpc => Kind::Vpc,
            NodeId::VpcDns => Kind::VpcDns,
            NodeId::DefaultGroup => Kind::DefaultGroup,
            NodeId::Subnet(_) | NodeId::PublicSubnet(_) => Kind::Subnet,
            NodeId::InternetGateway => Kind::InternetGateway,
            NodeId::RouteTable(_) => Kind::RouteTable,
            NodeId::Association(_) => Kind::RouteTableAssociation,
            NodeId::ElasticIp(_) => Kind::ElasticIp,
            NodeId::NatGateway(_) => Kind::NatGateway,
            NodeId::Cluster => Kind::Cluster,
            NodeId::Namespace => Kind::Namespace,
            NodeId::ExecutionRole => Kind::ExecutionRole,
            NodeId::LogGroup => Kind::LogGroup,
            NodeId::PrefixList(_) => Kind::PrefixList,
            NodeId::EndpointGroup | NodeId::ClientGroup | NodeId::LbGroup | NodeId::Group(_) => Kind::SecurityGroup,
            NodeId::Endpoint(_) => Kind::Endpoint,
            NodeId::EndpointRules | NodeId::ClientRules | NodeId::LbRules | NodeId::Egress(_) => Kind::GroupRules,
            NodeId::SdService(_) => Kind::SdService,
            NodeId::TaskDef(_) => Kind::TaskDefinition,
            NodeId::Rule { .. } => Kind::IngressRule,
            NodeId::Service(_) => Kind::Service,
            NodeId::LoadBalancer => Kind::LoadBalancer,
            NodeId::TargetGroup(_) => Kind::TargetGroup,
            NodeId::Listener(_) => Kind::Listener,
            NodeId::Twin(base, _) => base.kind(),
        }
    }

    /// The node itself, without a twin's suffix.
    pub fn base(&self) -> &NodeId {
        match self {
            NodeId::Twin(base, _) => base.base(),
            other => other,
        }
    }

    pub fn is_twin(&self) -> bool {
        matches!(self, NodeId::Twin(..))
    }

    pub fn twin(self, id: &str) -> NodeId {
        NodeId::Twin(Box::new(self), id.to_string())
    }

    pub fn subnet(az: &str) -> NodeId {
        NodeId::Subnet(az.to_string())
    }

    pub fn group(service: &str) -> NodeId {
        NodeId::Group(service.to_string())
    }

    /// The group of a rule's caller: a service's, or the load balancer's (`sg-rule/lb-><service>`).
    pub fn caller_group(caller: &str) -> NodeId {
        if caller == crate::config::public::LB_CALLER { NodeId::LbGroup } else { NodeId::group(caller) }
    }

    pub fn rule(caller: &str, callee: &str) -> NodeId {
        NodeId::Rule { caller: caller.to_string(), callee: callee.to_string() }
    }

    /// The association node of a subnet node.
    pub fn association_of(subnet: &NodeId) -> NodeId {
        NodeId::Association(Box::new(subnet.clone()))
    }

    /// The service a per-service node belongs to (`sg/api`, `td/api`, ... → `api`).
    pub fn service_name(&self) -> Option<&str> {
        match self.base() {
            NodeId::SdService(s)
            | NodeId::Group(s)
            | NodeId::TaskDef(s)
            | NodeId::Egress(s)
            | NodeId::Service(s)
            | NodeId::TargetGroup(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeId::LinkedRole(s) => write!(f, "linked-role/{s}"),
            NodeId::Vpc => f.write_str("vpc"),
            NodeId::VpcDns => f.write_str("vpc-dns"),
            NodeId::DefaultGroup => f.write_str("vpc-default-sg"),
            NodeId::Subnet(az) => write!(f, "subnet/{az}"),
            NodeId::PublicSubnet(az) => write!(f, "public-subnet/{az}"),
            NodeId::InternetGateway => f.write_str("igw"),
            NodeId::RouteTable(name) => write!(f, "rtb/{name}"),
            NodeId::Association(subnet) => match subnet.as_ref() {
                NodeId::PublicSubnet(az) => write!(f, "rtb-assoc/public-{az}"),
                NodeId::Subnet(az) => write!(f, "rtb-assoc/{az}"),
                other => write!(f, "rtb-assoc/?{other}"),
            },
            NodeId::ElasticIp(az) => write!(f, "eip/{az}"),
            NodeId::NatGateway(az) => write!(f, "nat/{az}"),
            NodeId::Cluster => f.write_str("cluster"),
            NodeId::Namespace => f.write_str("namespace"),
            NodeId::ExecutionRole => f.write_str("role/execution"),
            NodeId::LogGroup => f.write_str("logs"),
            NodeId::PrefixList(s) => write!(f, "prefix-list/{s}"),
            NodeId::EndpointGroup => f.write_str("vpce-sg"),
            NodeId::Endpoint(s) => write!(f, "vpce/{s}"),
            NodeId::EndpointRules => f.write_str("vpce-rules"),
            NodeId::ClientGroup => f.write_str("vpce-clients-sg"),
            NodeId::ClientRules => f.write_str("vpce-clients-rules"),
            NodeId::SdService(s) => write!(f, "sd/{s}"),
            NodeId::Group(s) => write!(f, "sg/{s}"),
            NodeId::TaskDef(s) => write!(f, "td/{s}"),
            NodeId::Egress(s) => write!(f, "egress/{s}"),
            NodeId::Rule { caller, callee } => write!(f, "sg-rule/{caller}->{callee}"),
            NodeId::Service(s) => write!(f, "svc/{s}"),
            NodeId::LbGroup => f.write_str("lb-sg"),
            NodeId::LbRules => f.write_str("lb-rules"),
            NodeId::LoadBalancer => f.write_str("lb"),
            NodeId::TargetGroup(s) => write!(f, "tg/{s}"),
            NodeId::Listener(port) => write!(f, "listener/{port}"),
            NodeId::Twin(base, id) => write!(f, "{base}#{id}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a node id secep knows (written by a newer secep?)")]
pub struct UnknownNode(pub String);

impl FromStr for NodeId {
    type Err = UnknownNode;

    fn from_str(s: &str) -> Result<NodeId, UnknownNode> {
        let unknown = || UnknownNode(s.to_string());
        if let Some((base, twin)) = s.split_once('#') {
            if twin.is_empty() {
                return Err(unknown());
            }
            return Ok(base.parse::<NodeId>().map_err(|_| unknown())?.twin(twin));
        }
        let (kind, name) = match s.split_once('/') {
            Some((kind, name)) if !name.is_empty() => (kind, Some(name.to_string())),
            Some(_) => return Err(unknown()),
            None => (s, None),
        };
        let id = match (kind, name) {
            ("vpc", None) => NodeId::Vpc,
            ("vpc-dns", None) => NodeId::VpcDns,
            ("vpc-default-sg", None) => NodeId::DefaultGroup,
            ("igw", None) => NodeId::InternetGateway,
            ("cluster", None) => NodeId::Cluster,
            ("namespace", None) => NodeId::Namespace,
            ("logs", None) => NodeId::LogGroup,
            ("vpce-sg", None) => NodeId::EndpointGroup,
            ("vpce-rules", None) => NodeId::EndpointRules,
            ("vpce-clients-sg", None) => NodeId::ClientGroup,
            ("vpce-clients-rules", None) => NodeId::ClientRules,
            ("lb-sg", None) => NodeId::LbGroup,
            ("lb-rules", None) => NodeId::LbRules,
            ("lb", None) => NodeId::LoadBalancer,
            ("tg", Some(s)) => NodeId::TargetGroup(s),
            ("listener", Some(port)) => match port.parse::<u16>() {
                Ok(p) if p > 0 && p.to_string() == port => NodeId::Listener(p),
                _ => return Err(unknown()),
            },
            ("role", Some(name)) if name == "execution" => NodeId::ExecutionRole,
            ("linked-role", Some(name)) => NodeId::LinkedRole(name),
            ("subnet", Some(az)) => NodeId::Subnet(az),
            ("public-subnet", Some(az)) => NodeId::PublicSubnet(az),
            ("rtb", Some(name)) => NodeId::RouteTable(name),
            ("rtb-assoc", Some(name)) => match name.strip_prefix("public-") {
                Some(az) => NodeId::association_of(&NodeId::PublicSubnet(az.to_string())),
                None => NodeId::association_of(&NodeId::Subnet(name)),
            },
            ("eip", Some(az)) => NodeId::ElasticIp(az),
            ("nat", Some(az)) => NodeId::NatGateway(az),
            ("prefix-list", Some(s)) => NodeId::PrefixList(s),
            ("vpce", Some(s)) => NodeId::Endpoint(s),
            ("sd", Some(s)) => NodeId::SdService(s),
            ("sg", Some(s)) => NodeId::Group(s),
            ("td", Some(s)) => NodeId::TaskDef(s),
            ("egress", Some(s)) => NodeId::Egress(s),
            ("svc", Some(s)) => NodeId::Service(s),
            ("sg-rule", Some(pair)) => match pair.split_once("->") {
                Some((caller, callee)) if !caller.is_empty() && !callee.is_empty() => NodeId::rule(caller, callee),
                _ => return Err(unknown()),
            },
            _ => return Err(unknown()),
        };
        Ok(id)
    }
}

/// Ordered as their strings are, so that maps keyed by node print (and the state file lists) as before.
impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_prints_as_it_parses() {
        for s in [
            "linked-role/ecs",
            "vpc",
            "vpc-dns",
            "vpc-default-sg",
            "subnet/us-east-1a",
            "public-subnet/us-east-1b",
            "igw",
            "rtb/us-east-1a",
            "rtb/public",
            "rtb-assoc/us-east-1a",
            "rtb-assoc/public-us-east-1a",
            "eip/us-east-1a",
            "nat/us-east-1a",
            "cluster",
            "namespace",
            "role/execution",
            "logs",
            "prefix-list/s3",
            "vpce-sg",
            "vpce/ecr.api",
            "vpce-rules",
            "vpce-clients-sg",
            "vpce-clients-rules",
            "sd/api",
            "sg/api-gw",
            "td/api",
            "egress/api",
            "sg-rule/web->api",
            "svc/api",
            "lb-sg",
            "lb-rules",
            "lb",
            "tg/web",
            "listener/443",
            "sg-rule/lb->web",
            "vpc#vpc-123",
            "td/api#7",
        ] {
            let id: NodeId = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn unknown_and_malformed_ids_are_refused() {
        for s in [
            "",
            "frob",
            "frob/x",
            "sg/",
            "sg-rule/web",
            "sg-rule/->api",
            "role/task",
            "vpc#",
            "vpc/x",
            "listener/0",
            "listener/08",
            "listener/https",
        ] {
            assert!(s.parse::<NodeId>().is_err(), "{s} must not parse");
        }
    }

    #[test]
    fn a_twin_is_of_its_nodes_kind() {
        let twin: NodeId = "sg/api#sg-1".parse().unwrap();
        assert_eq!(twin.kind(), Kind::SecurityGroup);
        assert_eq!(twin.base(), &NodeId::group("api"));
        assert_eq!(twin.service_name(), Some("api"));
    }
}
