//! Security promises: the API key, the client secret and the bearer token appear nowhere the
//! tool writes (logs at every level in both formats, stdout, the database, the status view,
//! exports, error messages); only http(s) URLs are requested; redirects to other schemes, too
//! many redirects, and API redirects that would carry the key to another host are refused;
//! downloads are capped; TLS is rustls only.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use headswap_batch::akool::ApiError;
use headswap_batch::download::{self, DownloadError, DownloadRequest};
use headswap_batch::simulator::Simulator;

use crate::akool::client;
use crate::support::{Batch, binary, finish, simulator, text};

/// Distinctive values, so that a match anywhere is certainly a leak.
const API_KEY: &str = "sk-LEAKPROBE-7f3a9c1e5b";
const CLIENT_ID: &str = "client-probe";
const CLIENT_SECRET: &str = "cs-LEAKPROBE-2d8e6b4f0a";
const WRONG_KEY: &str = "sk-WRONGPROBE-91c4e7a2";

const MANIFEST: &str = "\
id,video_url,face_url,sku
one,http://v.example/a.mp4,http://f.example/1.jpg,S1
two,http://v.example/b.mp4,http://f.example/2.jpg,S2
broken,http://v.example/c.mp4?fail=render,http://f.example/3.jpg,S3
";

/// `run` with explicit logging options (the shared helper runs quietly).
fn run_command(batch: &Batch, base_url: &str, logging: &[&str]) -> Command {
    let mut command = binary();
    command
        .env_remove("AKOOL_API_KEY")
        .env_remove("AKOOL_CLIENT_ID")
        .env_remove("AKOOL_CLIENT_SECRET")
        .env_remove("RUST_LOG")
        .arg("--db")
        .arg(batch.db())
        .args(logging)
        .arg("run")
        .arg(batch.manifest())
        .arg("--out")
        .arg(batch.out())
        .args(["--base-url", base_url])
        .args(["--rate", "200", "--burst", "20", "--max-attempts", "30"])
        .args(["--poll-min", "20ms", "--poll-max", "300ms"])
        .args(["--analysis-guess", "100ms", "--render-guess", "300ms"])
        .args(["--backoff-base", "10ms", "--backoff-cap", "100ms"])
        .arg("--no-progress");
    command
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// No secret in any of `texts` (name, bytes) nor in any file of the batch's folder.
#[track_caller]
fn assert_no_secret(case: &str, batch: &Batch, texts: &[(String, Vec<u8>)], secrets: &[&str]) {
    let mut places: Vec<(String, Vec<u8>)> = texts.to_vec();
    for path in files_under(batch.dir.path()) {
        places.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    for (place, bytes) in &places {
        for secret in secrets {
            assert!(
                !contains(bytes, secret),
                "{case}: a secret leaked into {place}"
            );
        }
    }
}

/// Run, then `status` (both formats) and `export` (stdout and a file); collect every output.
async fn run_and_inspect(batch: &Batch, run: Command) -> Vec<(String, Vec<u8>)> {
    let output = finish(run).await;
    let mut texts = vec![
        ("run stdout".to_string(), output.stdout),
        ("run stderr".to_string(), output.stderr),
    ];
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["export"],
        vec!["export", "--out"],
    ] {
        let mut command = binary();
        command.arg("--db").arg(batch.db()).args(&args);
        if args.last() == Some(&"--out") {
            command.arg(batch.dir.path().join("export.csv"));
        }
        let output = finish(command).await;
        texts.push((format!("{args:?} stdout"), output.stdout));
        texts.push((format!("{args:?} stderr"), output.stderr));
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_outputs_database_view_or_exports() {
    let sim = simulator(|knobs| {
        knobs.api_keys = vec![API_KEY.to_string(), CLIENT_SECRET.to_string()];
        knobs.client_ids = vec![CLIENT_ID.to_string()];
        // Failures on the way exercise the error paths' messages and logs.
        knobs.error_rate = 0.15;
        knobs.reset_rate = 0.1;
        knobs.seed = 3;
    })
    .await;
    let token = bearer_token(&sim).await;
    let secrets = [API_KEY, CLIENT_SECRET, token.as_str(), WRONG_KEY];
    let loggings: [(&str, &[&str], Option<&str>); 2] = [
        ("text -vv", &["-vv"], None),
        ("json trace", &["--log-format", "json"], Some("trace")),
    ];
    for (logging, flags, rust_log) in loggings {
        for auth in ["api key", "client credentials", "wrong key", "wrong secret"] {
            let case = format!("{logging}, {auth}");
            let batch = Batch::new(MANIFEST);
            let mut command = run_command(&batch, &sim.base_url(), flags);
            if let Some(filter) = rust_log {
                command.env("RUST_LOG", filter);
            }
            match auth {
                "api key" => command.env("AKOOL_API_KEY", API_KEY),
                "wrong key" => command.args(["--api-key", WRONG_KEY]),
                "client credentials" => command
                    .args(["--client-id", CLIENT_ID])
                    .env("AKOOL_CLIENT_SECRET", CLIENT_SECRET),
                _ => command
                    .args(["--client-id", CLIENT_ID])
                    .env("AKOOL_CLIENT_SECRET", WRONG_KEY),
            };
            let texts = run_and_inspect(&batch, command).await;
            let stderr = &texts[1].1;
            let verbose_enough = contains(stderr, "api call") || contains(stderr, "rejected");
            assert!(
                verbose_enough,
                "{case}: the run logged its calls or its error: {}",
                text(stderr)
            );
            assert_no_secret(&case, &batch, &texts, &secrets);
        }
    }
    sim.shutdown().await;
}

/// The bearer token the simulator hands out for the probe's client credentials (asked until
/// an answer escapes the injected faults).
async fn bearer_token(sim: &Simulator) -> String {
    for _ in 0..100 {
        let answer = reqwest::Client::new()
            .post(format!("{}/api/open/v3/getToken", sim.base_url()))
            .json(&serde_json::json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}))
            .send()
            .await;
        let Ok(answer) = answer else { continue };
        let Ok(answer) = answer.json::<serde_json::Value>().await else {
            continue;
        };
        if let Some(token) = answer["token"].as_str() {
            assert!(token.len() >= 16, "{answer}");
            return token.to_string();
        }
    }
    panic!("no token from the simulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_http_and_https_urls_are_ever_requested() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(
        "id,video_url,face_url\n\
         local,file:///etc/passwd,http://f.example/1.jpg\n\
         ftp,ftp://v.example/a.mp4,http://f.example/1.jpg\n\
         face,http://v.example/a.mp4,file:///etc/shadow\n\
         fine,http://v.example/b.mp4,http://f.example/2.jpg\n",
    );
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let rows = batch.export();
    for row in &rows {
        let expected = if row["id"] == "fine" {
            "done"
        } else {
            "invalid"
        };
        assert_eq!(row["state"], expected, "{row:?}");
    }
    let stats = sim.stats();
    assert_eq!(
        stats.calls.analyze, 1,
        "only the http video was sent: {stats:?}"
    );
    assert_eq!(stats.calls.create, 1, "{stats:?}");

    for base_url in ["file:///tmp/api", "ftp://127.0.0.1/"] {
        let batch = Batch::new("id,video_url,face_url\na,http://v/a.mp4,http://f/1.jpg\n");
        let output = finish(batch.run_command(base_url, &[])).await;
        assert_eq!(output.status.code(), Some(1), "{base_url}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("error:") && stderr.contains("http"),
            "{base_url}: {stderr}"
        );
    }
    sim.shutdown().await;
}

/// A server whose answers are redirects: to other schemes, in long chains, or (for the API
/// path) to another port, which counts what reaches it.
async fn redirecting_server(elsewhere: String) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route(
            "/to-file",
            get(|| async { redirect("file:///etc/passwd".to_string()) }),
        )
        .route(
            "/to-ftp",
            get(|| async { redirect("ftp://127.0.0.1/video.mp4".to_string()) }),
        )
        .route(
            "/chain/{n}",
            get(|n: UrlPath<u32>| async move {
                if n.0 == 0 {
                    video(b"the video").into_response()
                } else {
                    redirect(format!("/chain/{}", n.0 - 1)).into_response()
                }
            }),
        )
        .route(
            "/api/open/v4/headswap/analyze",
            any(move || {
                let elsewhere = elsewhere.clone();
                async move { redirect(format!("{elsewhere}/api/open/v4/headswap/analyze")) }
            }),
        );
    serve(app).await
}

fn redirect(location: String) -> impl IntoResponse {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
}

fn video(bytes: &'static [u8]) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "video/mp4")],
        bytes.to_vec(),
    )
}

async fn serve(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_refuse_redirects_to_other_schemes_and_long_chains() {
    let (url, server) = redirecting_server("http://127.0.0.1:9".to_string()).await;
    let http = client(&url, "k").http().clone();
    let out = tempfile::tempdir().unwrap();
    let fetch = |path: &str, job: &str| DownloadRequest {
        job_id: job.into(),
        url: format!("{url}{path}"),
        out_dir: out.path().to_path_buf(),
        max_bytes: 1 << 20,
        stall_timeout: Duration::from_secs(5),
    };
    for (path, job) in [
        ("/to-file", "file"),
        ("/to-ftp", "ftp"),
        ("/chain/6", "long"),
    ] {
        let result = download::download(&http, &fetch(path, job), &mut None).await;
        assert!(
            matches!(result, Err(DownloadError::Refused { .. })),
            "{path}: {result:?}"
        );
    }
    // A few http redirects (a CDN) are fine.
    let output = download::download(&http, &fetch("/chain/3", "short"), &mut None)
        .await
        .expect("a short chain is followed");
    assert_eq!(std::fs::read(&output.path).unwrap(), b"the video");
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["short.mp4"], "nothing else was written");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_redirect_to_another_host_never_carries_the_key() {
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let (elsewhere, other) = serve(Router::new().fallback(move |headers: HeaderMap| {
        let counter = counter.clone();
        async move {
            if headers.contains_key("x-api-key") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            StatusCode::NOT_FOUND
        }
    }))
    .await;
    let (url, server) = redirecting_server(elsewhere).await;
    let result = client(&url, API_KEY)
        .analyze("http://v.example/a.mp4")
        .await;
    assert!(
        matches!(result, Err(ApiError::Transient { .. })),
        "{result:?}"
    );
    let message = result.unwrap_err().to_string();
    assert!(message.contains("redirect"), "{message}");
    assert!(!message.contains(API_KEY), "{message}");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the key was sent to another host"
    );
    server.abort();
    other.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_larger_than_the_cap_are_refused_and_nothing_is_written() {
    let sim = simulator(|knobs| knobs.output_bytes = 300_000).await;
    let batch = Batch::new("id,video_url,face_url\nbig,http://v/a.mp4,http://f/1.jpg\n");
    let output =
        finish(batch.run_command(&sim.base_url(), &["--max-download-bytes", "200000"])).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let rows = batch.export();
    assert_eq!(rows[0]["state"], "failed", "{rows:?}");
    assert!(
        rows[0]["error"].contains("--max-download-bytes"),
        "the error names the limit: {rows:?}"
    );
    let written = std::fs::read_dir(batch.out())
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(written, 0, "no file and no part file");
    sim.shutdown().await;
}

/// TLS goes through rustls: neither OpenSSL nor native-tls is linked.
#[test]
fn tls_is_rustls_only() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .expect("Cargo.lock is committed");
    for crate_name in ["openssl-sys", "openssl", "native-tls", "hyper-tls"] {
        assert!(
            !lock.contains(&format!("name = \"{crate_name}\"\n")),
            "{crate_name} is linked"
        );
    }
    assert!(lock.contains("name = \"rustls\"\n"));
    assert!(lock.contains("name = \"hyper-rustls\"\n"));
}
