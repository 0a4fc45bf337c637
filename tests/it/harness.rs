//! A tiny harness: one emulator per test, a scratch folder per test, `secep` run as a user runs it, and
//! SDK clients for checking the live result independently of secep's own state file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const REGION: &str = "us-east-1";

/// The repository root (where `localstack/` and `config/` live).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The emulator this test runs against: `AWS_ENDPOINT_URL` if set (a licensed LocalStack, a moto the caller runs),
/// shared by every test; else a fresh moto of this test's own, started by `localstack/start.sh` on first use and
/// stopped (by its PID) when the test's thread ends. A fresh moto per test keeps tests from slowing each other:
/// moto grows slower as deleted clusters, services and endpoints pile up, and one Python process serves one core.
/// Threads a test spawns get the URL from [`emulator`] and pass it on (`Proxy::start_on`).
pub fn emulator() -> String {
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL") {
        return url.trim_end_matches('/').to_string();
    }
    OWN.with(|own| own.get_or_init(Emulator::start).url.clone())
}

thread_local! {
    static OWN: OnceLock<Emulator> = const { OnceLock::new() };
    static CLOCK: OnceLock<Proxy> = const { OnceLock::new() };
}

/// A moto started for one test.
struct Emulator {
    url: String,
    run_dir: tempfile::TempDir,
}

impl Emulator {
    fn start() -> Emulator {
        assert!(
            std::thread::current().name().is_some_and(|n| n != "main"),
            "emulator() outside a test's own thread: pass the URL to spawned threads"
        );
        let run_dir = tempfile::Builder::new().prefix("secep-it-").tempdir().unwrap();
        let out = Command::new("bash")
            .arg(repo().join("localstack/start.sh"))
            .args(["--port", "0", "--run-dir"])
            .arg(run_dir.path())
            .args(["--watch-pid", &std::process::id().to_string()])
            .output()
            .expect("run localstack/start.sh");
        assert!(out.status.success(), "localstack/start.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout).unwrap().lines().last().expect("start.sh prints the URL").trim().into();
        Emulator { url, run_dir }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("localstack/stop.sh"))
            .args(["--moto", "--run-dir"])
            .arg(self.run_dir.path())
            .stderr(Stdio::null())
            .status();
    }
}

/// AWS's durations (namespace 45 s, endpoints 90 s, rollouts 120 s, ...) times this: every rule acts, and a
/// deploy still takes about a second (localstack/README.md, "AWS's clock").
pub const CLOCK_SCALE: &str = "0.005";

/// The proxy every `Project::secep` goes through: AWS's rules (`--strict`) and its clock, scaled down, in front of
/// this test's emulator. Tests that need their own faults start their own [`Proxy`].
pub fn aws_clock() -> String {
    let upstream = emulator();
    CLOCK.with(|clock| clock.get_or_init(|| Proxy::start_on(&upstream, &["--strict"])).url.clone())
}

/// A unique, valid stack name per test (tests share one emulator and run in parallel).
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A scratch project folder with a config, in which `secep` runs.
pub struct Project {
    dir: tempfile::TempDir,
    pub stack: String,
    pub namespace: String,
}

/// Teardown guard: a test that failed, or left its stack recorded, does not leave it in the shared emulator for
/// the tests after it (a failed assertion used to skip the test's own `down`).
impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() || self.state_path().exists() {
            let _ = self.secep(&["down", "--yes", "--adopt", "--delete-logs"]);
        }
    }
}

/// What one `secep` run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "secep failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Project {
    /// A project from one of the shipped configs, renamed so that tests never collide.
    pub fn from_shipped(file: &str, prefix: &str) -> Project {
        Project::from_shipped_as(file, unique(prefix))
    }

    /// A project from a shipped config under the given (unique) stack name.
    pub fn from_shipped_as(file: &str, stack: String) -> Project {
        let text = std::fs::read_to_string(repo().join("config").join(file)).unwrap();
        let original = toml::from_str::<toml::Table>(&text).unwrap();
        let namespace = format!("{stack}.local");
        let text = text
            .replace(
                &format!("name = \"{}\"", original["stack"]["name"].as_str().unwrap()),
                &format!("name = \"{stack}\""),
            )
            .replace(
                &format!("name = \"{}\"", original["namespace"]["name"].as_str().unwrap()),
                &format!("name = \"{namespace}\""),
            );
        let p = Project { dir: tempfile::tempdir().unwrap(), stack, namespace };
        p.write_config(&text);
        p
    }

    /// A project with the given config text; `{stack}` and `{namespace}` are filled in.
    pub fn with_config(prefix: &str, template: &str) -> Project {
        let stack = unique(prefix);
        let namespace = format!("{stack}.local");
        let p = Project { dir: tempfile::tempdir().unwrap(), stack, namespace };
        p.write_config(&template.replace("{stack}", &p.stack).replace("{namespace}", &p.namespace));
        p
    }

    /// Writes a config template, `{stack}` and `{namespace}` filled in (as `with_config`).
    pub fn write_template(&self, template: &str) {
        self.write_config(&template.replace("{stack}", &self.stack).replace("{namespace}", &self.namespace));
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("secep.toml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join(".secep").join(format!("{}.state.json", self.stack))
    }

    /// Runs secep against the shared emulator, through the proxy that gives it AWS's rules and clock.
    pub fn secep(&self, args: &[&str]) -> Run {
        self.secep_at(&aws_clock(), args)
    }

    /// Runs secep in the project folder with test credentials and only the given endpoint.
    pub fn secep_at(&self, endpoint: &str, args: &[&str]) -> Run {
        let out = self.command(endpoint, args).output().expect("run secep");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The command `secep_at` runs, for tests that start it in the background or change its environment.
    pub fn command(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secep"));
        cmd.args(args)
            .args(["--endpoint-url", endpoint])
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", REGION)
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("no-aws-credentials"))
            .env("NO_COLOR", "1")
            // A teardown the emulator blocks fails within two minutes, naming the blocker, instead of waiting 15.
            .env("SECEP_DEPENDENCY_TIMEOUT", "120")
            // Never let the credential chain look for an instance metadata service: loopback traffic only.
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }
}

/// SDK clients for independent describe calls against the emulator. Every ECS `DescribeServices` here asks for the
/// tags: moto 5.2.5 keeps that choice in one dict shared by all requests, so a describe without it strips the tags
/// from a concurrent one of secep's, which then takes its own services for someone else's.
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub sd: aws_sdk_servicediscovery::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub s3: aws_sdk_s3::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
}

pub async fn aws() -> Aws {
    aws_at(&emulator()).await
}

pub async fn aws_at(endpoint: &str) -> Aws {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .test_credentials()
        .load()
        .await;
    Aws {
        ec2: aws_sdk_ec2::Client::new(&conf),
        ecs: aws_sdk_ecs::Client::new(&conf),
        sd: aws_sdk_servicediscovery::Client::new(&conf),
        iam: aws_sdk_iam::Client::new(&conf),
        logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
        s3: aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build()),
        elb: aws_sdk_elasticloadbalancingv2::Client::new(&conf),
    }
}

/// An ACM certificate in the emulator for `domain` (boto3 from the emulator's venv: the Rust side never calls ACM).
pub fn certificate(domain: &str) -> String {
    let script = format!(
        "import boto3; c = boto3.client('acm', endpoint_url='{}', region_name='{REGION}', aws_access_key_id='test', aws_secret_access_key='test'); print(c.request_certificate(DomainName='{domain}')['CertificateArn'])",
        emulator()
    );
    let out = Command::new(repo().join("localstack/.venv/bin/python")).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "request a certificate: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn ec2_filter(name: &str, value: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder().name(name).values(value).build()
}

/// A fidelity proxy (localstack/proxy.py) in front of the shared emulator, owned by one test and stopped on drop.
pub struct Proxy {
    child: std::process::Child,
    pub url: String,
}

impl Proxy {
    /// Starts a proxy with the given extra flags (e.g. `--strict`). Rollouts always take AWS's time scaled by
    /// [`CLOCK_SCALE`] (and complete, or fail as they would), unless the flags set the clock themselves.
    pub fn start(flags: &[&str]) -> Proxy {
        Proxy::start_on(&emulator(), flags)
    }

    /// [`Proxy::start`] in front of the given emulator (from a thread the test spawned).
    pub fn start_on(upstream: &str, flags: &[&str]) -> Proxy {
        use std::io::BufRead;
        let python = repo().join("localstack/.venv/bin/python");
        let mut child = Command::new(python)
            .arg(repo().join("localstack/proxy.py"))
            .args(["--upstream", upstream, "--port", "0", "-q", "--watch-pid", &std::process::id().to_string()])
            .args(if flags.iter().any(|f| f.starts_with("--clock-scale")) {
                vec![]
            } else {
                vec!["--clock-scale", CLOCK_SCALE, "--rule", "rollout"]
            })
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start localstack/proxy.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("http://127.0.0.1:"), "proxy did not print its URL: {line:?}");
        Proxy { child, url: line.trim().to_string() }
    }

    /// Changes the running proxy's config (the JSON of `POST /_proxy/config`).
    pub fn configure(&self, json: &str) {
        let (status, body) = http(&self.url, "POST", "/_proxy/config", json);
        assert_eq!(status, 200, "proxy config {json} refused: {body}");
    }

    /// The call log: one JSON object per call.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        let (status, body) = http(&self.url, "GET", "/_proxy/calls", "");
        assert_eq!(status, 200);
        body.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange with a loopback server: (status, body).
fn http(base: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
