//! The `herald` binary: arguments -> configuration -> telemetry -> `herald::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald::config::{Config, Overrides};

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
    /// Dead letters of a subscription on a running Herald: list, show one, replay.
    Dead(DeadArgs),
}

#[derive(clap::Args)]
struct DeadArgs {
    /// FHIR base URL of the running Herald.
    #[arg(long, env = "HERALD_SERVER", default_value = "http://127.0.0.1:8080/fhir", global = true)]
    server: String,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: DeadCli,
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

fn dead(args: DeadArgs) -> ExitCode {
    use herald::cli::{Client, DeadCommand};
    let cmd = match args.command {
        DeadCli::List { subscription } => DeadCommand::List { subscription },
        DeadCli::Show { subscription, number } => DeadCommand::Show { subscription, number },
        DeadCli::Replay { subscription, from, until, wait } => DeadCommand::Replay { subscription, from, until, wait },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let client = Client::new(&args.server)?;
        client.dead(&cmd, args.json).await
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Dead(args)) => return dead(args),
        None => ServeArgs::default(),
    };
    let overrides = Overrides { listen: args.listen, data_dir: args.data_dir, allow_private_endpoints: args.allow_private_endpoints };
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
        let shutdown = shutdown_signal();
        let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %cfg.server.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        if cfg.delivery.allow_private_endpoints {
            tracing::warn!("delivery to private and loopback addresses is allowed (--allow-private-endpoints)");
        }
        match herald::run(cfg, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                tracing::error!(error = %msg, "Herald stopped");
                ExitCode::FAILURE
            }
        }
    });
    // `run` bounded every step by server.shutdown_grace; a blocking task it left behind (a
    // flush that overran) is not waited for: the data it would have flushed is not needed for
    // crash safety.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}
