//! The kill test: SIGKILL `up` right after its Kth mutating call returns, for every K of the seed config and for
//! sampled K of a 10-service mesh; run `up` again and count every kind live. Zero duplicates, then `down` leaves zero.

use std::collections::BTreeMap;
use std::process::Stdio;

use aws_sdk_ecs::types::TaskDefinitionStatus;

use crate::harness::{Aws, Project, Proxy, aws, ec2_filter, emulator};

/// How many of each kind the stack has live, counted with describes (never from the state file).
pub(crate) async fn census(aws: &Aws, p: &Project) -> BTreeMap<&'static str, usize> {
    let tagged = || ec2_filter("tag:secep:stack", &p.stack);
    let mut c = BTreeMap::new();
    c.insert("vpc", aws.ec2.describe_vpcs().filters(tagged()).send().await.unwrap().vpcs().len());
    c.insert("subnet", aws.ec2.describe_subnets().filters(tagged()).send().await.unwrap().subnets().len());
    let groups = aws.ec2.describe_security_groups().filters(tagged()).send().await.unwrap();
    c.insert("security group", groups.security_groups().len());
    c.insert(
        "ingress rule",
        groups
            .security_groups()
            .iter()
            .map(|g| g.ip_permissions().iter().map(|p| p.user_id_group_pairs().len()).sum::<usize>())
            .sum(),
    );
    let clusters = aws.ecs.describe_clusters().clusters(&p.stack).send().await.unwrap();
    c.insert("cluster", clusters.clusters().iter().filter(|c| c.status() == Some("ACTIVE")).count());
    let arns =
        aws.ecs.list_services().cluster(&p.stack).send().await.map(|o| o.service_arns().to_vec()).unwrap_or_default();
    let mut active = 0;
    for batch in arns.chunks(10) {
        let out = aws
            .ecs
            .describe_services()
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .cluster(&p.stack)
            .set_services(Some(batch.to_vec()))
            .send()
            .await
            .unwrap();
        active += out.services().iter().filter(|s| s.status() == Some("ACTIVE")).count();
    }
    c.insert("ecs service", active);
    let families = aws.ecs.list_task_definition_families().family_prefix(format!("{}-", p.stack)).send().await.unwrap();
    let mut revisions = 0;
    for family in families.families() {
        revisions += aws
            .ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap()
            .task_definition_arns()
            .len();
    }
    c.insert("task definition", revisions);
    let namespaces: Vec<String> = aws
        .sd
        .list_namespaces()
        .send()
        .await
        .unwrap()
        .namespaces()
        .iter()
        .filter(|n| n.name() == Some(p.namespace.as_str()))
        .filter_map(|n| n.id())
        .map(str::to_string)
        .collect();
    c.insert("namespace", namespaces.len());
    let mut sd = 0;
    for s in aws.sd.list_services().send().await.unwrap().services() {
        // Other tests share the emulator (whose ListServices ignores filters): their services may vanish meanwhile.
        let Ok(full) = aws.sd.get_service().id(s.id().unwrap()).send().await else { continue };
        if full.service().and_then(|s| s.namespace_id()).is_some_and(|ns| namespaces.iter().any(|n| n == ns)) {
            sd += 1;
        }
    }
    c.insert("cloud map service", sd);
    c.insert(
        "route table",
        aws.ec2.describe_route_tables().filters(tagged()).send().await.unwrap().route_tables().len(),
    );
    c.insert(
        "vpc endpoint",
        aws.ec2.describe_vpc_endpoints().filters(tagged()).send().await.unwrap().vpc_endpoints().len(),
    );
    // The load balancer's resources, found by their tags (Elastic Load Balancing has no tag filter).
    let lbs = aws.elb.describe_load_balancers().send().await.unwrap();
    let tgs = aws.elb.describe_target_groups().send().await.unwrap();
    let lb_arns: Vec<String> =
        lbs.load_balancers().iter().filter_map(|l| l.load_balancer_arn()).map(str::to_string).collect();
    let tg_arns: Vec<String> =
        tgs.target_groups().iter().filter_map(|t| t.target_group_arn()).map(str::to_string).collect();
    let ours = elb_tagged(aws, p, [lb_arns.clone(), tg_arns].concat()).await;
    let our_lbs: Vec<&String> = lb_arns.iter().filter(|a| ours.contains(*a)).collect();
    c.insert("load balancer", our_lbs.len());
    c.insert("target group", ours.len() - our_lbs.len());
    let (mut listeners, mut rules) = (0, 0);
    for lb in our_lbs {
        for l in aws.elb.describe_listeners().load_balancer_arn(lb).send().await.unwrap().listeners() {
            listeners += 1;
            let out = aws.elb.describe_rules().listener_arn(l.listener_arn().unwrap()).send().await.unwrap();
            rules += out.rules().iter().filter(|r| r.is_default() != Some(true)).count();
        }
    }
    c.insert("listener", listeners);
    c.insert("listener rule", rules);
    let role = aws.iam.get_role().role_name(format!("{}-ecs-execution", p.stack)).send().await;
    c.insert("iam role", usize::from(role.is_ok()));
    let group = format!("/secep/{}", p.stack);
    let groups = aws.logs.describe_log_groups().log_group_name_prefix(&group).send().await.unwrap();
    c.insert("log group", groups.log_groups().iter().filter(|g| g.log_group_name() == Some(group.as_str())).count());
    c
}

/// Which of the ARNs carry the project's `secep:stack` tag (20 per DescribeTags).
pub(crate) async fn elb_tagged(aws: &Aws, p: &Project, arns: Vec<String>) -> Vec<String> {
    let mut ours = Vec::new();
    for chunk in arns.chunks(20) {
        let out = aws.elb.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await.unwrap();
        for d in out.tag_descriptions() {
            if d.tags().iter().any(|t| t.key() == Some("secep:stack") && t.value() == Some(p.stack.as_str())) {
                ours.push(d.resource_arn().unwrap().to_string());
            }
        }
    }
    ours
}

pub(crate) fn expected(services: usize, edges: usize, azs: usize) -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("vpc", 1),
        ("subnet", azs),
        // One per service, the VPC endpoints' group and the endpoint clients group every task carries, which is
        // the endpoints' one ingress source.
        ("security group", services + 2),
        ("ingress rule", edges + 1),
        ("route table", azs),
        ("vpc endpoint", 4),
        ("iam role", 1),
        ("log group", 1),
        ("cluster", 1),
        ("ecs service", services),
        ("task definition", services),
        ("namespace", 1),
        ("cloud map service", services),
        ("load balancer", 0),
        ("target group", 0),
        ("listener", 0),
        ("listener rule", 0),
    ])
}

/// Kills `up` after its Kth successful mutating call; returns what the resumed `up` printed, and the proxy both
/// went through (the `down` after them goes through it too: its clock saw their tasks start). The proxy sends the
/// SIGKILL itself, right after that answer, and forwards nothing after it: no call the dead run had in flight can
/// reach the emulator behind the resumed run's back (a test-side poll of the call log let one through).
fn kill_then_resume(p: &Project, upstream: &str, k: usize) -> (String, Proxy) {
    let proxy = Proxy::start_on(upstream, &[]);
    kill_at(p, &proxy, &["up"], k);
    let resumed = p.secep_at(&proxy.url, &["up"]);
    assert_eq!(resumed.code, 0, "K={k}: the resumed up failed:\n{}", resumed.stderr);
    (resumed.stderr, proxy)
}

/// Runs `secep <args> --parallelism 1` through `proxy`, which SIGKILLs it right after its Kth successful mutating
/// answer and refuses every later call unforwarded, and checks that it was killed there. The proxy is disarmed
/// again: the next run goes through the same one, whose clock saw what the dead run did.
pub(crate) fn kill_at(p: &Project, proxy: &Proxy, args: &[&str], k: usize) {
    let mut child = p
        .command(&proxy.url, &[args, &["--parallelism", "1"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    proxy.configure(&format!(r#"{{"kill_after_mutating": {k}, "kill_pid": {}}}"#, child.id()));
    let status = child.wait().unwrap();
    let killed = proxy.calls().iter().any(|c| c["killed"] == child.id());
    assert!(killed, "K={k}: {args:?} ended ({status}) before its Kth mutating call; is K beyond the run?");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "K={k}: not killed by the proxy");
    proxy.configure(r#"{"kill_after_mutating": null, "kill_pid": null}"#);
}

pub(crate) fn mesh(services: usize) -> (String, usize) {
    let mut text = String::from(
        "[stack]\nname = \"{stack}\"\n\n[network]\ncidr = \"10.9.0.0/16\"\nmax_azs = 2\n\n[namespace]\nname = \"{namespace}\"\n",
    );
    let mut edges = 0;
    for i in 0..services {
        // Each service calls the next two: a mesh with mutual reach around the ring.
        let calls: Vec<String> = (1..=2).map(|d| format!("\"s{}\"", (i + d) % services)).collect();
        edges += calls.len();
        text.push_str(&format!(
            "\n[services.s{i}]\nimage = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/img-{i}\"\nport = {}\ncalls = [{}]\n",
            8000 + i,
            calls.join(", ")
        ));
    }
    (text, edges)
}

pub(crate) async fn run_positions(
    positions: Vec<usize>,
    make: impl Fn(usize) -> Project + Sync,
    want: BTreeMap<&'static str, usize>,
) -> Vec<String> {
    let aws = aws().await;
    let mut report = Vec::new();
    for batch in positions.chunks(4) {
        let projects: Vec<(usize, Project)> = batch.iter().map(|&k| (k, make(k))).collect();
        let upstream = &emulator();
        let resumed: Vec<(String, Proxy)> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                projects.iter().map(|(k, p)| scope.spawn(move || kill_then_resume(p, upstream, *k))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ((k, p), (stderr, proxy)) in projects.iter().zip(resumed) {
            let adopted = stderr.matches("adopted ").count();
            let got = census(&aws, p).await;
            assert_eq!(got, want, "K={k}: duplicates or missing resources after resuming");
            let down = p.secep_at(&proxy.url, &["down", "--yes"]);
            assert_eq!(down.code, 0, "K={k}: {}", down.stderr);
            report.push(format!("K={k}: adopted {adopted}, duplicates 0"));
        }
    }
    report
}

#[tokio::test]
async fn killing_up_at_every_create_of_the_seed_config_leaves_no_duplicate() {
    // Mutating calls of a fresh seed `up` (the account's ECS service-linked role already exists): 35 nodes, of which
    // 2 lookups make none; the VPC's second DNS attribute, the role's policy, the log retention, and the default
    // egress revoked from each of the 4 groups make 7 more; the VPC's default group makes 1 (its egress revoked:
    // moto's default group has no ingress rule, AWS's has one, which would make 2).
    let total = 40;
    let report = run_positions(
        (1..=total).collect(),
        |k| Project::from_shipped("secure-endpoints.toml", &format!("kill{k}")),
        expected(2, 2, 2),
    )
    .await;
    eprintln!("seed kill test:\n{}", report.join("\n"));
}

#[tokio::test]
async fn killing_up_of_a_ten_service_mesh_leaves_no_duplicate() {
    let (text, edges) = mesh(10);
    let positions = vec![1, 4, 8, 15, 25, 35, 45, 55, 62];
    let report =
        run_positions(positions, |k| Project::with_config(&format!("killmesh{k}"), &text), expected(10, edges, 2))
            .await;
    eprintln!("mesh kill test:\n{}", report.join("\n"));
}
