//! What a valid flag value is: the value parsers clap calls for numbers and durations, so a
//! bad value is a usage error (exit 2) that names the flag and says what was expected.
//!
//! Owns the minimums of the timing flags and why each exists; knows nothing of clap's types
//! (clap only needs a function from text to a value or a message), and touches nothing else.

use std::time::Duration;

/// What a duration looks like, for every message about one.
pub const DURATION_EXAMPLE: &str = "a duration such as 90s, 15m or 7h30m";

/// The shortest `--request-timeout`: a timeout cuts off an answer the service may already be
/// working on, and a create cut off that way may have been billed (it becomes a possible
/// duplicate). Below a second even a healthy service's answers would be cut.
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest `--poll-min`: polls are paced by `--rate` whatever this says, so this only
/// keeps a zero from turning polling into a busy loop; tests and the demo poll every few
/// tens of milliseconds against the local simulator.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The shortest `--give-up-after`: a job fails once it has kept meeting transient failures
/// this long, and a second or two of 5xx answers is ordinary; shorter than this, a hiccup of
/// the service would fail jobs that the next request would have finished. (An outage of the
/// whole service is never charged to a job: the circuit breaker stops the clock.)
pub const MIN_GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// The shortest `--max-runtime`: zero would stop before anything started.
pub const MIN_MAX_RUNTIME: Duration = Duration::from_secs(1);

/// The shortest retry pause (`--backoff-base`) and stage-time hint (`--analysis-guess`,
/// `--render-guess`): zero would retry or poll in a busy loop.
pub const MIN_PAUSE: Duration = Duration::from_millis(1);

/// A duration written as humantime reads it (`90s`, `15m`, `7h30m`, `300ms`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    humantime::parse_duration(trimmed).map_err(|_| format!("expected {DURATION_EXAMPLE}"))
}

/// A value parser for a duration of at least `min`; `why` finishes the sentence "must be at
/// least ..., since ...".
pub fn duration_at_least(
    min: Duration,
    why: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let value = duration(text)?;
        if value < min {
            return Err(format!(
                "must be at least {}: {why}",
                humantime::format_duration(min)
            ));
        }
        Ok(value)
    }
}

/// `--rate`: a positive, finite number of requests per second.
pub fn rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of requests per second, such as 2 or 0.5".to_string())?;
    if !value.is_finite() || value <= 0.0 {
        return Err(
            "must be a positive number of requests per second, such as 2 or 0.5".to_string(),
        );
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_say_what_they_look_like() {
        assert_eq!(duration("7h30m"), Ok(Duration::from_secs(27_000)));
        assert_eq!(duration(" 90s "), Ok(Duration::from_secs(90)));
        for bad in ["banana", "", "-5s", "5", "7h30"] {
            let message = duration(bad).unwrap_err();
            assert!(message.contains("90s, 15m or 7h30m"), "{bad}: {message}");
        }
        let timeout = duration_at_least(MIN_REQUEST_TIMEOUT, "why");
        assert_eq!(timeout("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(timeout("0s").unwrap_err(), "must be at least 1s: why");
        assert_eq!(timeout("999ms").unwrap_err(), "must be at least 1s: why");
    }

    #[test]
    fn rates_are_positive_and_finite() {
        assert_eq!(rate("2"), Ok(2.0));
        assert_eq!(rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "two", ""] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
