//! A small HTTP/1.1 server on 127.0.0.1 for store tests: it imitates a model hub and a
//! package index, and misbehaves on request (drops a connection mid-file, serves slowly,
//! answers a status). One thread per connection, `Connection: close` on every reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What a path answers.
#[derive(Debug, Clone, Default)]
pub struct Route {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: String,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// The first `n` requests of this path send the headers for the whole body, then only
    /// `bytes` bytes, then close the connection.
    pub drop_first: Option<(usize, usize)>,
    /// Send the body in chunks of `.0` bytes with `.1` between them.
    pub throttle: Option<(usize, Duration)>,
    /// Whether Range requests are honoured (206); otherwise the whole body (200).
    pub ranges: bool,
    /// Answer only requests that carry this Authorization header value; others get 401.
    pub require_auth: Option<String>,
    /// Sent as `ETag`; a Range request whose `If-Range` differs gets the whole body (200).
    pub etag: Option<String>,
}

impl Route {
    pub fn file(body: impl Into<Vec<u8>>) -> Route {
        Route {
            status: 200,
            body: body.into(),
            content_type: "application/octet-stream".into(),
            ranges: true,
            ..Route::default()
        }
    }

    pub fn json(value: &serde_json::Value) -> Route {
        Route {
            status: 200,
            body: value.to_string().into_bytes(),
            content_type: "application/json".into(),
            ..Route::default()
        }
    }

    pub fn html(text: &str) -> Route {
        Route { status: 200, body: text.as_bytes().to_vec(), content_type: "text/html".into(), ..Route::default() }
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Path with query.
    pub target: String,
    pub headers: HashMap<String, String>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    served: HashMap<String, usize>,
    seen: Vec<SeenRequest>,
}

pub struct MockServer {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl MockServer {
    /// Listens on an ephemeral port of 127.0.0.1 until the process ends.
    pub fn start() -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        MockServer { port, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets what `path` (without query) answers.
    pub fn route(&self, path: &str, route: Route) {
        self.lock().routes.insert(path.to_string(), route);
    }

    /// Every request so far whose path (without query) is `path`.
    pub fn requests(&self, path: &str) -> Vec<SeenRequest> {
        self.lock().seen.iter().filter(|r| r.target.split('?').next() == Some(path)).cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    let (route, nth) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.seen.push(SeenRequest { target: target.clone(), headers: headers.clone() });
        let nth = *s.served.entry(path.clone()).and_modify(|n| *n += 1).or_insert(1);
        (s.routes.get(&path).cloned(), nth)
    };
    let mut out = stream;
    let Some(route) = route else {
        return respond(&mut out, 404, "text/plain", &[], b"not found");
    };
    if let Some(want) = &route.require_auth {
        if headers.get("authorization") != Some(want) {
            return respond(&mut out, 401, "text/plain", &[], b"unauthorized");
        }
    }
    if route.status != 200 {
        return respond(&mut out, route.status, &route.content_type, &route.headers, &route.body);
    }
    let total = route.body.len();
    let if_range_fails = headers.get("if-range").is_some_and(|v| route.etag.as_deref() != Some(v.as_str()));
    let range = if if_range_fails { None } else { headers.get("range") };
    let start = match range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-')) {
        Some(s) if route.ranges => match s.parse::<usize>() {
            Ok(n) if n < total => Some(n),
            Ok(_) => {
                let h = vec![("Content-Range".to_string(), format!("bytes */{total}"))];
                return respond(&mut out, 416, "text/plain", &h, b"");
            }
            Err(_) => None,
        },
        _ => None,
    };
    let from = start.unwrap_or(0);
    let body = &route.body[from..];
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        if start.is_some() { 206 } else { 200 },
        if start.is_some() { "Partial Content" } else { "OK" },
        route.content_type,
        body.len()
    );
    if start.is_some() {
        head.push_str(&format!("Content-Range: bytes {from}-{}/{total}\r\n", total - 1));
    }
    if route.ranges {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    if let Some(etag) = &route.etag {
        head.push_str(&format!("ETag: {etag}\r\n"));
    }
    for (k, v) in &route.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let limit = match route.drop_first {
        Some((n, bytes)) if nth <= n => bytes.min(body.len()),
        _ => body.len(),
    };
    match route.throttle {
        Some((chunk, pause)) => {
            for piece in body[..limit].chunks(chunk.max(1)) {
                out.write_all(piece)?;
                out.flush()?;
                thread::sleep(pause);
            }
        }
        None => out.write_all(&body[..limit])?,
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    // Drain whatever the client still sends, so the close is not a reset.
    let _ = reader.read(&mut [0u8; 64]);
    Ok(())
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    content_type: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
