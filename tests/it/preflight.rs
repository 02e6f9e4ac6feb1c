//! Preflight against real servers on loopback: the committed ffmpeg fixtures served with and
//! without Range support, large padded files (the bytes read are counted by the server), the
//! simulator's media routes, every class of undecided answer, the face classes, a whole
//! manifest, and generated box layouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use headswap_batch::manifest;
use headswap_batch::preflight::{
    self, Checker, PreflightConfig, Spent, Target, Timeouts, Verdict, check_manifest,
};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support;

// ---------------------------------------------------------------------------------------------
// A loopback file server that counts what it sends.

#[derive(Debug, Clone)]
enum Mode {
    /// Honours a single Range (206 + Content-Range).
    Ranges,
    /// Answers every request 200 with the whole file.
    IgnoreRange,
    /// Answers every request with this status and a short body.
    Status(u16),
    /// Reads the request and never answers.
    Stall,
    /// Answers 503 after this many milliseconds.
    Slow(u64),
    /// Answers 302 to this location.
    Redirect(String),
}

struct FileServer {
    addr: SocketAddr,
    /// Requests read.
    requests: Arc<AtomicU64>,
    /// Body bytes written to sockets.
    bytes: Arc<AtomicU64>,
    /// Requests answered (counted before the answer is written).
    answered: Arc<AtomicU64>,
    /// Most requests read and not yet answered, seen as each request arrives.
    most_in_flight: Arc<AtomicU64>,
    /// Connections open now.
    open: Arc<AtomicU64>,
}

impl FileServer {
    /// Wait until every connection is closed (the server has written all it ever will).
    async fn quiet(&self) {
        while self.open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Serve `body` at every path until the test's runtime ends.
    async fn start(body: Vec<u8>, mode: Mode) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        FileServer::serve(listener, body, mode)
    }

    fn serve(listener: TcpListener, body: Vec<u8>, mode: Mode) -> FileServer {
        let addr = listener.local_addr().unwrap();
        let server = FileServer {
            addr,
            requests: Arc::default(),
            bytes: Arc::default(),
            answered: Arc::default(),
            most_in_flight: Arc::default(),
            open: Arc::default(),
        };
        let body = Arc::new(body);
        let counters = Counters {
            requests: server.requests.clone(),
            bytes: server.bytes.clone(),
            answered: server.answered.clone(),
            most_in_flight: server.most_in_flight.clone(),
        };
        let open = server.open.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let body = body.clone();
                let mode = mode.clone();
                let counters = counters.clone();
                let open = open.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    answer(socket, &body, mode, &counters).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn spent(&self) -> Spent {
        Spent {
            requests: self.requests.load(Ordering::SeqCst),
            bytes: self.bytes.load(Ordering::SeqCst),
        }
    }
}

#[derive(Clone)]
struct Counters {
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    most_in_flight: Arc<AtomicU64>,
}

async fn answer(mut socket: TcpStream, body: &[u8], mode: Mode, counters: &Counters) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let read = counters.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let in_flight = read - counters.answered.load(Ordering::SeqCst);
    counters
        .most_in_flight
        .fetch_max(in_flight, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let range = head
        .lines()
        .find_map(|line| line.strip_prefix("range:"))
        .and_then(|value| value.trim().strip_prefix("bytes="))
        .and_then(|spec| {
            let (first, last) = spec.split_once('-')?;
            let first: u64 = first.trim().parse().ok()?;
            let last: Option<u64> = last.trim().parse().ok();
            Some((first, last))
        });
    let length = body.len() as u64;
    let (status, start, end) = match mode {
        Mode::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        Mode::Redirect(location) => {
            let reply = format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            return;
        }
        Mode::Slow(millis) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            counters.answered.fetch_add(1, Ordering::SeqCst);
            let reply = "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = socket.write_all(reply.as_bytes()).await;
            return;
        }
        Mode::Status(code) => {
            let reply = format!(
                "HTTP/1.1 {code} Nope\r\nContent-Type: text/html\r\nContent-Length: 12\r\nConnection: close\r\n\r\n<p>nope</p>\n"
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            return;
        }
        Mode::IgnoreRange => ("200 OK".to_string(), 0, length),
        Mode::Ranges => match range {
            None => ("200 OK".to_string(), 0, length),
            Some((first, _)) if first >= length => {
                let reply = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{length}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                return;
            }
            Some((first, last)) => {
                let last = last.map_or(length - 1, |last| last.min(length - 1));
                ("206 Partial Content".to_string(), first, last + 1)
            }
        },
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nConnection: close\r\n",
        end - start
    );
    if status.starts_with("206") {
        reply.push_str(&format!(
            "Content-Range: bytes {start}-{}/{length}\r\n",
            end - 1
        ));
    }
    reply.push_str("\r\n");
    if socket.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    for chunk in body[start as usize..end as usize].chunks(16 * 1024) {
        if socket.write_all(chunk).await.is_err() {
            return;
        }
        counters
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    let _ = socket.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Quick timeouts, so the undecided cases end fast.
fn quick() -> PreflightConfig {
    PreflightConfig {
        timeouts: Timeouts {
            connect: Duration::from_millis(500),
            read: Duration::from_millis(300),
            request: Duration::from_secs(2),
        },
        ..PreflightConfig::default()
    }
}

fn checker(config: PreflightConfig) -> Checker {
    Checker::new(config).expect("the client builds")
}

async fn check_video(config: PreflightConfig, url: &str) -> (Verdict, Spent) {
    let check = checker(config).check(Target::video(url)).await;
    (check.verdict, check.spent)
}

/// A `free` box of `len` bytes (64-bit size when it needs one).
fn free_box(len: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len as usize);
    if len > u64::from(u32::MAX) {
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(b"free");
        bytes.extend_from_slice(&len.to_be_bytes());
    } else {
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend_from_slice(b"free");
    }
    bytes.resize(len as usize, 0);
    bytes
}

/// `file` with a box inserted at `offset` (a top-level box boundary).
fn insert(file: &[u8], offset: usize, inserted: &[u8]) -> Vec<u8> {
    let mut out = file[..offset].to_vec();
    out.extend_from_slice(inserted);
    out.extend_from_slice(&file[offset..]);
    out
}

#[track_caller]
fn assert_undecided(verdict: &Verdict, needle: &str) {
    match verdict {
        Verdict::Undecided { warning } => assert!(
            warning.contains(needle),
            "warning {warning:?} should mention {needle:?}"
        ),
        other => panic!("expected undecided ({needle}), got {other:?}"),
    }
}

const MOOV_LAST_OFFSET: usize = 10_633;
const MOOV_LAST_LEN: u64 = 3_268;

// ---------------------------------------------------------------------------------------------
// Real files.

#[tokio::test]
async fn real_files_are_judged_by_their_own_duration() {
    let cases: [(&str, Verdict); 5] = [
        (
            "video-10s-moov-first.mp4",
            Verdict::Valid {
                detail: "MP4/MOV video, 10.0 s".into(),
            },
        ),
        (
            "video-8s-moov-last.mp4",
            Verdict::Valid {
                detail: "MP4/MOV video, 8.0 s".into(),
            },
        ),
        (
            "video-5s.mov",
            Verdict::Valid {
                detail: "MP4/MOV video, 5.0 s".into(),
            },
        ),
        (
            "video-2s.mp4",
            Verdict::Invalid {
                reason: "video is 2.0 s long; the service accepts 3–20 s".into(),
            },
        ),
        (
            "video-25s.mp4",
            Verdict::Invalid {
                reason: "video is 25.0 s long; the service accepts 3–20 s".into(),
            },
        ),
    ];
    for (name, expected) in cases {
        let server = FileServer::start(fixture(name), Mode::Ranges).await;
        let (verdict, spent) = check_video(quick(), &server.url("/v.mp4")).await;
        assert_eq!(verdict, expected, "{name}");
        // Each file is smaller than the first read: one request, the whole file.
        assert_eq!(spent, server.spent(), "{name}");
        assert_eq!(spent.requests, 1, "{name}");
    }
}

#[tokio::test]
async fn a_moov_after_the_first_bytes_is_fetched_exactly() {
    // Read 4 KiB at first: the moov of the moov-last file sits at 10,633.
    let config = PreflightConfig {
        read_bytes: 4096,
        ..quick()
    };
    let server = FileServer::start(fixture("video-8s-moov-last.mp4"), Mode::Ranges).await;
    let (verdict, spent) = check_video(config.clone(), &server.url("/v.mp4")).await;
    assert_eq!(verdict, Verdict::valid_for_test("MP4/MOV video, 8.0 s"));
    assert_eq!(server.spent(), spent);
    assert_eq!(spent.requests, 2);
    assert_eq!(spent.bytes, 4096 + MOOV_LAST_LEN);

    // An mvhd that starts in the first read and ends after it: the moov is read on from there,
    // a first read's worth, then the rest of it exactly.
    let config = PreflightConfig {
        read_bytes: 64,
        ..quick()
    };
    let server = FileServer::start(fixture("video-10s-moov-first.mp4"), Mode::Ranges).await;
    let (verdict, spent) = check_video(config, &server.url("/v.mp4")).await;
    assert_eq!(verdict, Verdict::valid_for_test("MP4/MOV video, 10.0 s"));
    assert_eq!(server.spent(), spent);
    assert_eq!(spent.requests, 3);
    assert_eq!(spent.bytes, 32 + 3732, "ftyp and moov, nothing more");
}

#[tokio::test]
async fn a_long_moov_is_read_only_as_far_as_its_mvhd() {
    // The moov-last fixture with 1 MiB of `free` before its moov, and its moov grown by a
    // 2 MiB `free` child after the mvhd (as an hour of sample tables would grow it).
    let original = fixture("video-8s-moov-last.mp4");
    let mut moov = original[MOOV_LAST_OFFSET..].to_vec();
    moov.extend(free_box(2 * 1024 * 1024));
    let moov_len = moov.len() as u32;
    moov[..4].copy_from_slice(&moov_len.to_be_bytes());
    let mut file = original[..MOOV_LAST_OFFSET].to_vec();
    file.extend(free_box(1024 * 1024));
    file.extend(moov);
    let server = FileServer::start(file, Mode::Ranges).await;
    let config = quick();
    let read = config.read_bytes;
    let (verdict, spent) = check_video(config, &server.url("/v.mp4")).await;
    assert_eq!(verdict, Verdict::valid_for_test("MP4/MOV video, 8.0 s"));
    assert_eq!(server.spent(), spent);
    assert_eq!(spent.requests, 2);
    assert_eq!(spent.bytes, 2 * read);
}

#[tokio::test]
async fn a_large_file_costs_a_few_small_reads_in_either_layout() {
    let padding = 48 * 1024 * 1024;
    // Moov last: 48 MiB of `free` between the mdat and the moov.
    let moov_last = insert(
        &fixture("video-8s-moov-last.mp4"),
        MOOV_LAST_OFFSET,
        &free_box(padding),
    );
    // Moov first: 48 MiB of `free` at the end.
    let mut moov_first = fixture("video-10s-moov-first.mp4");
    moov_first.extend(free_box(padding));
    let read = PreflightConfig::default().read_bytes;
    for (file, seconds, requests, bytes) in [
        (moov_last, "8.0", 2, read + MOOV_LAST_LEN),
        (moov_first, "10.0", 1, read),
    ] {
        let length = file.len() as u64;
        let server = FileServer::start(file, Mode::Ranges).await;
        let (verdict, spent) = check_video(quick(), &server.url("/big.mp4")).await;
        assert_eq!(
            verdict,
            Verdict::valid_for_test(&format!("MP4/MOV video, {seconds} s"))
        );
        assert_eq!(server.spent(), spent);
        assert_eq!(spent.requests, requests);
        assert_eq!(spent.bytes, bytes);
        assert!(
            spent.bytes * 100 < length,
            "read {} of {length} bytes",
            spent.bytes
        );
    }
}

#[tokio::test]
async fn a_server_ignoring_range_is_read_only_a_prefix() {
    // The moov is in the prefix: the duration is read from it.
    let server = FileServer::start(fixture("video-25s.mp4"), Mode::IgnoreRange).await;
    let (verdict, _) = check_video(quick(), &server.url("/v.mp4")).await;
    assert_eq!(
        verdict,
        Verdict::Invalid {
            reason: "video is 25.0 s long; the service accepts 3–20 s".into()
        }
    );

    // 48 MiB with the moov last: undecided, and the connection is dropped after the prefix.
    let file = insert(
        &fixture("video-8s-moov-last.mp4"),
        MOOV_LAST_OFFSET,
        &free_box(48 * 1024 * 1024),
    );
    let length = file.len() as u64;
    let server = FileServer::start(file, Mode::IgnoreRange).await;
    let config = quick();
    let read = config.read_bytes;
    let (verdict, spent) = check_video(config, &server.url("/v.mp4")).await;
    assert_undecided(&verdict, "ignores Range");
    assert_eq!(spent.requests, 1);
    // The client keeps the prefix and may have received one more network chunk with it.
    assert!(
        spent.bytes >= read && spent.bytes < read + 1024 * 1024,
        "{spent:?}"
    );
    // Whatever the socket buffers took, the server never got to send the whole file.
    server.quiet().await;
    assert!(server.spent().bytes < length / 2, "{:?}", server.spent());
}

// ---------------------------------------------------------------------------------------------
// Undecided, never invalid.

#[tokio::test]
async fn statuses_that_say_nothing_about_the_file_are_undecided() {
    for code in [401, 403, 429, 500, 502, 503] {
        let server = FileServer::start(Vec::new(), Mode::Status(code)).await;
        let (verdict, spent) = check_video(quick(), &server.url("/v.mp4")).await;
        assert_undecided(&verdict, &format!("HTTP {code}"));
        assert_eq!(spent.requests, 1);
        let face = checker(quick())
            .check(Target::face(server.url("/f.jpg")))
            .await;
        assert_undecided(&face.verdict, &format!("HTTP {code}"));
    }
    for code in [404, 410] {
        let server = FileServer::start(Vec::new(), Mode::Status(code)).await;
        let (verdict, _) = check_video(quick(), &server.url("/v.mp4")).await;
        assert_eq!(
            verdict,
            Verdict::Invalid {
                reason: format!("video link answers HTTP {code}")
            }
        );
    }
}

#[tokio::test]
async fn redirects_are_followed_five_times_and_only_to_http() {
    let file = FileServer::start(fixture("video-10s-moov-first.mp4"), Mode::Ranges).await;
    let hop = FileServer::start(Vec::new(), Mode::Redirect(file.url("/v.mp4"))).await;
    let (verdict, _) = check_video(quick(), &hop.url("/v.mp4")).await;
    assert_eq!(verdict, Verdict::valid_for_test("MP4/MOV video, 10.0 s"));

    // A loop (a relative Location to itself): the sixth redirect is refused.
    let looping = FileServer::start(Vec::new(), Mode::Redirect("/again".into())).await;
    let (verdict, _) = check_video(quick(), &looping.url("/v.mp4")).await;
    assert_undecided(&verdict, "redirect");
    assert_eq!(
        looping.spent().requests,
        6,
        "the first request and five redirects"
    );

    let to_ftp = FileServer::start(
        Vec::new(),
        Mode::Redirect("ftp://files.example/v.mp4".into()),
    )
    .await;
    let check = checker(quick())
        .check(Target::face(to_ftp.url("/f.jpg")))
        .await;
    assert_undecided(&check.verdict, "ftp");
}

#[tokio::test]
async fn a_refused_connection_is_undecided() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (verdict, _) = check_video(quick(), &format!("http://{addr}/v.mp4")).await;
    assert_undecided(&verdict, "refused");
}

#[tokio::test]
async fn a_stalled_server_is_undecided_after_the_timeout() {
    let server = FileServer::start(Vec::new(), Mode::Stall).await;
    let (verdict, spent) = check_video(quick(), &server.url("/v.mp4?sig=secret")).await;
    assert_undecided(&verdict, "no answer in time");
    assert_eq!(spent.requests, 1);
    // The warning never repeats the URL (its query may be a credential).
    assert!(!verdict.warning().unwrap().contains("secret"));
}

/// A resolver that knows no host, standing in for a failing DNS without leaving loopback.
struct NoHosts;

impl reqwest::dns::Resolve for NoHosts {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            Err::<reqwest::dns::Addrs, _>(
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such host").into(),
            )
        })
    }
}

#[tokio::test]
async fn an_unknown_host_is_undecided() {
    let config = quick();
    let client = preflight::client_builder(config.timeouts)
        .dns_resolver(Arc::new(NoHosts))
        .build()
        .unwrap();
    let checker = Checker::with_client(config, client);
    let check = checker
        .check(Target::video("http://media.unresolvable-host.net/v.mp4"))
        .await;
    assert_undecided(&check.verdict, "does not resolve");
    let check = checker
        .check(Target::face("http://media.unresolvable-host.net/f.jpg"))
        .await;
    assert_undecided(&check.verdict, "does not resolve");
}

#[tokio::test]
async fn an_unreadable_container_is_undecided() {
    // A real ftyp followed by noise.
    let mut file = fixture("video-10s-moov-first.mp4")[..32].to_vec();
    file.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80));
    let server = FileServer::start(file, Mode::Ranges).await;
    let (verdict, _) = check_video(quick(), &server.url("/v.mp4")).await;
    assert_undecided(&verdict, "could not be read");

    // A file cut short inside its mdat, moov never reached.
    let cut = fixture("video-8s-moov-last.mp4")[..6000].to_vec();
    let server = FileServer::start(cut, Mode::Ranges).await;
    let (verdict, _) = check_video(quick(), &server.url("/v.mp4")).await;
    assert_undecided(&verdict, "could not be read");
}

#[tokio::test]
async fn what_is_clearly_not_a_video_is_invalid_and_named() {
    let cases: [(&[u8], &str); 4] = [
        (
            b"<!DOCTYPE html><html><body>Sign in</body></html>",
            "video link is an HTML page, not a video",
        ),
        (b"%PDF-1.7\n", "video link is a PDF document, not a video"),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
            "video link is a JPEG image, not a video",
        ),
        (b"", "video link is an empty file"),
    ];
    for (body, reason) in cases {
        let server = FileServer::start(body.to_vec(), Mode::Ranges).await;
        let (verdict, _) = check_video(quick(), &server.url("/v.mp4")).await;
        assert_eq!(
            verdict,
            Verdict::Invalid {
                reason: reason.into()
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator's media.

#[tokio::test]
async fn simulator_media_answers_ranges_and_head() {
    let sim = support::simulator(|_| {}).await;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let url = format!("{base}/media/video.mp4?duration=12&layout=end&size=1000000");
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "1000000");
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    let part = http
        .get(&url)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 0-99/1000000");
    let body = part.bytes().await.unwrap();
    assert_eq!(body.len(), 100);
    assert_eq!(&body[4..8], b"ftyp");
    let past = http
        .get(&url)
        .header("range", "bytes=1000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
    let missing = http
        .get(format!("{base}/media/missing/clip.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = http
        .get(format!("{base}/media/video.mp4?layout=middle"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let stats = sim.stats().media;
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.partial, 1);
    // HEAD sent no body; the range sent 100 bytes, the 404 its short page.
    assert!(stats.bytes >= 100 && stats.bytes < 1000, "{stats:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn simulator_videos_in_both_layouts_cost_little() {
    let sim = support::simulator(|_| {}).await;
    let base = sim.base_url();
    let checker = checker(quick());
    let size = 32 * 1024 * 1024;
    let cases = [
        (
            "start",
            "10",
            Verdict::valid_for_test("MP4/MOV video, 10.0 s"),
            1,
        ),
        (
            "end",
            "8",
            Verdict::valid_for_test("MP4/MOV video, 8.0 s"),
            2,
        ),
        (
            "end",
            "25",
            Verdict::Invalid {
                reason: "video is 25.0 s long; the service accepts 3–20 s".into(),
            },
            2,
        ),
        (
            "start",
            "2.5",
            Verdict::Invalid {
                reason: "video is 2.5 s long; the service accepts 3–20 s".into(),
            },
            1,
        ),
    ];
    for (layout, duration, expected, requests) in cases {
        let before = sim.stats().media;
        let url = format!("{base}/media/video.mp4?duration={duration}&layout={layout}&size={size}");
        let check = checker.check(Target::video(url)).await;
        let after = sim.stats().media;
        assert_eq!(check.verdict, expected, "{layout} {duration}");
        assert_eq!(check.spent.requests, requests);
        assert_eq!(after.requests - before.requests, requests);
        assert_eq!(after.bytes - before.bytes, check.spent.bytes);
        assert!(check.spent.bytes <= 2 * 64 * 1024, "{:?}", check.spent);
        eprintln!(
            "simulator video, moov at the {layout}, {size} bytes: {} requests, {} bytes",
            check.spent.requests, check.spent.bytes
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn faces_are_images_by_their_first_bytes() {
    let sim = support::simulator(|_| {}).await;
    let base = sim.base_url();
    let checker = checker(quick());
    let cases = [
        ("face.jpg", Verdict::valid_for_test("JPEG image")),
        ("face.png", Verdict::valid_for_test("PNG image")),
        ("face.webp", Verdict::valid_for_test("WebP image")),
        (
            "page.html",
            Verdict::Invalid {
                reason: "face link is an HTML page, not an image".into(),
            },
        ),
        (
            "doc.pdf",
            Verdict::Invalid {
                reason: "face link is a PDF document, not an image".into(),
            },
        ),
        (
            "missing/me.jpg",
            Verdict::Invalid {
                reason: "face link answers HTTP 404".into(),
            },
        ),
        (
            "video.mp4",
            Verdict::Invalid {
                reason: "face link is an MP4/MOV video, not an image".into(),
            },
        ),
    ];
    for (name, expected) in cases {
        let check = checker
            .check(Target::face(format!("{base}/media/{name}")))
            .await;
        assert_eq!(check.verdict, expected, "{name}");
        assert_eq!(check.spent.requests, 1);
        assert!(check.spent.bytes <= 512);
    }
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Many URLs.

#[tokio::test]
async fn check_all_checks_each_url_once_within_its_concurrency() {
    let server = FileServer::start(Vec::new(), Mode::Slow(30)).await;
    let config = PreflightConfig {
        concurrency: 3,
        ..quick()
    };
    let targets: Vec<Target> = (0..12)
        .flat_map(|i| {
            let url = server.url(&format!("/v{i}.mp4"));
            [Target::video(url.clone()), Target::video(url)]
        })
        .collect();
    let mut results = checker(config).check_all(targets);
    let mut seen = std::collections::HashSet::new();
    while let Some(check) = results.recv().await {
        assert_undecided(&check.verdict, "HTTP 503");
        assert!(seen.insert(check.target), "each URL once");
    }
    assert_eq!(seen.len(), 12);
    assert_eq!(server.spent().requests, 12);
    // A request is counted answered before its answer leaves, so the server never sees more
    // in flight than the client has: at most its three slots.
    let most = server.most_in_flight.load(Ordering::SeqCst);
    assert!(most <= 3, "{most} requests in flight at once");
}

#[tokio::test]
async fn check_all_yields_each_result_as_it_completes() {
    let stalled = FileServer::start(Vec::new(), Mode::Stall).await;
    let quick_file = FileServer::start(fixture("video-10s-moov-first.mp4"), Mode::Ranges).await;
    let config = PreflightConfig {
        timeouts: Timeouts {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(30),
            request: Duration::from_secs(30),
        },
        ..PreflightConfig::default()
    };
    let mut results = checker(config).check_all([
        Target::video(stalled.url("/slow.mp4")),
        Target::video(quick_file.url("/fast.mp4")),
    ]);
    // The stalled check would take 30 s; the fast one comes out first, on its own.
    let first = results.recv().await.unwrap();
    assert_eq!(first.target, Target::video(quick_file.url("/fast.mp4")));
    assert!(matches!(first.verdict, Verdict::Valid { .. }));
    // Nobody listens any more: the stalled check is dropped, not waited for.
    drop(results);
}

#[tokio::test]
async fn a_manifest_check_lists_exactly_the_doomed_rows() {
    let sim = support::simulator(|_| {}).await;
    let base = sim.base_url();
    let face = format!("{base}/media/face.jpg");
    let manifest_text = format!(
        "id,video_url,face_url\n\
         ten,{base}/media/video.mp4?duration=10,{face}\n\
         eight,{base}/media/video.mp4?duration=8&layout=end,{face}\n\
         two,{base}/media/video.mp4?duration=2,{face}\n\
         long,{base}/media/video.mp4?duration=25&layout=end,{face}\n\
         dead,{base}/media/missing/clip.mp4,{face}\n\
         page,{base}/media/video.mp4?duration=10,{base}/media/page.html\n\
         noface,{base}/media/video.mp4?duration=8&layout=end,{base}/media/missing/face.jpg\n"
    );
    let manifest =
        manifest::parse_bytes(std::path::Path::new("jobs.csv"), manifest_text.as_bytes()).unwrap();
    let report = check_manifest(&checker(quick()), &manifest).await;
    let doomed: Vec<(u64, &str, &str)> = report
        .invalid
        .iter()
        .map(|job| (job.line, job.id.as_str(), job.reason.as_str()))
        .collect();
    assert_eq!(
        doomed,
        [
            (4, "two", "video is 2.0 s long; the service accepts 3–20 s"),
            (
                5,
                "long",
                "video is 25.0 s long; the service accepts 3–20 s"
            ),
            (6, "dead", "video link answers HTTP 404"),
            (7, "page", "face link is an HTML page, not an image"),
            (8, "noface", "face link answers HTTP 404"),
        ]
    );
    assert_eq!((report.jobs, report.videos, report.faces), (7, 5, 3));
    assert!(report.warnings.is_empty());
    let stats = sim.stats();
    assert_eq!(stats.media.requests, report.spent.requests);
    // The server also sent the two 404 pages, which the checker does not read.
    let not_found_pages = 2 * reqwest::get(format!("{base}/media/missing/x"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len() as u64;
    assert_eq!(stats.media.bytes, report.spent.bytes + not_found_pages);
    // Nothing went to the API.
    assert_eq!(
        stats.calls.analyze + stats.calls.create + stats.calls.token,
        0
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["invalid"][0]["reason"],
        "video is 2.0 s long; the service accepts 3–20 s"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn warnings_name_the_url_without_its_query() {
    let server = FileServer::start(Vec::new(), Mode::Status(403)).await;
    let video = server.url("/v.mp4?X-Amz-Signature=deadbeef");
    let text = format!(
        "id,video_url,face_url\na,{video},{}\n",
        server.url("/f.jpg")
    );
    let manifest = manifest::parse_bytes(std::path::Path::new("m.csv"), text.as_bytes()).unwrap();
    let report = check_manifest(&checker(quick()), &manifest).await;
    assert!(
        report.invalid.is_empty(),
        "403 is not a reason to stop a job"
    );
    assert_eq!(report.warnings.len(), 2);
    assert_eq!(
        report.warnings[0].url,
        format!("http://{}/v.mp4?…", server.addr)
    );
    assert_eq!(report.warnings[0].jobs, 1);
    assert!(!serde_json::to_string(&report).unwrap().contains("deadbeef"));
}

// ---------------------------------------------------------------------------------------------
// Generated layouts.

/// One top-level box of a generated file.
#[derive(Debug, Clone)]
enum GenBox {
    /// A box of this type and body length, with a 64-bit size if `large`.
    Plain {
        kind: [u8; 4],
        body: usize,
        large: bool,
    },
    /// The moov: an mvhd with this timescale and duration, after `before` bytes of `udta`.
    Moov {
        timescale: u32,
        duration: u64,
        before: usize,
    },
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// The file after its ftyp cut to this fraction of its length.
    Truncate(f64),
    /// The size field of the box with this index overwritten.
    BogusSize(usize, u32),
    /// Noise of this length right after the ftyp.
    NoiseAfterFtyp(usize),
}

fn gen_box() -> impl Strategy<Value = GenBox> {
    let kind = prop_oneof![
        Just(*b"free"),
        Just(*b"skip"),
        Just(*b"mdat"),
        Just(*b"wide"),
        Just(*b"uuid"),
        Just(*b"meta"),
        "[a-z]{4}"
            .prop_filter("not a moov", |text| text != "moov")
            .prop_map(|text| text.as_bytes().try_into().unwrap()),
    ];
    (kind, 0usize..6000, any::<bool>()).prop_map(|(kind, body, large)| GenBox::Plain {
        kind,
        body,
        large,
    })
}

fn gen_layout() -> impl Strategy<Value = (Vec<GenBox>, Damage)> {
    let moov = (
        prop_oneof![Just(1u32), Just(600), Just(1000), Just(90_000)],
        1u64..60,
        0usize..400,
        0u64..1000,
    )
        .prop_map(|(timescale, seconds, before, fraction)| GenBox::Moov {
            timescale,
            // Whole seconds plus a fraction, in the file's own timescale.
            duration: seconds * u64::from(timescale) + fraction * u64::from(timescale) / 1000,
            before,
        });
    let boxes = prop::collection::vec(gen_box(), 0..6);
    let damage = prop_oneof![
        4 => Just(Damage::None),
        1 => (0.0f64..1.0).prop_map(Damage::Truncate),
        1 => (0usize..8, any::<u32>()).prop_map(|(index, size)| Damage::BogusSize(index, size)),
        1 => (1usize..3000).prop_map(Damage::NoiseAfterFtyp),
    ];
    (
        boxes,
        prop::option::of(moov),
        any::<prop::sample::Index>(),
        damage,
    )
        .prop_map(|(mut boxes, moov, position, damage)| {
            if let Some(moov) = moov {
                let at = position.index(boxes.len() + 1);
                boxes.insert(at, moov);
            }
            (boxes, damage)
        })
}

fn encode_box(generated: &GenBox) -> Vec<u8> {
    match generated {
        GenBox::Plain { kind, body, large } => {
            let mut bytes = Vec::new();
            if *large {
                bytes.extend_from_slice(&1u32.to_be_bytes());
                bytes.extend_from_slice(kind);
                bytes.extend_from_slice(&((body + 16) as u64).to_be_bytes());
            } else {
                bytes.extend_from_slice(&((body + 8) as u32).to_be_bytes());
                bytes.extend_from_slice(kind);
            }
            bytes.resize(bytes.len() + body, 0x5a);
            bytes
        }
        GenBox::Moov {
            timescale,
            duration,
            before,
        } => {
            use mp4_atom::Encode;
            let mut children = Vec::new();
            if *before > 0 {
                children.extend_from_slice(&((before + 8) as u32).to_be_bytes());
                children.extend_from_slice(b"udta");
                children.resize(children.len() + before, 0);
            }
            mp4_atom::Mvhd {
                timescale: *timescale,
                duration: *duration,
                ..mp4_atom::Mvhd::default()
            }
            .encode(&mut children)
            .unwrap();
            let mut bytes = ((children.len() + 8) as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(b"moov");
            bytes.extend(children);
            bytes
        }
    }
}

/// The file, where each box starts, and the moov's duration in seconds if it has one.
fn build_file(boxes: &[GenBox], damage: &Damage) -> (Vec<u8>, Option<f64>) {
    let mut file = Vec::new();
    mp4_atom::Encode::encode(
        &mp4_atom::Ftyp {
            major_brand: b"isom".into(),
            minor_version: 0,
            compatible_brands: vec![b"isom".into()],
        },
        &mut file,
    )
    .unwrap();
    let ftyp_len = file.len();
    let mut starts = Vec::new();
    let mut seconds = None;
    for generated in boxes {
        starts.push(file.len());
        if let GenBox::Moov {
            timescale,
            duration,
            ..
        } = generated
        {
            seconds = Some(*duration as f64 / f64::from(*timescale));
        }
        file.extend(encode_box(generated));
    }
    match damage {
        Damage::None => {}
        Damage::Truncate(fraction) => {
            // Cut anywhere after the ftyp (what an empty or cut ftyp is, sniffing decides).
            let keep = ftyp_len + ((file.len() - ftyp_len) as f64 * fraction) as usize;
            file.truncate(keep);
        }
        Damage::BogusSize(index, size) => {
            if let Some(start) = starts.get(*index) {
                file[*start..*start + 4].copy_from_slice(&size.to_be_bytes());
            }
        }
        Damage::NoiseAfterFtyp(len) => {
            let noise: Vec<u8> = (0..*len).map(|i| (i * 151 % 251) as u8 | 0x80).collect();
            file.splice(ftyp_len..ftyp_len, noise);
        }
    }
    (file, seconds)
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        // A fixed seed and a few hundred cases keep CI quick (well under a second);
        // PROPTEST_CASES=100000 runs it long (about a minute).
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(256),
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x9e3779b9),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Whatever the layout, the checker does not panic, stays within its read bounds, calls a
    /// file invalid only for a readable moov whose duration is out of range, and finds the
    /// duration of every well-formed file that has one.
    #[test]
    fn generated_layouts_are_read_within_bounds((boxes, damage) in gen_layout()) {
        let (file, seconds) = build_file(&boxes, &damage);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = PreflightConfig {
            read_bytes: 2048,
            max_moov_bytes: 64 * 1024,
            max_requests_per_video: 12,
            ..quick()
        };
        let bound = config.max_video_bytes();
        let (verdict, spent, served) = runtime.block_on(async {
            let server = FileServer::start(file.clone(), Mode::Ranges).await;
            let (verdict, spent) = check_video(config, &server.url("/g.mp4")).await;
            (verdict, spent, server.spent())
        });
        prop_assert_eq!(spent, served);
        prop_assert!(spent.requests <= 12);
        prop_assert!(spent.bytes <= bound);
        let expected = seconds.map(|seconds| {
            if (3.0 - preflight::DURATION_TOLERANCE..=20.0 + preflight::DURATION_TOLERANCE)
                .contains(&seconds)
            {
                Verdict::valid_for_test(&format!("MP4/MOV video, {seconds:.1} s"))
            } else {
                Verdict::Invalid {
                    reason: format!("video is {seconds:.1} s long; the service accepts 3–20 s"),
                }
            }
        });
        if let Verdict::Invalid { .. } = &verdict {
            prop_assert_eq!(Some(&verdict), expected.as_ref(), "invalid only for an out-of-range moov");
        }
        if matches!(damage, Damage::None) {
            match expected {
                Some(expected) => prop_assert_eq!(verdict, expected),
                None => prop_assert!(verdict.warning().is_some(), "{:?}", verdict),
            }
        }
    }
}

/// A valid verdict with this detail (the constructor is private to the library).
trait ValidForTest {
    fn valid_for_test(detail: &str) -> Verdict;
}

impl ValidForTest for Verdict {
    fn valid_for_test(detail: &str) -> Verdict {
        Verdict::Valid {
            detail: detail.to_string(),
        }
    }
}
