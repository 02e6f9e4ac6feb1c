//! From the command line to checked configurations: every option value is validated and
//! turned into the configuration of the module that uses it, before any side effect. Only this
//! module, `cli` and `app` know clap's types.

use std::path::PathBuf;
use std::time::Duration;

use crate::akool::{ClientConfig, Credentials};
use crate::cli::{ApiArgs, Cli, Command, DbArgs, JobDefaults, RetryArgs, RunArgs};
use crate::exit::Fatal;
use crate::manifest::Defaults;
use crate::objstore::Destination;
use crate::retry::RetryRequest;
use crate::run::policy::RetryPolicy;
use crate::run::poll::PollPolicy;
use crate::run::{RunConfig, Settings};

impl RunConfig {
    /// Turn the command line into a checked configuration.
    pub fn from_args(args: &RunArgs, db: PathBuf, interactive: bool) -> Result<RunConfig, Fatal> {
        let client = client_config(&args.api)?;
        // Each value was checked by its parser (`flags`), and pairs by `check_usage`.
        let limits = &args.limits;
        let out = args.out.to_string_lossy();
        let destination = if out.starts_with("s3://") {
            let destination = Destination::parse(&out).map_err(|error| {
                Fatal::new(format!("--out {out:?} is not a usable destination"))
                    .cause(error)
                    .hint("write it as s3://BUCKET/PREFIX/ (or give a folder)")
            })?;
            Some(destination)
        } else {
            None
        };
        let settings = Settings {
            out_dir: args.out.clone(),
            bucket: None,
            db_path: db.clone(),
            concurrency: limits.concurrency as usize,
            downloads: limits.downloads as usize,
            rate: limits.rate,
            burst: limits.burst,
            retry: RetryPolicy {
                give_up_after: limits.give_up_after,
                max_attempts: limits.max_attempts,
                backoff_base: args.polling.backoff_base,
                backoff_cap: args.polling.backoff_cap,
            },
            multi_subject: args.jobs.multi_subject,
            on_ambiguous: args.on_ambiguous,
            reuse_renders: !args.no_reuse_renders,
            max_download_bytes: limits.max_download_bytes,
            analysis_poll: PollPolicy {
                min: args.polling.poll_min,
                max: args.polling.poll_max,
                hint: args.polling.analysis_guess,
            },
            render_poll: PollPolicy {
                min: args.polling.poll_min,
                max: args.polling.poll_max,
                hint: args.polling.render_guess,
            },
            cooldown_cap: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(60),
            tick: Duration::from_secs(2),
            max_runtime: args.max_runtime,
            interactive: interactive && !args.no_progress,
            summary_every: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        };
        Ok(RunConfig {
            manifest: args.manifest.clone(),
            db,
            client,
            defaults: defaults(&args.jobs),
            strict: args.strict,
            replace_changed: args.replace_changed,
            preflight: !args.no_preflight,
            recheck: args.recheck,
            destination,
            shard: args.shard,
            journal: true,
            settings,
        })
    }
}

/// The client configuration from the API flags: an API key, or client id + secret.
pub fn client_config(api: &ApiArgs) -> Result<ClientConfig, Fatal> {
    let base = reqwest::Url::parse(&api.base_url)
        .map_err(|e| Fatal::new(format!("--base-url {:?} is not a URL", api.base_url)).cause(e))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(Fatal::new(format!(
            "--base-url {:?} must be http or https",
            api.base_url
        )));
    }
    let credentials = match (&api.api_key, &api.client_id, &api.client_secret) {
        (Some(key), _, _) => Credentials::ApiKey(key.clone()),
        (None, Some(client_id), Some(secret)) => Credentials::ClientCredentials {
            client_id: client_id.clone(),
            client_secret: secret.clone(),
        },
        (None, Some(_), None) => {
            return Err(Fatal::new(
                "--client-id needs --client-secret (or AKOOL_CLIENT_SECRET)",
            ));
        }
        _ => {
            return Err(Fatal::new("no API credentials").hint(
                "set AKOOL_API_KEY (or pass --api-key), or use --client-id with --client-secret",
            ));
        }
    };
    Ok(ClientConfig {
        base_url: api.base_url.trim_end_matches('/').to_string(),
        credentials,
        request_timeout: api.request_timeout,
        connect_timeout: Duration::from_secs(10),
    })
}

/// The values blank manifest cells take (`--resolution`, `--model`).
pub fn defaults(options: &JobDefaults) -> Defaults {
    Defaults {
        resolution: options.resolution,
        model_name: options.model.clone(),
    }
}

/// Which jobs `retry` puts back.
pub fn retry_request(args: &RetryArgs) -> Result<RetryRequest, Fatal> {
    if !args.failed && !args.expired && args.ids.is_empty() {
        return Err(Fatal::new("say which jobs to retry")
            .hint("use --failed, --expired, --ids a,b,... or a combination"));
    }
    Ok(RetryRequest {
        failed: args.failed,
        permanent: args.permanent,
        expired: args.expired,
        ids: args.ids.iter().map(|id| id.trim().to_string()).collect(),
    })
}

/// What clap cannot check alone, as usage errors (exit 2, like clap's own): flags that must
/// agree with each other, and `--db` before a command that reads no database.
pub fn check_usage(cli: &Cli) -> Result<(), clap::Error> {
    use clap::CommandFactory;
    let usage = |message: String| {
        Err(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message))
    };
    let ignores_db = match &cli.command {
        Command::Check(_) => Some("check"),
        Command::Simulate(_) => Some("simulate"),
        Command::Demo(_) => Some("demo"),
        Command::Completions(_) => Some("completions"),
        Command::Man => Some("man"),
        Command::Run(_)
        | Command::Status(_)
        | Command::Export(_)
        | Command::Retry(_)
        | Command::Report(_)
        | Command::Recover(_) => None,
    };
    if let (Some(command), Some(_)) = (ignores_db, &cli.db_before_command) {
        return usage(format!(
            "--db is not used by `{command}`: it reads no database"
        ));
    }
    if let Command::Run(args) = &cli.command {
        let polling = &args.polling;
        if polling.poll_min > polling.poll_max {
            return usage(format!(
                "--poll-min ({}) must not be longer than --poll-max ({})",
                humantime::format_duration(polling.poll_min),
                humantime::format_duration(polling.poll_max)
            ));
        }
        if polling.backoff_base > polling.backoff_cap {
            return usage(format!(
                "--backoff-base ({}) must not be longer than --backoff-cap ({})",
                humantime::format_duration(polling.backoff_base),
                humantime::format_duration(polling.backoff_cap)
            ));
        }
    }
    Ok(())
}

/// The database a command works on: `--db` before the command (as scripts write it) wins
/// over the command's own `--db`, `HEADSWAP_DB` and the default.
pub fn database(db_before_command: &Option<PathBuf>, args: &DbArgs) -> PathBuf {
    db_before_command.clone().unwrap_or_else(|| args.db.clone())
}
