//! The command lines of the `api` and `worker` binaries.
// Printing results is what a command line is for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel_config::Settings;
use keel_infrastructure::migrate;
use keel_telemetry::LogTarget;
use tokio_util::sync::CancellationToken;

use crate::api::ApiApplication;
use crate::seed;
use crate::signals::shutdown_signal;
use crate::startup::open_database;
use crate::worker::WorkerApplication;

/// Exit status for configuration errors (distinct from runtime failures).
const EXIT_CONFIG: u8 = 2;

/// `api`: Keel's HTTP API and its administrative commands.
#[derive(Debug, Parser)]
#[command(
    name = "api",
    version = crate::LONG_VERSION,
    about = "Keel's HTTP API (serves by default)"
)]
pub struct ApiCli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<ApiCommand>,
}

/// `api` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Serve HTTP until SIGTERM or SIGINT.
    Serve,
    /// Apply, revert or inspect database migrations (`up` when no action is given).
    Migrate {
        /// The migration action.
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Create example data; running it again changes nothing.
    Seed,
    /// Create an administrator (the first one, or another).
    CreateAdmin {
        /// The administrator's email address.
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print the OpenAPI document (JSON) to standard output; needs no configuration.
    Openapi,
    /// Inspect the configuration.
    Config {
        /// The configuration action.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Work with the mail templates.
    Mail {
        /// The mail action.
        #[command(subcommand)]
        action: MailAction,
    },
}

/// `api mail` actions.
#[derive(Debug, Subcommand)]
pub enum MailAction {
    /// Render a mail with its sample values (or `--context`) and write it as an `.eml` file.
    Preview {
        /// The mail, e.g. `identity/password_reset`; without one, the mails there are are listed.
        template: Option<String>,
        /// A JSON file with the values to render with instead of the sample.
        #[arg(long)]
        context: Option<PathBuf>,
        /// Where to write it (default: `<mail.dir>/preview-<mail>.eml`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The recipient shown.
        #[arg(long, default_value = "preview@example.com")]
        to: String,
    },
}

/// `api migrate` actions.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the most recent migrations.
    Down {
        /// How many to revert.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
    /// Drop every table and migrate from scratch (destroys all data).
    Fresh {
        /// Required outside `local` and `test`.
        #[arg(long)]
        force: bool,
    },
}

/// `api config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

/// `worker`: Keel's background worker.
#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version = crate::LONG_VERSION,
    about = "Keel's background worker (runs by default)"
)]
pub struct WorkerCli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<WorkerCommand>,
}

/// `worker` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Run background work until SIGTERM or SIGINT.
    Run,
    /// Inspect and manage stored jobs.
    Jobs {
        /// What to do.
        #[command(subcommand)]
        action: JobsAction,
    },
}

/// `worker jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// List jobs, newest first.
    List {
        /// enqueued, pending, running, retrying, succeeded or dead.
        #[arg(long)]
        state: Option<String>,
        /// high, default or low.
        #[arg(long)]
        queue: Option<String>,
        /// A job kind, e.g. mail.send.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Put a dead job back in its queue with fresh attempts.
    Retry {
        /// The job id.
        id: String,
    },
    /// Delete finished (succeeded or dead) jobs older than a duration, e.g. `7d` or `12h`.
    Purge {
        /// Finished longer ago than this.
        #[arg(long)]
        older_than: String,
    },
}

/// What a command needs from the configuration and the telemetry.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// A long-running process exporting its spans as service `<app.name>-<name>`.
    Serve(&'static str),
    /// A tool: logs to stderr, no span export.
    Tool,
    /// A tool that only touches the database (`api migrate`): nothing else is checked.
    DatabaseTool,
}

/// Loads configuration and starts logging and tracing; on failure prints why and returns the
/// exit code. Keep the guard until the command ends: it flushes the last spans.
fn prepare(purpose: Purpose) -> Result<(Settings, keel_telemetry::TraceGuard), ExitCode> {
    keel_telemetry::set_build_info(env!("CARGO_PKG_VERSION"), crate::GIT_SHA);
    let loaded = match purpose {
        Purpose::DatabaseTool => Settings::load_database_only(),
        Purpose::Serve(_) | Purpose::Tool => Settings::load(),
    };
    let settings = loaded.map_err(|error| {
        eprintln!("{error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let guard = match purpose {
        Purpose::Serve(process) => {
            keel_telemetry::init(&settings, LogTarget::Stdout, process, true)
        }
        Purpose::Tool | Purpose::DatabaseTool => {
            keel_telemetry::init(&settings, LogTarget::Stderr, "cli", false)
        }
    }
    .map_err(|error| {
        eprintln!("invalid configuration:\n  - {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    install_panic_hook();
    Ok((settings, guard))
}

/// Panics are logged as events (with the request id of the request that panicked, when
/// there is one) instead of raw text on stderr.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        tracing::error!(panic = %info, %backtrace, "panic");
    }));
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "stopped with an error");
            eprintln!("error: {error:#}");
            // Values that load but cannot be used (a cron expression, a mail sender) are
            // configuration errors too, with the same exit code as the loader's.
            let configuration = error.chain().any(|cause| {
                cause.is::<keel_worker::schedules::ScheduleError>()
                    || cause.is::<keel_infrastructure::mail::MailConfigError>()
                    || cause.is::<keel_kernel::mail::TemplateError>()
                    || cause.is::<keel_infrastructure::storage::StorageConfigError>()
            });
            if configuration {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs the `api` binary.
pub async fn run_api(cli: ApiCli) -> ExitCode {
    let command = cli.command.unwrap_or(ApiCommand::Serve);
    if matches!(command, ApiCommand::Openapi) {
        print!("{}", keel_api::openapi::document_json());
        return ExitCode::SUCCESS;
    }

    let purpose = match command {
        ApiCommand::Serve => Purpose::Serve("api"),
        ApiCommand::Migrate { .. } => Purpose::DatabaseTool,
        _ => Purpose::Tool,
    };
    let (settings, _traces) = match prepare(purpose) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    finish(match command {
        ApiCommand::Serve => serve(settings).await,
        ApiCommand::Migrate { action } => {
            run_migrate(&settings, action.unwrap_or(MigrateAction::Up)).await
        }
        ApiCommand::Seed => run_seed(&settings).await,
        ApiCommand::Openapi => Ok(()),
        ApiCommand::CreateAdmin {
            email,
            password_stdin,
        } => create_admin(&settings, &email, password_stdin).await,
        ApiCommand::Mail {
            action:
                MailAction::Preview {
                    template,
                    context,
                    out,
                    to,
                },
        } => preview_mail(&settings, template, context, out, &to),
        ApiCommand::Config {
            action: ConfigAction::Check,
        } => {
            print!("{}", settings.to_redacted_toml());
            println!(
                "# configuration is valid (APP_ENV={})",
                settings.environment
            );
            Ok(())
        }
    })
}

/// Runs the `worker` binary.
pub async fn run_worker(cli: WorkerCli) -> ExitCode {
    match cli.command.unwrap_or(WorkerCommand::Run) {
        WorkerCommand::Run => {
            let (settings, _traces) = match prepare(Purpose::Serve("worker")) {
                Ok(prepared) => prepared,
                Err(code) => return code,
            };
            finish(work(settings).await)
        }
        WorkerCommand::Jobs { action } => {
            let (settings, _traces) = match prepare(Purpose::Tool) {
                Ok(prepared) => prepared,
                Err(code) => return code,
            };
            finish(manage_jobs(&settings, action).await)
        }
    }
}

async fn manage_jobs(settings: &Settings, action: JobsAction) -> anyhow::Result<()> {
    use keel_jobs::JobRepository;
    use keel_kernel::jobs::JobId;
    let db = open_database(settings, "keel-worker-cli").await?;
    let store = match crate::state::job_queues(settings).await? {
        Some(queues) => keel_infrastructure::jobs::JobStore::new(&db).on_redis(queues),
        None => keel_infrastructure::jobs::JobStore::new(&db),
    };
    match action {
        JobsAction::List {
            state,
            queue,
            kind,
            limit,
        } => {
            // The list language of `GET /admin/jobs`, so the CLI refuses what the api refuses.
            let limit = limit.clamp(1, 100).to_string();
            let mut pairs = vec![("limit", limit.as_str())];
            for (name, value) in [("state", &state), ("queue", &queue), ("kind", &kind)] {
                if let Some(value) = value {
                    pairs.push((name, value.as_str()));
                }
            }
            let query = keel_kernel::ListQuery::parse(&keel_jobs::LIST_SPEC, pairs)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let page = store.list(&query).await?;
            let (jobs, total) = (page.items, page.total);
            println!(
                "{:<36}  {:<24}  {:<7}  {:<9}  {:>8}  created",
                "id", "kind", "queue", "state", "attempts"
            );
            for job in &jobs {
                println!(
                    "{:<36}  {:<24}  {:<7}  {:<9}  {:>4}/{:<3}  {}",
                    job.id,
                    job.kind,
                    job.queue.as_str(),
                    job.state.as_str(),
                    job.attempts,
                    job.max_attempts,
                    job.created_at.format("%Y-%m-%d %H:%M:%S"),
                );
            }
            println!("{} of {total} shown", jobs.len());
        }
        JobsAction::Retry { id } => {
            let id: JobId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("`{id}` is not a job id (a UUID)"))?;
            let Some(job) = store.get(id).await? else {
                anyhow::bail!("no job {id}");
            };
            if !store.retry(id).await? {
                anyhow::bail!(
                    "job {id} is {}; only dead jobs can be retried",
                    job.state.as_str()
                );
            }
            println!("job {id} is pending again");
        }
        JobsAction::Purge { older_than } => {
            let age = humantime::parse_duration(&older_than).with_context(|| {
                format!("--older-than: `{older_than}` is not a duration like 7d or 12h")
            })?;
            let before = chrono::Utc::now() - chrono::Duration::from_std(age)?;
            let purged = store.purge_finished(before).await?;
            println!("purged {purged} finished jobs older than {older_than}");
        }
    }
    db.close().await?;
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = ApiApplication::build(settings).await?;
    let handle = app.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tokio::spawn(force_on_second_signal());
        handle.shutdown().await;
    });
    app.run_until_stopped().await
}

/// A second SIGTERM or Ctrl-C during the graceful stop means "now": exit 130 without waiting
/// for the drain, as shells and orchestrators expect.
async fn force_on_second_signal() {
    shutdown_signal().await;
    tracing::warn!("second shutdown signal: exiting without waiting");
    std::process::exit(130);
}

async fn work(settings: Settings) -> anyhow::Result<()> {
    let app = WorkerApplication::build(settings).await?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tokio::spawn(force_on_second_signal());
        trigger.cancel();
    });
    app.run(shutdown).await
}

async fn run_migrate(settings: &Settings, action: MigrateAction) -> anyhow::Result<()> {
    let database = &settings.database;
    match action {
        MigrateAction::Up => {
            let applied = migrate::apply_pending(database).await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for name in applied {
                println!("applied  {name}");
            }
        }
        MigrateAction::Down { steps } => {
            let reverted = migrate::rollback(database, steps).await?;
            if reverted.is_empty() {
                println!("nothing to revert");
            }
            for name in reverted {
                println!("reverted {name}");
            }
        }
        MigrateAction::Status => {
            for migration in migrate::status(database).await? {
                let state = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{state:<8} {}", migration.name);
            }
        }
        MigrateAction::Fresh { force } => {
            let disposable = matches!(
                settings.environment,
                keel_config::Environment::Local | keel_config::Environment::Test
            );
            anyhow::ensure!(
                disposable || force,
                "`migrate fresh` destroys every table; pass --force to run it in {}",
                settings.environment
            );
            let applied = migrate::fresh(database).await?;
            println!(
                "dropped every table and applied {} migration(s)",
                applied.len()
            );
        }
    }
    Ok(())
}

async fn create_admin(
    settings: &Settings,
    email: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        anyhow::ensure!(
            std::io::IsTerminal::is_terminal(&std::io::stdin()),
            "no terminal to prompt on: pass --password-stdin and pipe the password"
        );
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password again: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        first
    };
    let db = open_database(settings, "keel-admin").await?;
    let state = crate::build_state(&db, settings).await?;
    crate::state::prepare(&state, settings).await?;
    let admin = state
        .get::<keel_identity::Identity>()?
        .for_system()
        .create_admin(email, &password)
        .await
        .map_err(keel_kernel::DomainError::from)?;
    db.close().await.ok();
    println!("created administrator {} ({})", admin.email, admin.id);
    Ok(())
}

/// `api mail preview`: renders a mail through the configured templates and writes the `.eml`.
fn preview_mail(
    settings: &Settings,
    template: Option<String>,
    context: Option<PathBuf>,
    out: Option<PathBuf>,
    to: &str,
) -> anyhow::Result<()> {
    use keel_infrastructure::mail_templates::FileTemplates;
    use keel_kernel::mail::{Email, MailTemplates as _};

    let templates = FileTemplates::load(Path::new(&settings.mail.templates_dir))
        .context("loading the mail templates (mail.templates_dir)")?;
    let samples: Vec<(&str, serde_json::Value)> = FileTemplates::samples().collect();
    let Some(template) = template else {
        println!("mails (api mail preview <mail>):");
        for (name, _) in &samples {
            println!("  {name}");
        }
        return Ok(());
    };
    let values = match context {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?,
        None => samples
            .iter()
            .find(|(name, _)| *name == template)
            .map(|(_, values)| values.clone())
            .with_context(|| {
                format!(
                    "no mail `{template}` (there are: {}); pass --context for a mail of your own",
                    samples
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
    };
    let email = Email::rendered(to, templates.render(&template, &values)?);
    let mailer = keel_infrastructure::mail::LettreMailer::new(&settings.mail)?;
    let eml = mailer
        .eml(&email)
        .map_err(|error| anyhow::anyhow!("building the message: {error}"))?;
    let path = out.unwrap_or_else(|| {
        Path::new(&settings.mail.dir).join(format!("preview-{}.eml", template.replace('/', "-")))
    });
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, eml).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

async fn run_seed(settings: &Settings) -> anyhow::Result<()> {
    let db = open_database(settings, "keel-seed").await?;
    let state = crate::build_state(&db, settings).await?;
    crate::state::prepare(&state, settings).await?;
    let report = seed::run(&state.get()?)
        .await
        .map_err(keel_kernel::DomainError::from)
        .context("seeding")?;
    db.close().await.ok();
    for version in &report.created {
        println!("created  release note {version}");
    }
    for version in &report.skipped {
        println!("exists   release note {version}");
    }
    Ok(())
}
