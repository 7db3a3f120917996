//! HTTP for pulls: one blocking ureq agent that trusts the system's CA bundle (so a proxy's
//! CA installed on the machine works, as it does for curl and pip), and a resumable download
//! into a `.part` file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::events::PullEvent;
use crate::{Result, StoreError};

/// Attempts per download: a dropped connection resumes from the bytes already written.
const ATTEMPTS: u32 = 6;
const CHUNK: usize = 256 * 1024;
/// How often a file's progress is reported.
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Index pages and repository listings are small; refuse anything larger.
const MAX_PAGE_BYTES: u64 = 64 << 20;

pub(crate) struct Http {
    agent: ureq::Agent,
}

/// A download's expected digest and size, when known in advance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected<'a> {
    pub sha256: Option<&'a str>,
    pub size: Option<u64>,
}

/// A page's body and the URL it came from after redirects (relative links resolve from it).
pub(crate) struct Page {
    pub body: String,
    pub url: String,
    pub content_type: String,
    /// The `rel="next"` target of a `Link` header (paginated listings).
    pub next: Option<String>,
}

impl Http {
    pub(crate) fn new() -> Http {
        let tls = TlsConfig::builder().root_certs(system_roots()).build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A whole body may take as long as it takes; a read that stalls for a minute
            // fails, and the download resumes on a new connection.
            .timeout_recv_body(None)
            .timeout_per_call(None)
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("owl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Http { agent }
    }

    fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.call().map_err(|e| StoreError::Http { url: url.to_string(), message: e.to_string() })
    }

    /// A small text resource (index page, JSON listing). `Ok(None)` on 404.
    pub(crate) fn page(&self, url: &str, headers: &[(&str, String)]) -> Result<Option<Page>> {
        let resp = self.get(url, headers)?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(status_error(url, status));
        }
        let content_type = header(&resp, "content-type").unwrap_or_default();
        let next = header(&resp, "link").and_then(|v| link_next(&v));
        let final_url = resp.extensions().get::<ureq::http::Uri>().map(ToString::to_string);
        let body = resp
            .into_body()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_to_string()
            .map_err(|e| StoreError::Http { url: url.to_string(), message: e.to_string() })?;
        Ok(Some(Page { body, url: final_url.unwrap_or_else(|| url.to_string()), content_type, next }))
    }

    /// Downloads `url` into `part`, resuming what `part` already holds with a Range request,
    /// and retrying a dropped connection. Returns the file's sha256 and size after checking
    /// them against `expected`; on a mismatch `part` is deleted.
    ///
    /// A part is only resumed when the result can be trusted to be one file: with an
    /// expected digest, or with the validator (strong ETag, else Last-Modified) its first
    /// response gave, sent back as `If-Range` so that a file changed in between comes whole
    /// (200) rather than spliced. The validator is kept beside the part (`.validator`).
    pub(crate) fn download(
        &self,
        url: &str,
        headers: &[(&str, String)],
        part: &Path,
        label: &str,
        expected: Expected<'_>,
        events: &dyn Fn(&PullEvent),
    ) -> Result<(String, u64)> {
        let what = |s: &str| format!("{s} {}", part.display());
        let validator_path = {
            let mut p = part.as_os_str().to_owned();
            p.push(".validator");
            std::path::PathBuf::from(p)
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(part)
            .map_err(StoreError::io(what("cannot open")))?;
        let mut have = file.metadata().map_err(StoreError::io(what("cannot stat")))?.len();
        let mut validator = std::fs::read_to_string(&validator_path).ok().filter(|v| !v.trim().is_empty());
        let unverifiable = expected.sha256.is_none() && validator.is_none();
        if have > 0 && (unverifiable || expected.size.is_some_and(|size| have > size)) {
            file.set_len(0).map_err(StoreError::io(what("cannot truncate")))?;
            have = 0;
        }
        let fetch = Fetch { url, headers, label, expected_size: expected.size, validator_path: &validator_path };
        let mut failures = 0;
        let mut restarted = false;
        loop {
            if expected.size == Some(have) && have > 0 {
                break;
            }
            let before = have;
            match self.fetch_into(&fetch, &mut file, &mut have, &mut validator, events) {
                Ok(Fetched::Complete) => break,
                Ok(Fetched::RangeNotSatisfiable) if have > 0 && !restarted => {
                    // Either the file was complete, or the part is not a prefix of it: the
                    // digest tells; a wrong part restarts once from zero.
                    if matches_expected(part, expected)? {
                        break;
                    }
                    file.set_len(0).map_err(StoreError::io(what("cannot truncate")))?;
                    have = 0;
                    restarted = true;
                }
                Ok(Fetched::RangeNotSatisfiable) => return Err(status_error(url, 416)),
                Err(FetchError::Fatal(e)) => return Err(e),
                Err(FetchError::Dropped(message)) => {
                    // Attempts count from the last one that made progress: a long download
                    // over a flaky link goes on as long as it gets somewhere.
                    if have > before {
                        failures = 0;
                    }
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(StoreError::Http {
                            url: url.to_string(),
                            message: format!(
                                "{message}; gave up after {ATTEMPTS} attempts with {have} bytes kept (pull again to resume)"
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(300 * u64::from(failures)));
                }
            }
        }
        let result = verify(part, &mut file, label, expected, events);
        let _ = std::fs::remove_file(&validator_path);
        result
    }
}

/// One download's fixed facts.
struct Fetch<'a> {
    url: &'a str,
    headers: &'a [(&'a str, String)],
    label: &'a str,
    expected_size: Option<u64>,
    validator_path: &'a Path,
}

impl Http {
    fn fetch_into(
        &self,
        fetch: &Fetch<'_>,
        file: &mut File,
        have: &mut u64,
        validator: &mut Option<String>,
        events: &dyn Fn(&PullEvent),
    ) -> std::result::Result<Fetched, FetchError> {
        let (url, label, expected_size) = (fetch.url, fetch.label, fetch.expected_size);
        let mut all: Vec<(&str, String)> = fetch.headers.to_vec();
        if *have > 0 {
            all.push(("Range", format!("bytes={have}-")));
            if let Some(v) = validator.as_deref() {
                all.push(("If-Range", v.to_string()));
            }
        }
        let resp = self.get(url, &all).map_err(|e| match e {
            // Connection-level failures are worth another attempt.
            StoreError::Http { message, .. } => FetchError::Dropped(message),
            other => FetchError::Fatal(other),
        })?;
        let status = resp.status().as_u16();
        let total = match status {
            200 => {
                if *have > 0 {
                    // The server ignored the Range, or the file changed (If-Range): start again.
                    file.set_len(0).map_err(|e| fatal_io(e, "cannot truncate"))?;
                    *have = 0;
                }
                // What a later resume must find unchanged.
                let etag = header(&resp, "etag").filter(|e| !e.starts_with("W/"));
                *validator = etag.or_else(|| header(&resp, "last-modified"));
                match validator.as_deref() {
                    Some(v) => {
                        let _ = std::fs::write(fetch.validator_path, v);
                    }
                    None => {
                        let _ = std::fs::remove_file(fetch.validator_path);
                    }
                }
                header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok())
            }
            206 => {
                let range = header(&resp, "content-range").unwrap_or_default();
                match parse_content_range(&range) {
                    Some((start, total)) if start == *have => total,
                    _ => {
                        file.set_len(0).map_err(|e| fatal_io(e, "cannot truncate"))?;
                        *have = 0;
                        return Err(FetchError::Dropped(format!("unexpected Content-Range '{range}'")));
                    }
                }
            }
            416 => return Ok(Fetched::RangeNotSatisfiable),
            s if s >= 500 || s == 429 => return Err(FetchError::Dropped(format!("HTTP {s}"))),
            s => return Err(FetchError::Fatal(status_error(url, s))),
        };
        let total = total.or(expected_size);
        if let (Some(t), Some(e)) = (total, expected_size) {
            if t != e {
                return Err(FetchError::Fatal(StoreError::Size { what: label.to_string(), expected: e, got: t }));
            }
        }
        events(&PullEvent::Download { file: label.to_string(), completed: *have, total });
        let mut body = resp.into_body();
        let mut reader = body.with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; CHUNK];
        let mut last_report = Instant::now();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    file.flush().map_err(|e| fatal_io(e, "cannot write"))?;
                    return Err(FetchError::Dropped(format!("connection lost after {have} bytes: {e}")));
                }
            };
            if total.is_some_and(|t| *have + n as u64 > t) {
                file.set_len(0).map_err(|e| fatal_io(e, "cannot truncate"))?;
                *have = 0;
                return Err(FetchError::Fatal(StoreError::data(label, "the server sent more bytes than announced")));
            }
            file.write_all(&buf[..n]).map_err(|e| fatal_io(e, "cannot write"))?;
            *have += n as u64;
            if last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                events(&PullEvent::Download { file: label.to_string(), completed: *have, total });
            }
        }
        file.flush().map_err(|e| fatal_io(e, "cannot write"))?;
        events(&PullEvent::Download { file: label.to_string(), completed: *have, total });
        if total.is_some_and(|t| *have < t) {
            return Err(FetchError::Dropped(format!("connection closed at {have} of {} bytes", total.unwrap_or(0))));
        }
        Ok(Fetched::Complete)
    }
}

enum Fetched {
    Complete,
    RangeNotSatisfiable,
}

enum FetchError {
    /// Worth another attempt from where the file stands.
    Dropped(String),
    Fatal(StoreError),
}

fn fatal_io(e: std::io::Error, what: &str) -> FetchError {
    FetchError::Fatal(StoreError::Io { what: format!("{what} a download"), source: e })
}

/// Whether the part is the expected file (digest, else size); nothing is deleted.
fn matches_expected(part: &Path, expected: Expected<'_>) -> Result<bool> {
    let size = std::fs::metadata(part).map_err(StoreError::io(format!("cannot stat {}", part.display())))?.len();
    if expected.size.is_some_and(|want| want != size) {
        return Ok(false);
    }
    match expected.sha256 {
        Some(want) => Ok(crate::hash::sha256_file(part)? == want),
        None => Ok(expected.size.is_some()),
    }
}

/// Hashes the finished part, syncs it, and checks it; a mismatch deletes it.
fn verify(
    part: &Path,
    file: &mut File,
    label: &str,
    expected: Expected<'_>,
    events: &dyn Fn(&PullEvent),
) -> Result<(String, u64)> {
    events(&PullEvent::Verifying { file: label.to_string() });
    file.sync_all().map_err(StoreError::io(format!("cannot sync {}", part.display())))?;
    file.seek(SeekFrom::Start(0)).map_err(StoreError::io(format!("cannot read {}", part.display())))?;
    let size = file.metadata().map_err(StoreError::io(format!("cannot stat {}", part.display())))?.len();
    let digest = crate::hash::sha256_file(part)?;
    if let Some(want) = expected.size {
        if want != size {
            let _ = std::fs::remove_file(part);
            return Err(StoreError::Size { what: label.to_string(), expected: want, got: size });
        }
    }
    if let Some(want) = expected.sha256 {
        if want != digest {
            let _ = std::fs::remove_file(part);
            return Err(StoreError::Digest { what: label.to_string(), expected: want.to_string(), got: digest });
        }
    }
    Ok((digest, size))
}

/// The URL of `<URL>; rel="next"` in a Link header.
fn link_next(v: &str) -> Option<String> {
    v.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `bytes START-END/TOTAL` → (START, TOTAL if given).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

pub(crate) fn status_error(url: &str, status: u16) -> StoreError {
    let hint = match status {
        401 | 403 => " (a gated or private repository needs a token: set HF_TOKEN)".to_string(),
        404 => " (not found)".to_string(),
        _ => String::new(),
    };
    StoreError::Status { url: url.to_string(), status, hint }
}

/// The CA bundle curl and pip use here (`SSL_CERT_FILE`, else the distribution's bundle), so a
/// TLS-intercepting proxy whose CA the machine trusts works; Mozilla's roots (webpki) when no
/// bundle is found.
fn system_roots() -> RootCerts {
    let candidates =
        std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from).into_iter().chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/ca-bundle.pem",
                "/etc/ssl/cert.pem",
                "/usr/local/etc/openssl/cert.pem",
            ]
            .map(std::path::PathBuf::from),
        );
    for path in candidates {
        let Ok(pem) = std::fs::read(&path) else { continue };
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            return RootCerts::Specific(Arc::new(certs));
        }
    }
    RootCerts::WebPki
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(
            link_next(r#"<https://h/api?cursor=a>; rel="next", <https://h/api>; rel="first""#).as_deref(),
            Some("https://h/api?cursor=a")
        );
    }
}
