//! What each command prints, as a user sees it: `insta` snapshots of `plan`, `up`, `status` and `down` for the seed
//! config. Ids, times and counts that differ from run to run are masked with strings of the same width, so the
//! snapshots still show the columns lining up (`mask`). `--parallelism 1` makes the order of the step lines the walk's.
//! Update with `INSTA_UPDATE=always cargo test snapshots` and review the diff.

use crate::harness::{Project, Proxy};

/// Id prefixes of the resources the seed config makes: what follows one of them (up to a non-alphanumeric) is
/// the random part of an id.
const ID_PREFIXES: &[&str] = &[
    "vpc-",
    "subnet-",
    "sg-",
    "sgr-",
    "rtb-",
    "rtbassoc-",
    "vpce-",
    "pl-",
    "igw-",
    "nat-",
    "eipalloc-",
    "ns-",
    "srv-",
];

/// Masks what differs from run to run with characters of the same width, so the columns still line up: the random
/// part of ids and the stack's unique number; times (`0.27s`, at line ends) become `#.##s` and the run's call
/// counts go.
fn mask(text: &str, stack: &str) -> String {
    let text = text.replace(stack, "snap-NNNNNNN");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    'scan: while let Some(c) = rest.chars().next() {
        let at_word = out.chars().last().is_none_or(|p| !p.is_ascii_alphanumeric());
        if at_word {
            for prefix in ID_PREFIXES {
                if let Some(tail) = rest.strip_prefix(prefix) {
                    let n = tail.chars().take_while(char::is_ascii_alphanumeric).count();
                    if n >= 8 {
                        out.push_str(prefix);
                        out.push_str(&"x".repeat(n));
                        rest = &tail[n..];
                        continue 'scan;
                    }
                }
            }
            // A duration: digits, a dot, two digits, `s`.
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let after = &rest[digits..];
            if digits > 0
                && after.len() >= 4
                && after.starts_with('.')
                && after[1..3].chars().all(|c| c.is_ascii_digit())
                && after[3..].starts_with('s')
            {
                // Always `#.##s`: a slow step must not change the snapshot (times end their lines).
                out.push_str("#.##s");
                rest = &after[4..];
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    // The totals vary with the scheduler (propagation retries): the whole parenthesis goes.
    out.lines()
        .map(|l| match (l.find(" API calls").and_then(|e| l[..e].rfind('(')), l.rfind(')')) {
            (Some(open), Some(close)) if open < close => format!("{}(calls){}", &l[..open], &l[close + 1..]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A unique stack name of one width (the pid, zero-padded), so that its mask keeps the width across runs too.
fn project() -> Project {
    Project::from_shipped_as("secure-endpoints.toml", format!("snap-{:07}", std::process::id() % 10_000_000))
}

fn snapshot(p: &Project, name: &str, text: &str) {
    // Rollout progress lines depend on when a poll lands: only the outcome lines are kept.
    let text: String =
        text.lines().filter(|l| !l.trim_start().starts_with("rolling out")).collect::<Vec<_>>().join("\n");
    insta::assert_snapshot!(name, mask(&text, &p.stack));
}

#[test]
fn plan_up_status_and_down_print_what_a_user_reads() {
    let proxy = Proxy::start(&[]);
    let p = project();
    let plan = p.secep_at(&proxy.url, &["plan"]);
    assert_eq!(plan.code, 2);
    snapshot(&p, "plan_of_a_new_stack", &plan.stdout);

    let up = p.secep_at(&proxy.url, &["up", "--parallelism", "1"]).success();
    snapshot(&p, "up_of_a_new_stack", &format!("{}{}", up.stderr, up.stdout));

    let again = p.secep_at(&proxy.url, &["up"]).success();
    snapshot(&p, "up_again", &again.stderr);

    let status = p.secep_at(&proxy.url, &["status"]);
    assert_eq!(status.code, 0);
    snapshot(&p, "status_in_sync", &status.stdout);

    let down = p.secep_at(&proxy.url, &["down", "--yes", "--parallelism", "1"]).success();
    snapshot(&p, "down", &down.stderr);
}
