//! The thin CLI: flags, logging, exit codes. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use secep::aws::{DEFAULT_PARALLELISM, Target};
use secep::commands::{self, Common, exit};
use secep::graph::StopFlag;
use secep::output::Console;
use secep::state::Location;

/// Deploy a secure microservice topology (VPC, private subnets, Cloud Map, per-service security groups, Fargate)
/// straight from AWS APIs.
#[derive(Debug, Parser)]
#[command(name = "secep", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags that work before or after the subcommand, as with the aws CLI and terraform.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Stack config file (TOML)
    #[arg(short, long, global = true, default_value = "secep.toml", value_name = "FILE")]
    config: PathBuf,
    /// Where the state is: a file, or s3://BUCKET/KEY for a team [default: the config's [state] url, else
    /// .secep/<stack>.state.json]
    #[arg(long, global = true, value_name = "PATH|s3://BUCKET/KEY", value_parser = parse_location)]
    state: Option<Location>,
    /// AWS profile from ~/.aws/config (else AWS_PROFILE or the default chain)
    #[arg(long, global = true)]
    profile: Option<String>,
    /// AWS region (else [stack] region in the config, else AWS_REGION or the profile)
    #[arg(long, global = true)]
    region: Option<String>,
    /// Send all AWS calls to this endpoint, e.g. a local emulator (else AWS_ENDPOINT_URL)
    #[arg(long, global = true, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Attempts per AWS call, retries of throttling and 5xx errors included
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    max_attempts: Option<u32>,
    /// Break the state lock of a hung or dead secep (only when you are sure it is not running)
    #[arg(long, global = true)]
    force_unlock: bool,
    /// Print a machine-readable result on stdout
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (-v: secep debug, -vv: SDK too); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the stack, or whatever of it does not exist yet (idempotent)
    Up {
        /// Most steps and AWS calls in flight at once: the ceiling of the adaptive window, which halves when AWS throttles
        #[arg(long, default_value_t = DEFAULT_PARALLELISM as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
        parallelism: u16,
        /// Longest wait for an asynchronous Cloud Map operation, in seconds
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        operation_timeout: u64,
        /// Replace what AWS cannot change in place (VPC CIDR, subnets, namespace name) and everything built on it
        #[arg(long)]
        allow_replace: bool,
        /// Longest wait, while removing what the config dropped, for a resource AWS still holds (lingering Fargate
        /// ENIs, draining services), in seconds
        #[arg(long, default_value_t = 900, value_name = "SECONDS", env = "SECEP_DEPENDENCY_TIMEOUT")]
        dependency_timeout: u64,
        /// Longest wait for the services this run created or changed to finish their rollout, in seconds
        #[arg(long, default_value_t = 900, value_name = "SECONDS", env = "SECEP_WAIT_TIMEOUT")]
        wait_timeout: u64,
        /// Return once the API calls are made, without waiting for the rollouts
        #[arg(long)]
        no_wait: bool,
        /// Take over resources tagged for the stack that another state file made (a lost state file), instead of
        /// refusing
        #[arg(long)]
        adopt: bool,
    },
    /// Show every resource as desired (config), recorded (state) and live (AWS), service health, and who can reach
    /// whom according to the live security group rules; exit 2 when anything differs
    Status,
    /// Show what `up` would do, without changing anything; exit 2 when there is something to do
    Plan,
    /// Delete everything the stack created, in reverse dependency order; never touches what it does not own
    Down {
        /// Most steps and AWS calls in flight at once: the ceiling of the adaptive window, which halves when AWS throttles
        #[arg(long, default_value_t = DEFAULT_PARALLELISM as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
        parallelism: u16,
        /// Do not ask for confirmation (required when not on a terminal)
        #[arg(short, long)]
        yes: bool,
        /// Also delete resources tagged for the stack that another state file made (a lost state file); those this
        /// state file's runs made are deleted without it, recorded or not
        #[arg(long)]
        adopt: bool,
        /// Also delete the stack's CloudWatch log group and its logs (kept by default)
        #[arg(long)]
        delete_logs: bool,
        /// Longest wait for an asynchronous Cloud Map operation, in seconds
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        operation_timeout: u64,
        /// Longest wait for a resource AWS still holds (lingering Fargate ENIs, draining services), in seconds
        #[arg(long, default_value_t = 900, value_name = "SECONDS", env = "SECEP_DEPENDENCY_TIMEOUT")]
        dependency_timeout: u64,
    },
    /// Print the least-privilege IAM policy the caller needs for this config (JSON, on stdout); needs no AWS access
    IamPolicy,
    /// Show or move the state (a local file or an S3 object)
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Where the state is, its stack, lineage, serial, history, encryption and lock holder
    Show,
    /// Move the state to another place (a path or s3://BUCKET/KEY) under both locks; the old one is removed once
    /// the copy reads back the same
    Migrate {
        /// Where the state goes
        #[arg(long, value_name = "PATH|s3://BUCKET/KEY", value_parser = parse_location)]
        to: Location,
    },
}

fn parse_location(text: &str) -> Result<Location, String> {
    Location::parse(text)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::ERROR } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    ExitCode::from(runtime.block_on(run(cli)))
}

async fn run(cli: Cli) -> u8 {
    let g = cli.global;
    let parallelism = match cli.command {
        Command::Up { parallelism, .. } | Command::Down { parallelism, .. } => Some(usize::from(parallelism)),
        Command::Status | Command::Plan | Command::State(_) | Command::IamPolicy => None,
    };
    let common = Common {
        config: g.config,
        state: g.state,
        target: Target {
            profile: g.profile,
            region: g.region,
            endpoint_url: g.endpoint_url,
            max_attempts: g.max_attempts,
            parallelism,
        },
        force_unlock: g.force_unlock,
    };
    let console = Console::new(g.json);
    let stop = StopFlag::default();
    watch_ctrl_c(stop.clone());
    let result = match cli.command {
        Command::Up { operation_timeout, allow_replace, dependency_timeout, wait_timeout, no_wait, adopt, .. } => {
            let args = commands::up::UpArgs {
                operation_timeout: Duration::from_secs(operation_timeout),
                dependency_timeout: Duration::from_secs(dependency_timeout),
                allow_replace,
                wait_timeout: (!no_wait).then(|| Duration::from_secs(wait_timeout)),
                adopt,
            };
            commands::up::run(&common, &args, &console, &stop).await
        }
        Command::Status => commands::inspect::status(&common, &console).await,
        Command::Plan => commands::inspect::plan(&common, &console).await,
        Command::Down { yes, adopt, delete_logs, operation_timeout, dependency_timeout, .. } => {
            let args = commands::down::DownArgs {
                yes,
                adopt,
                delete_logs,
                operation_timeout: Duration::from_secs(operation_timeout),
                dependency_timeout: Duration::from_secs(dependency_timeout),
            };
            commands::down::run(&common, &args, &console, &stop).await
        }
        Command::IamPolicy => commands::iam_policy::run(&common),
        Command::State(StateCommand::Show) => commands::state::show(&common, &console).await,
        Command::State(StateCommand::Migrate { to }) => commands::state::migrate(&common, &to, &console).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            console.finish_progress();
            console.error(&e);
            exit::ERROR
        }
    }
}

/// Ctrl-C stops new work; calls in flight finish and are recorded before the command exits with 130.
fn watch_ctrl_c(stop: StopFlag) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing the calls in flight and recording them (Ctrl-C again to abort)");
            stop.stop();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    });
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "secep=warn",
        1 => "secep=debug",
        _ => {
            "secep=trace,aws_config=debug,aws_smithy_runtime=debug,aws_sdk_ec2=debug,aws_sdk_ecs=debug,aws_sdk_servicediscovery=debug"
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
