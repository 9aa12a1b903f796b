//! The `herald` binary: arguments -> configuration -> telemetry -> `herald::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald::config::{Config, Overrides};

/// mimalloc instead of glibc's malloc: the S1 profile spent 23 % of Herald's CPU in glibc's
/// malloc and free (`malloc_consolidate` and `unlink_chunk` alone 7 %), spread over sled's
/// node copies, hyper's buffers and JSON values (issue #9, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "herald", version, about = "FHIR R5 topic-based subscription broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the FHIR R5 API at http://ADDR/fhir (the default when no command is given).
    Serve(ServeArgs),
    /// Totals and subscriptions by status, from a running Herald.
    Status(ClientArgs),
    /// Subscriptions of a running Herald: list, show (with the delivery log), pause, resume.
    Subscriptions {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: SubscriptionsCli,
    },
    /// Topics of a running Herald and their subscriber counts.
    Topics {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TopicsCli,
    },
    /// Print the SHA-256 of an API key, as `auth.api_keys[].sha256` stores it.
    HashKey { key: String },
    /// The audit trail of a running Herald, oldest first: subscription and topic changes,
    /// deliveries, refused credentials, resends, dead letters, status changes.
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        /// Entries after this sequence number (default: the newest).
        #[arg(long)]
        after: Option<u64>,
        /// At most this many entries per page (at most 1000; default 100).
        #[arg(long)]
        limit: Option<usize>,
        /// Only entries about this subscription.
        #[arg(long)]
        subscription: Option<String>,
        /// Only this action (create, update, delete, status, dead-letter, resend, delivery,
        /// credentials-refused, withheld).
        #[arg(long)]
        action: Option<String>,
        /// Only entries by this actor (a client id, anonymous, herald, operator).
        #[arg(long)]
        actor: Option<String>,
        /// Keep printing new entries as they are recorded, until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Dead letters of a subscription on a running Herald: list, show one, replay.
    Dead {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: DeadCli,
    },
}

/// How the operator commands reach Herald.
#[derive(clap::Args)]
struct ClientArgs {
    /// FHIR base URL of the running Herald.
    #[arg(long, env = "HERALD_SERVER", default_value = "http://127.0.0.1:8080/fhir", global = true)]
    server: String,
    /// Admin token (`admin.token`) for the operator API; not needed on loopback without one.
    #[arg(long, env = "HERALD_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum SubscriptionsCli {
    /// Every subscription with its status, lag and failures.
    List,
    /// One subscription: state, pending events, dead letters, recent delivery attempts.
    Show { subscription: String },
    /// Turn a subscription off (delivery stops; events stay stored).
    Pause { subscription: String },
    /// Ask for a new handshake; then delivery resumes after the last delivered event.
    Resume { subscription: String },
}

#[derive(Subcommand)]
enum TopicsCli {
    /// Every topic with its subscriber count.
    List,
}

#[derive(Subcommand)]
enum DeadCli {
    /// List a subscription's dead letters.
    List { subscription: String },
    /// Show one dead letter (no header values, no payload).
    Show { subscription: String, number: u64 },
    /// Send dead letters again, in order, once the subscription is active; they leave the
    /// dead letters as their endpoint accepts them.
    Replay {
        subscription: String,
        /// First event number to replay (default: every dead letter).
        #[arg(long)]
        from: Option<u64>,
        /// Last event number to replay.
        #[arg(long)]
        until: Option<u64>,
        /// Wait, showing progress, until the replayed dead letters are delivered.
        #[arg(long)]
        wait: bool,
    },
}

/// Runs one operator command against a running Herald.
fn operator(client: ClientArgs, command: herald::cli::Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let http = herald::cli::Client::new(&client.server, client.token.as_deref())?;
        http.run(&command, client.json).await
    });
    match result {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `herald audit --follow`: prints pages of new entries as they come, polling once a second.
fn audit_follow(client: ClientArgs, mut cmd: herald::cli::AuditCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), herald::cli::CliError> = runtime.block_on(async {
        let http = herald::cli::Client::new(&client.server, client.token.as_deref())?;
        loop {
            let (body, next) = http.audit(&cmd).await?;
            let entries = body.get("entries").and_then(serde_json::Value::as_array).map_or(0, Vec::len);
            if entries > 0 {
                if client.json {
                    for e in body.get("entries").and_then(serde_json::Value::as_array).into_iter().flatten() {
                        println!("{e}");
                    }
                } else {
                    print!("{}", herald::cli::audit_table(&body));
                }
            }
            cmd.after = next.or(cmd.after);
            // A full page: more may be waiting; otherwise wait for new entries.
            if entries < cmd.limit.unwrap_or(100) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Address to listen on (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for the sled database (overrides store.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Allow delivery to loopback, private and link-local addresses.
    #[arg(long)]
    allow_private_endpoints: bool,
    /// Configuration file (TOML); see config/herald.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// FHIR version to serve: 4.0.1 (R4), 4.3.0 (R4B) or 5.0.0 (R5); overrides fhir.version.
    #[arg(long, value_name = "VERSION")]
    fhir_version: Option<String>,
    /// Serve anonymous requests on a non-loopback address when no authentication is configured.
    #[arg(long)]
    allow_anonymous: bool,
    /// Run as a cluster node on these NATS JetStream servers (comma-separated
    /// nats://HOST:PORT); every node of a cluster gets the same (overrides cluster.nats).
    #[arg(long, value_name = "URLS")]
    nats: Option<String>,
    /// This cluster node's name, unique in the cluster (overrides cluster.node_id).
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
}

/// Completes on the first SIGTERM or SIGINT (ctrl-c). The handlers are installed here, before
/// the listener is bound, so that a signal during start-up is a clean stop too.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn first(signal: std::io::Result<Signal>) {
            match signal {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        let (term, int) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        if let Err(e) = &term {
            eprintln!("herald: cannot listen for SIGTERM: {e}");
        }
        async move {
            tokio::select! { () = first(term) => {}, () = first(int) => {} }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// How a `serve` ends, as the process's exit status.
fn exit_code(outcome: Result<(), herald::RunError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // A data directory Herald must not serve (foreign, newer, or missing acknowledged
        // data): said plainly on stderr too, with its own exit code, for supervisors.
        Err(herald::RunError::Store(herald::store::StoreError::Refused(why))) => {
            tracing::error!(error = %why, "Herald refused its data directory");
            eprintln!("herald: {why}");
            ExitCode::from(3)
        }
        Err(e) => {
            tracing::error!(error = %herald::error_chain(&e), "Herald stopped");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::HashKey { key }) => {
            println!("{}", herald::auth::api_key_digest(&key));
            return ExitCode::SUCCESS;
        }
        Some(Command::Status(client)) => return operator(client, herald::cli::Command::Status),
        Some(Command::Subscriptions { client, command }) => {
            use herald::cli::Command as C;
            let cmd = match command {
                SubscriptionsCli::List => C::SubscriptionsList,
                SubscriptionsCli::Show { subscription } => C::SubscriptionShow { subscription },
                SubscriptionsCli::Pause { subscription } => C::SubscriptionPause { subscription },
                SubscriptionsCli::Resume { subscription } => C::SubscriptionResume { subscription },
            };
            return operator(client, cmd);
        }
        Some(Command::Topics { client, command: TopicsCli::List }) => return operator(client, herald::cli::Command::TopicsList),
        Some(Command::Dead { client, command }) => {
            use herald::cli::{Command as C, DeadCommand as D};
            let cmd = match command {
                DeadCli::List { subscription } => D::List { subscription },
                DeadCli::Show { subscription, number } => D::Show { subscription, number },
                DeadCli::Replay { subscription, from, until, wait } => D::Replay { subscription, from, until, wait },
            };
            return operator(client, C::Dead(cmd));
        }
        Some(Command::Audit { client, after, limit, subscription, action, actor, follow }) => {
            let cmd = herald::cli::AuditCommand { after, limit, subscription, action, actor };
            if follow {
                return audit_follow(client, cmd);
            }
            return operator(client, herald::cli::Command::Audit(cmd));
        }
        None => ServeArgs::default(),
    };
    let overrides = Overrides {
        listen: args.listen,
        fhir_version: args.fhir_version,
        data_dir: args.data_dir,
        allow_private_endpoints: args.allow_private_endpoints,
        allow_anonymous: args.allow_anonymous,
        nats: args.nats,
        node_id: args.node_id,
    };
    let cfg = match Config::load(args.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    herald::ops::telemetry::init(&cfg.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        let signal = shutdown_signal();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            signal.await;
            on_signal.cancel();
        });
        let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await.and_then(|l| l.into_std()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %cfg.server.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        if cfg.delivery.allow_private_endpoints {
            tracing::warn!("delivery to private and loopback addresses is allowed (--allow-private-endpoints)");
        }
        if cfg.clustered() {
            return exit_code(herald::cluster::serve(cfg, listener, stop).await);
        }
        // When the store fails while serving (a full disk), Herald stops and opens it again
        // from what is durable, on the same socket (connections wait in its backlog), after a
        // pause that grows while it keeps failing; it ends only on a signal.
        let mut pause = Duration::from_millis(500);
        let mut recovering = false;
        let mut recovering_since = std::time::Instant::now();
        let outcome = loop {
            let serving = match listener.try_clone().and_then(tokio::net::TcpListener::from_std) {
                Ok(l) => l,
                Err(e) => break Err(herald::RunError::Io(e)),
            };
            let began = std::time::Instant::now();
            let lost = match herald::run(cfg.clone(), serving, stop.clone().cancelled_owned()).await {
                Err(herald::RunError::StoreLost) => true,
                // While recovering, the store may not open yet either (still full, or sled
                // still holding the old files): keep trying.
                Err(herald::RunError::Store(e @ herald::store::StoreError::Engine(_))) if recovering => {
                    tracing::warn!(error = %herald::error_chain(&e), "the store cannot be opened yet");
                    // A thread of the failed run still holding the store's lock (a flush sled
                    // never finished) would hold it for good: past a minute, restart instead.
                    if e.is_locked() && recovering_since.elapsed() > Duration::from_secs(60) {
                        tracing::error!("the failed store is still locked by this process; exiting for a restart");
                        eprintln!("herald: the failed store is still locked; exiting (status {}) for a restart", herald::EXIT_STORE_STUCK);
                        return ExitCode::from(herald::EXIT_STORE_STUCK as u8);
                    }
                    true
                }
                other => break other,
            };
            if !lost || stop.is_cancelled() {
                break Ok(());
            }
            if !recovering || began.elapsed() > Duration::from_secs(60) {
                // The first failure, or it had recovered: a new failure starts over.
                pause = Duration::from_millis(500);
                recovering_since = std::time::Instant::now();
            }
            recovering = true;
            tracing::warn!(pause_ms = pause.as_millis() as u64, "reopening the store");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break Ok(()),
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        };
        exit_code(outcome)
    });
    // `run` bounded every step by server.shutdown_grace; a blocking task it left behind (a
    // flush that overran) is not waited for: the data it would have flushed is not needed for
    // crash safety.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}
