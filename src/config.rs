//! From the command line to checked configurations: every option value is validated and
//! turned into the configuration of the module that uses it, before any side effect. Only this
//! module, `cli` and `app` know clap's types.

use std::path::PathBuf;
use std::time::Duration;

use crate::akool::{ClientConfig, Credentials};
use crate::cli::{ApiArgs, JobDefaults, RetryArgs, RunArgs};
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
        let limits = &args.limits;
        if !(limits.rate.is_finite() && limits.rate > 0.0) {
            return Err(Fatal::new(format!(
                "--rate must be a positive number, not {}",
                limits.rate
            )));
        }
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
        if settings.analysis_poll.min > settings.analysis_poll.max {
            return Err(Fatal::new("--poll-min must not be larger than --poll-max"));
        }
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
        expired: args.expired,
        ids: args.ids.iter().map(|id| id.trim().to_string()).collect(),
    })
}
