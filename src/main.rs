use apigw::config::{settings_help, Config};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

// mimalloc: per-thread free lists without glibc's arena locking; the data
// plane allocates a few small objects per request (see docs/performance.md
// and src/alloc.rs).
#[global_allocator]
static GLOBAL: apigw::dataplane::alloc::Mimalloc = apigw::dataplane::alloc::Mimalloc;

/// apigw: an API gateway reproducing the Samsung Cloud Platform API Gateway
/// (data plane on invoke URLs + the SCP OpenAPI v1.2 management API).
#[derive(Parser)]
#[command(version, about, after_help = settings_help())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: data plane and management API.
    #[command(after_help = settings_help())]
    Serve {
        /// TOML config file (see SETTINGS below); every setting can also
        /// be set with an APIGW_ environment variable.
        #[arg(short, long, env = "APIGW_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (file + environment) and exit.
    Config {
        #[arg(short, long, env = "APIGW_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apigw: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config { config } => {
            let cfg = Config::load(config.as_deref())?;
            print!("{}", cfg.masked().to_toml()?);
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = Config::load(config.as_deref())?;
            init_tracing(&cfg.log);
            if !cfg.data.transparent_huge_pages {
                if let Err(e) = apigw::dataplane::alloc::disable_transparent_huge_pages() {
                    tracing::warn!(error = %e, "could not turn transparent huge pages off");
                }
            }
            // Per-worker runtimes: the main runtime serves only the
            // management API and the flushers, on one thread; each data
            // worker runs its own (see server::serve). Otherwise one
            // work-stealing runtime serves everything.
            let mut rt = if cfg.data.per_worker_runtimes() {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(cfg.data.workers());
                b
            };
            rt.enable_all();
            rt.build()?.block_on(apigw::server::serve(cfg))
        }
    }
}

fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
