//! A real browser for the report tests: headless Chromium (Debian's `chromium`, or `$CHROMIUM`)
//! dumping a page's DOM or taking its screenshot, a reader for the DOM it serializes, a check
//! that a screenshot is a picture, and a loopback server (preview pictures, and a folder's
//! files) that records what the browser fetched. Nothing here reaches beyond 127.0.0.1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The browser binary: `$CHROMIUM`, or Debian's package.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium package (`apt-get install -y chromium`; .ci/run does) or set CHROMIUM",
        path.display()
    );
    path
}

/// Chromium with a fresh profile, no network besides what the page asks for, and nothing
/// started in the background. Killed (and the test failed) if it runs over two minutes.
fn run_chromium(url: &str, extra: &[String]) -> Output {
    let profile = tempfile::tempdir().expect("a profile folder");
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("start chromium");
    let pid = child.id() as i32;
    let (finished, watchdog_sees) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = watchdog_sees
            .recv_timeout(Duration::from_secs(120))
            .is_err();
        if timed_out {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        timed_out
    });
    let output = child.wait_with_output().expect("chromium runs");
    let _ = finished.send(());
    assert!(!watchdog.join().unwrap(), "chromium hung and was killed");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The DOM of the page at `url` after its load event (which waits for images, and for each
/// video's metadata), as Chromium serializes it. The window is tall so that lazily loaded
/// images near the bottom load too.
pub fn dump_dom(url: &str) -> String {
    let output = run_chromium(
        url,
        &[
            "--window-size=1280,6000".to_string(),
            "--virtual-time-budget=5000".to_string(),
            "--dump-dom".to_string(),
        ],
    );
    String::from_utf8(output.stdout).expect("the DOM is UTF-8")
}

/// A PNG of the top `width`×`height` pixels of the page at `url`.
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32) {
    run_chromium(
        url,
        &[
            format!("--window-size={width},{height}"),
            "--virtual-time-budget=5000".to_string(),
            format!("--screenshot={}", png.display()),
        ],
    );
    assert!(png.exists(), "chromium wrote no screenshot");
}

/// The `file://` URL of a local page.
pub fn file_url(path: &Path) -> String {
    let path = path.canonicalize().expect("the page exists");
    let encoded: Vec<String> = path
        .to_str()
        .expect("a UTF-8 temporary path")
        .split('/')
        .map(|segment| {
            percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        })
        .collect();
    format!("file://{}", encoded.join("/"))
}

/// An element of a serialized DOM: its name and attributes (values unescaped).
#[derive(Debug, Clone)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What a serialized DOM holds: every element in document order, and the text of the page
/// (text nodes unescaped and joined; style content left out).
#[derive(Debug, Clone)]
pub struct Dom {
    pub elements: Vec<Element>,
    pub text: String,
}

impl Dom {
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements
            .iter()
            .filter(move |element| element.name == name)
    }
}

/// Read HTML as serialized by a browser's DOM (or by maud, which writes it the same way):
/// attribute values double-quoted with `"` escaped, `<` escaped in text. In that form a `<`
/// in text or a quote in a value cannot start markup, so this scanner sees exactly the
/// elements the document has.
pub fn parse(html: &str) -> Dom {
    let bytes = html.as_bytes();
    let mut elements = Vec::new();
    let mut text = String::new();
    let mut index = 0;
    let mut text_start = 0;
    while index < bytes.len() {
        if bytes[index] != b'<' {
            index += 1;
            continue;
        }
        let rest = &html[index..];
        let next = bytes.get(index + 1).copied().unwrap_or(b' ');
        let end = if rest.starts_with("<!--") {
            index + rest.find("-->").map_or(rest.len(), |at| at + 3)
        } else if next == b'!' || next == b'/' {
            index + rest.find('>').map_or(rest.len(), |at| at + 1)
        } else if next.is_ascii_alphabetic() {
            let (element, consumed) = read_tag(rest);
            let mut end = index + consumed;
            // Raw text: the content of these ends only at their closing tag.
            if matches!(element.name.as_str(), "script" | "style") {
                let closing = format!("</{}", element.name);
                end += html[end..].find(&closing).unwrap_or(html.len() - end);
            }
            elements.push(element);
            end
        } else {
            index += 1;
            continue;
        };
        text.push_str(&unescape(&html[text_start..index]));
        text.push(' ');
        index = end;
        text_start = end;
    }
    text.push_str(&unescape(&html[text_start..]));
    Dom { elements, text }
}

/// One start tag at the beginning of `tag`: the element, and how many bytes it took.
fn read_tag(tag: &str) -> (Element, usize) {
    let bytes = tag.as_bytes();
    let mut index = 1;
    let name_end = tag[index..]
        .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .map_or(tag.len(), |at| at + index);
    let name = tag[index..name_end].to_ascii_lowercase();
    index = name_end;
    let mut attrs = Vec::new();
    loop {
        while index < bytes.len() && (bytes[index].is_ascii_whitespace() || bytes[index] == b'/') {
            index += 1;
        }
        if index >= bytes.len() || bytes[index] == b'>' {
            index = (index + 1).min(bytes.len());
            break;
        }
        let key_end = tag[index..]
            .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '>' || c == '/')
            .map_or(tag.len(), |at| at + index);
        let key = tag[index..key_end].to_ascii_lowercase();
        index = key_end;
        let mut value = String::new();
        if bytes.get(index) == Some(&b'=') {
            index += 1;
            let quote = bytes.get(index).copied();
            if quote == Some(b'"') || quote == Some(b'\'') {
                let close = tag[index + 1..]
                    .find(quote.unwrap() as char)
                    .map_or(tag.len(), |at| at + index + 1);
                value = unescape(&tag[index + 1..close]);
                index = (close + 1).min(tag.len());
            } else {
                let stop = tag[index..]
                    .find(|c: char| c.is_ascii_whitespace() || c == '>')
                    .map_or(tag.len(), |at| at + index);
                value = unescape(&tag[index..stop]);
                index = stop;
            }
        }
        attrs.push((key, value));
    }
    (Element { name, attrs }, index)
}

/// Undo HTML character references (the ones serializers write, and numeric ones).
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(semi) = rest.find(';').filter(|semi| *semi < 12) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A decoded screenshot: RGB(A) pixels.
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// RGB triples, row by row.
    pub pixels: Vec<[u8; 3]>,
}

impl Picture {
    pub fn read(path: &Path) -> Picture {
        let file = std::fs::File::open(path).expect("open the screenshot");
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buffer = vec![0; reader.output_buffer_size().expect("a sane size")];
        let info = reader.next_frame(&mut buffer).expect("decode the PNG");
        let channels = info.color_type.samples();
        let pixels = buffer[..info.buffer_size()]
            .chunks_exact(channels)
            .map(|pixel| match channels {
                1 | 2 => [pixel[0]; 3],
                _ => [pixel[0], pixel[1], pixel[2]],
            })
            .collect();
        Picture {
            width: info.width,
            height: info.height,
            pixels,
        }
    }

    /// The standard deviation of the pixels' luma (0–255): near 0 for a blank page.
    pub fn luma_spread(&self) -> f64 {
        let lumas: Vec<f64> = self
            .pixels
            .iter()
            .map(|[r, g, b]| 0.299 * *r as f64 + 0.587 * *g as f64 + 0.114 * *b as f64)
            .collect();
        let mean = lumas.iter().sum::<f64>() / lumas.len() as f64;
        (lumas.iter().map(|luma| (luma - mean).powi(2)).sum::<f64>() / lumas.len() as f64).sqrt()
    }

    /// How many pixels are within `tolerance` of `rgb` on every channel.
    pub fn count_near(&self, rgb: [u8; 3], tolerance: u8) -> usize {
        self.pixels
            .iter()
            .filter(|pixel| {
                pixel
                    .iter()
                    .zip(rgb)
                    .all(|(have, want)| have.abs_diff(want) <= tolerance)
            })
            .count()
    }

    /// How many different colours the picture has.
    pub fn distinct_colours(&self) -> usize {
        self.pixels
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}

/// A loopback HTTP server: `/previews/...` answers with a picture of a person (an SVG whose
/// colours depend on the path), any other path with the file of that name under `root` (when
/// given; percent-decoded, never above `root`), and every path asked for is recorded. Stops
/// when dropped.
pub struct LoopbackServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackServer {
    pub fn start(root: Option<PathBuf>) -> LoopbackServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let requests = requests.clone();
                        let root = root.clone();
                        std::thread::spawn(move || answer(stream, root.as_deref(), &requests));
                    }
                }
            })
        };
        LoopbackServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The paths requested so far (as sent, percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(mut stream: TcpStream, root: Option<&Path>, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    requests.lock().unwrap().push(path.clone());
    let (status, content_type, body) = if path.starts_with("/previews/") {
        ("200 OK", "image/svg+xml", person_svg(&path).into_bytes())
    } else {
        match root.and_then(|root| file_under(root, &path)) {
            Some(file) => {
                let content_type = match file.extension().and_then(|e| e.to_str()) {
                    Some("html") => "text/html; charset=utf-8",
                    Some("mp4") => "video/mp4",
                    _ => "application/octet-stream",
                };
                (
                    "200 OK",
                    content_type,
                    std::fs::read(file).unwrap_or_default(),
                )
            }
            None => ("404 Not Found", "text/plain", b"not found".to_vec()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.shutdown(Shutdown::Both);
}

/// The file a request path names under `root`: percent-decoded segment by segment, no query,
/// and no `..` (nothing above `root` is served).
fn file_under(root: &Path, request_path: &str) -> Option<PathBuf> {
    let path = request_path.split(['?', '#']).next()?;
    let mut file = root.to_path_buf();
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        let segment = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?;
        if segment == ".." || segment == "." || segment.contains('/') {
            return None;
        }
        file.push(segment.as_ref());
    }
    file.is_file().then_some(file)
}

/// A head-and-shoulders silhouette on a background picked from the path, like a subject's
/// preview frame.
fn person_svg(path: &str) -> String {
    const BACKGROUNDS: [(&str, &str); 6] = [
        ("#fde2c8", "#8a5a44"),
        ("#cfe3f7", "#2f4f6f"),
        ("#d8f0dc", "#3d6b48"),
        ("#efd9f5", "#6b3f7a"),
        ("#fbe7a1", "#7a5b16"),
        ("#f7d4d4", "#7a2e2e"),
    ];
    let seed = path.bytes().fold(7u32, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(byte as u32)
    });
    let (background, figure) = BACKGROUNDS[seed as usize % BACKGROUNDS.len()];
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"368\" height=\"276\" viewBox=\"0 0 368 276\">\
         <rect width=\"368\" height=\"276\" fill=\"{background}\"/>\
         <circle cx=\"184\" cy=\"112\" r=\"52\" fill=\"{figure}\"/>\
         <path d=\"M74 276 C84 196 134 176 184 176 C234 176 284 196 294 276 Z\" fill=\"{figure}\"/></svg>"
    )
}
