//! The simulator's knobs: what `headswap-batch simulate` takes as flags and tests set as
//! fields, with their checks.

use std::time::Duration;

/// Behaviour knobs of the simulator (the flags of `simulate`).
///
/// The command-line defaults are those of a realistic service (2 s analyses, 5 s renders,
/// 20 % jitter). [`SimKnobs::default`] is for tests and in-process use: the same, except that
/// analyses take 100 ms, renders 200 ms and there is no jitter. With either, the accepted API
/// key is `demo-key` and the accepted client id (token flow) is `demo-client`, unless keys or
/// ids are given.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SimKnobs {
    /// API key to accept (repeatable). Without any, only `demo-key` is accepted.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        default_value = "demo-key",
        help_heading = "Simulator"
    )]
    pub api_keys: Vec<String>,
    /// Client id to accept in getToken (repeatable); its clientSecret must be one of the API
    /// keys. Without any, only `demo-client` is accepted.
    #[arg(
        long = "client-id",
        value_name = "ID",
        default_value = "demo-client",
        help_heading = "Simulator"
    )]
    pub client_ids: Vec<String>,
    /// How long an analysis takes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s", help_heading = "Simulator")]
    pub analysis_time: Duration,
    /// How long a render takes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", help_heading = "Simulator")]
    pub render_time: Duration,
    /// Random spread of analysis and render times, as a fraction of them (0–1).
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.2, help_heading = "Simulator")]
    pub jitter: f64,
    /// Credits on the account; each create costs one (1104 when none are left). Unlimited if absent.
    #[arg(long, help_heading = "Simulator")]
    pub credits: Option<u64>,
    /// API requests per second per key, over all API endpoints; excess is throttled.
    #[arg(long, value_parser = parse_rate, help_heading = "Simulator")]
    pub rate_limit: Option<f64>,
    /// How throttled requests are answered.
    #[arg(long, value_enum, default_value_t = ThrottleMode::Code, help_heading = "Simulator")]
    pub throttle: ThrottleMode,
    /// Fraction of API requests answered {"code":2001,"msg":"server error"}.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0, help_heading = "Faults")]
    pub error_rate: f64,
    /// Fraction of API requests answered with an HTML error page (see --http-error-status).
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0, help_heading = "Faults")]
    pub http_error_rate: f64,
    /// The HTTP status of those pages: 502 or 504 (a gateway: the request may have been
    /// processed) or 503 (refused before processing).
    #[arg(long, default_value_t = 502, value_parser = clap::value_parser!(u16).range(500..600), help_heading = "Faults")]
    pub http_error_status: u16,
    /// Fraction of API requests whose connection is dropped without an answer (for creates,
    /// half of them after the task was created and billed).
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0, help_heading = "Faults")]
    pub reset_rate: f64,
    /// Delay added to every API response.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s", help_heading = "Faults")]
    pub latency: Duration,
    /// Fraction of downloads that send part of the body, then drop the connection.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0, help_heading = "Faults")]
    pub truncate_rate: f64,
    /// Fraction of creates that are made and billed, and whose answer is never sent.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0, help_heading = "Faults")]
    pub create_lost_rate: f64,
    /// Fraction of detail answers (analyses and tasks) that report an undocumented status.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0, help_heading = "Faults")]
    pub unknown_status_rate: f64,
    /// Fraction of analyses and renders whose time comes from a heavy tail (Pareto, α = 1.5,
    /// up to 20 times longer).
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0, help_heading = "Faults")]
    pub heavy_tail: f64,
    /// An outage: from AT after the start, for FOR, every API call is answered with an HTML
    /// 503 page (`AT+FOR`, e.g. `10s+90s`; repeatable).
    #[arg(long = "outage", value_name = "AT+FOR", value_parser = parse_outage, help_heading = "Faults")]
    pub outages: Vec<OutageWindow>,
    /// A throttling window: from AT after the start, for FOR, every API call is throttled
    /// (answered as --throttle says), as a service shedding load after an outage does
    /// (`AT+FOR`, e.g. `100s+20s`; repeatable). An outage window wins over it.
    #[arg(long = "throttle-window", value_name = "AT+FOR", value_parser = parse_outage, help_heading = "Faults")]
    pub throttle_windows: Vec<OutageWindow>,
    /// Round output links' expiry down to a multiple of this (e.g. 1s), as signers working in
    /// whole seconds do: with a short --url-ttl, some links are born expired.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s", help_heading = "Faults")]
    pub url_expiry_rounding: Duration,
    /// The file host's clock runs this far ahead of the signer's: links expire that much early.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s", help_heading = "Faults")]
    pub cdn_clock_ahead: Duration,
    /// How running work reports its progress: the undocumented part of the service that
    /// polling relies on most.
    #[arg(long, value_enum, default_value_t = ProgressCurve::Linear, help_heading = "Faults")]
    pub progress: ProgressCurve,
    /// Size of every rendered file.
    #[arg(long, default_value_t = 262_144, help_heading = "Simulator")]
    pub output_bytes: u64,
    /// Lifetime of an output URL; after it, the URL answers 403.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", help_heading = "Simulator")]
    pub url_ttl: Duration,
    /// Seed of the one random generator behind jitter, faults and ids.
    #[arg(long, default_value_t = 0, help_heading = "Simulator")]
    pub seed: u64,
}

impl Default for SimKnobs {
    fn default() -> SimKnobs {
        SimKnobs {
            api_keys: vec!["demo-key".to_owned()],
            client_ids: vec!["demo-client".to_owned()],
            analysis_time: Duration::from_millis(100),
            render_time: Duration::from_millis(200),
            jitter: 0.0,
            credits: None,
            rate_limit: None,
            throttle: ThrottleMode::Code,
            error_rate: 0.0,
            http_error_rate: 0.0,
            http_error_status: 502,
            reset_rate: 0.0,
            latency: Duration::ZERO,
            truncate_rate: 0.0,
            create_lost_rate: 0.0,
            unknown_status_rate: 0.0,
            heavy_tail: 0.0,
            outages: Vec::new(),
            throttle_windows: Vec::new(),
            url_expiry_rounding: Duration::ZERO,
            cdn_clock_ahead: Duration::ZERO,
            progress: ProgressCurve::Linear,
            output_bytes: 262_144,
            url_ttl: Duration::from_secs(60),
            seed: 0,
        }
    }
}

/// How running work reports its progress (after a queued first fifth of its time, which
/// reports none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressCurve {
    /// The share of the time elapsed.
    #[default]
    Linear,
    /// Always 0 until finished: a service that reports no progress.
    None,
    /// Runs ahead and then stalls: 99 % at 60 % of the time, and 99 % until finished.
    Stalls,
    /// Coarse: the elapsed share rounded down to a quarter (0, 25, 50, 75).
    Steps,
}

/// How throttled requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThrottleMode {
    /// HTTP 200 with {"code":1005,"msg":"Frequent operation"}, as Akool does.
    Code,
    /// HTTP 429 with `Retry-After: 1`, as a gateway in front of it might.
    Http,
}

pub(super) fn check_knobs(knobs: &SimKnobs) -> std::io::Result<()> {
    let invalid = |message: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            message,
        ))
    };
    for (name, value) in [
        ("jitter", knobs.jitter),
        ("error_rate", knobs.error_rate),
        ("http_error_rate", knobs.http_error_rate),
        ("reset_rate", knobs.reset_rate),
        ("truncate_rate", knobs.truncate_rate),
        ("create_lost_rate", knobs.create_lost_rate),
        ("unknown_status_rate", knobs.unknown_status_rate),
        ("heavy_tail", knobs.heavy_tail),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return invalid(format!(
                "{name} must be a fraction between 0 and 1, not {value}"
            ));
        }
    }
    if knobs
        .rate_limit
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        return invalid("rate_limit must be a positive number of requests per second".into());
    }
    let faults = knobs.reset_rate + knobs.http_error_rate + knobs.error_rate;
    if faults + knobs.create_lost_rate > 1.0 {
        return invalid(format!(
            "reset_rate + http_error_rate + error_rate + create_lost_rate must be at most 1, not {}",
            faults + knobs.create_lost_rate
        ));
    }
    if !(500..600).contains(&knobs.http_error_status) {
        return invalid("http_error_status must be a 5xx status".into());
    }
    if knobs.api_keys.iter().any(String::is_empty) {
        return invalid("API keys must not be empty".into());
    }
    Ok(())
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not a fraction between 0 and 1"))
    }
}

/// A window of time, counted from the simulator's start, during which the API is down (an
/// outage) or throttles every call (a throttling window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageWindow {
    pub at: Duration,
    pub length: Duration,
}

impl OutageWindow {
    /// Whether `elapsed` since the start falls in the window.
    pub fn covers(&self, elapsed: Duration) -> bool {
        elapsed >= self.at && elapsed < self.at + self.length
    }
}

fn parse_outage(text: &str) -> Result<OutageWindow, String> {
    let (at, length) = text
        .split_once('+')
        .ok_or_else(|| format!("{text:?} is not AT+FOR (e.g. 10s+90s)"))?;
    let parse = |part: &str| {
        humantime::parse_duration(part.trim()).map_err(|error| format!("{part:?}: {error}"))
    };
    Ok(OutageWindow {
        at: parse(at)?,
        length: parse(length)?,
    })
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not a positive rate"))
    }
}
