//! Access logs: one JSON line per answered request, written off the
//! request path.
//!
//! The logging phase formats the line straight into its thread's batch
//! (a byte buffer behind a mutex only that thread and the writer take):
//! no allocation, channel or cross-thread free per line. A batch holds
//! at most `access_log_queue` lines; past that a line is dropped and
//! counted (`apigw_access_log_dropped_total`), a worker never waits. One
//! writer thread swaps every batch out each 20 ms, writes it to stdout or
//! the file and flushes. SIGHUP (logrotate's `postrotate`) reopens the
//! file by its path.
//!
//! What a line holds is chosen, not copied: never a header value, a query
//! string, a cookie, a token or an API key (the key's id only).

use super::lock;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(std::path::PathBuf),
}

impl Target {
    /// `""`: off; `"stdout"`; else a file path.
    pub fn from_setting(s: &str) -> Option<Target> {
        match s {
            "" => None,
            "stdout" | "-" => Some(Target::Stdout),
            p => Some(Target::File(p.into())),
        }
    }
}

/// How often the writer thread takes the queued lines (the queue must
/// hold what arrives meanwhile: `access_log_queue` lines).
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// The handle the data plane writes through (cheap to clone). The writer
/// thread ends, after a last write, when every handle is gone.
#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
}

struct Shared {
    /// Tells this log's batches apart in a thread's list of them.
    id: u64,
    /// One batch per thread that has logged.
    batches: Mutex<Vec<Arc<Mutex<Batch>>>>,
    /// Lines a batch holds at most.
    cap_lines: usize,
    reopen: AtomicBool,
    dropped: Arc<AtomicU64>,
    /// Ticks the writer has completed (see [`AccessLog::flush`]).
    ticks: AtomicU64,
}

/// The lines one thread wrote since the writer's last tick.
#[derive(Default)]
struct Batch {
    text: String,
    lines: usize,
}

static NEXT_LOG_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's batch of each log it has written to (one, but for
    /// tests that run several gateways in one process).
    static BATCHES: std::cell::RefCell<Vec<(u64, Arc<Mutex<Batch>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// One request, as the logging phase knows it.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub trace_id: u128,
    /// The API and stage as the snapshot rendered them once
    /// ([`api_stage_json`]); `None` when no stage was found.
    pub api_stage_json: Option<&'a str>,
    /// The API id when no stage was found (`stage` is then `null`).
    pub api: Option<&'a str>,
    /// The routed resource path, quoted ([`json_quoted`]), rendered by
    /// the snapshot.
    pub resource_path_json: Option<&'a str>,
    pub method: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub integration_us: u64,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub client: IpAddr,
    pub api_key_id: Option<&'a str>,
    pub auth_id: Option<&'a str>,
    pub error: Option<&'static str>,
}

/// `s` as a JSON string, quotes included: what the snapshot renders once
/// for the names every line of a route repeats.
pub fn json_quoted(s: &str) -> Box<str> {
    let mut out = String::with_capacity(s.len() + 2);
    json_str(&mut out, s);
    out.into()
}

/// `"api":…,"stage":…`, rendered once per stage by the snapshot.
pub fn api_stage_json(api: &str, stage: &str) -> Box<str> {
    let mut out = String::with_capacity(api.len() + stage.len() + 20);
    out.push_str("\"api\":");
    json_str(&mut out, api);
    out.push_str(",\"stage\":");
    json_str(&mut out, stage);
    out.into()
}

/// A request method as a JSON string: the common ones written out.
fn push_method(out: &mut String, m: &str) {
    let quoted = match m {
        "GET" => "\"GET\"",
        "POST" => "\"POST\"",
        "PUT" => "\"PUT\"",
        "DELETE" => "\"DELETE\"",
        "PATCH" => "\"PATCH\"",
        "HEAD" => "\"HEAD\"",
        "OPTIONS" => "\"OPTIONS\"",
        other => return json_str(out, other),
    };
    out.push_str(quoted);
}

/// `s` as a JSON string. Most values (ids, paths, methods) need no
/// escaping: they are copied whole; only a value with a quote, a
/// backslash or a control character is escaped character by character.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

/// Whether `s` holds a `"`, a `\\` or a control character, eight bytes
/// at a time (the byte-wise test cost about 6 instructions per byte).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Some byte of x is zero / some byte of x is under n (n <= 128):
    // exact for "is there one" (bytes >= 0x80 never count).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let under = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_le_bytes(w);
        if under(v, 0x20) | zero(v ^ (ONES * 0x22)) | zero(v ^ (ONES * 0x5c)) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

/// A decimal integer, without `core::fmt`.
fn push_u64(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Microseconds as milliseconds with three decimals (`1500` → `1.500`),
/// exactly what `{:.3}` of `us / 1000.0` prints, without float
/// formatting.
fn push_ms(out: &mut String, us: u64) {
    push_u64(out, us / 1000);
    push_thousandths(out, (us % 1000) as u32);
}

/// `.` and `n` (< 1000) as three digits, zeros first.
fn push_thousandths(out: &mut String, n: u32) {
    // Four pushes: cheaper than one copy of a checked 4-byte str
    // (callgrind: the copy and its UTF-8 check cost twice as much).
    out.push('.');
    out.push(char::from(b'0' + (n / 100 % 10) as u8));
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// The client address (IPv4 without `core::fmt`).
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, o as u64);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn opt_u64(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => push_u64(out, v),
        None => out.push_str("null"),
    }
}

/// The current UTC time as RFC 3339 with milliseconds. The part down to
/// the second is formatted once per second and thread (chrono's
/// formatter parses its pattern on every call).
fn push_time(out: &mut String) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            c.0 = secs;
            c.1 = chrono::DateTime::from_timestamp(secs as i64, 0)
                .map(|d| d.format("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
        }
        out.push_str(&c.1);
    });
    push_thousandths(out, now.subsec_millis());
    out.push('Z');
}

impl Entry<'_> {
    /// The JSON line, newline included.
    pub fn format(&self) -> String {
        let mut s = String::with_capacity(512);
        self.format_into(&mut s);
        s
    }

    /// The JSON line, newline included, appended to `s`.
    fn format_into(&self, s: &mut String) {
        s.push_str("{\"time\":\"");
        push_time(s);
        s.push_str("\",\"request_id\":");
        json_str(s, self.request_id);
        s.push_str(",\"trace_id\":\"");
        let mut hex = [0u8; 32];
        crate::telemetry::trace::hex_into(&mut hex, self.trace_id);
        s.push_str(std::str::from_utf8(&hex).unwrap_or(""));
        s.push_str("\",");
        match self.api_stage_json {
            Some(names) => s.push_str(names),
            None => {
                s.push_str("\"api\":");
                opt_str(s, self.api);
                s.push_str(",\"stage\":null");
            }
        }
        s.push_str(",\"resource_path\":");
        s.push_str(self.resource_path_json.unwrap_or("null"));
        s.push_str(",\"method\":");
        push_method(s, self.method);
        s.push_str(",\"status\":");
        push_u64(s, self.status as u64);
        s.push_str(",\"latency_ms\":");
        push_ms(s, self.latency_us);
        s.push_str(",\"integration_latency_ms\":");
        push_ms(s, self.integration_us);
        s.push_str(",\"bytes_in\":");
        opt_u64(s, self.bytes_in);
        s.push_str(",\"bytes_out\":");
        opt_u64(s, self.bytes_out);
        s.push_str(",\"client\":\"");
        push_ip(s, self.client);
        s.push_str("\",\"api_key_id\":");
        opt_str(s, self.api_key_id);
        s.push_str(",\"auth_id\":");
        opt_str(s, self.auth_id);
        s.push_str(",\"error\":");
        opt_str(s, self.error);
        s.push_str("}\n");
    }
}

/// Unbuffered: the writer hands it one thread's whole batch at a time.
enum Sink {
    Stdout(std::io::Stdout),
    File(std::fs::File),
}

impl Sink {
    fn open(t: &Target) -> std::io::Result<Sink> {
        Ok(match t {
            Target::Stdout => Sink::Stdout(std::io::stdout()),
            Target::File(p) => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        })
    }
    fn out(&mut self) -> &mut dyn std::io::Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File(w) => w,
        }
    }
}

impl AccessLog {
    /// Open the target and start the writer thread; a thread's batch
    /// holds `queue` lines at most; `dropped` counts the lines a full
    /// batch refused.
    pub fn start(target: Target, queue: usize, dropped: Arc<AtomicU64>) -> std::io::Result<Self> {
        let mut sink = Sink::open(&target)?;
        let shared = Arc::new(Shared {
            id: NEXT_LOG_ID.fetch_add(1, Relaxed),
            batches: Mutex::new(Vec::new()),
            cap_lines: queue.max(1),
            reopen: AtomicBool::new(false),
            dropped,
            ticks: AtomicU64::new(0),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("apigw-access-log".into())
            .spawn(move || {
                // The batch swapped in for the one taken (its room kept).
                let mut spare = String::new();
                loop {
                    // Batches are taken every WRITE_EVERY, never line by
                    // line: a request never wakes this thread (no futex,
                    // no write per line), and each tick is one write per
                    // thread that logged.
                    std::thread::sleep(WRITE_EVERY);
                    // Only this thread holds the log: the last tick.
                    let gone = Arc::strong_count(&writer) == 1;
                    if writer.reopen.swap(false, Relaxed) {
                        let _ = sink.out().flush();
                        match Sink::open(&target) {
                            Ok(s) => sink = s,
                            Err(e) => tracing::error!(error = %e, "access log: reopen failed; writing on to the old file"),
                        }
                    }
                    let batches = lock(&writer.batches).clone();
                    let mut failed = false;
                    let mut wrote = false;
                    for batch in &batches {
                        {
                            let mut b = lock(batch);
                            if b.lines == 0 {
                                continue;
                            }
                            std::mem::swap(&mut b.text, &mut spare);
                            b.lines = 0;
                        }
                        wrote = true;
                        failed |= sink.out().write_all(spare.as_bytes()).is_err();
                        spare.clear();
                    }
                    if wrote || gone {
                        failed |= sink.out().flush().is_err();
                    }
                    if failed {
                        tracing::warn!("access log: write failed");
                    }
                    writer.ticks.fetch_add(1, Relaxed);
                    if gone {
                        return;
                    }
                }
            })?;
        Ok(AccessLog { shared })
    }

    /// Write a line into this thread's batch; dropped and counted when the
    /// batch is full (the writer has fallen behind).
    #[inline]
    pub fn log(&self, entry: &Entry<'_>) {
        let shared = &*self.shared;
        let written = BATCHES.try_with(|list| {
            let mut list = list.borrow_mut();
            let batch = match list.iter().position(|(id, _)| *id == shared.id) {
                Some(i) => &list[i].1,
                None => {
                    // This thread's first line: its batch, shown to the writer.
                    let b = Arc::new(Mutex::new(Batch::default()));
                    lock(&shared.batches).push(b.clone());
                    list.push((shared.id, b));
                    &list[list.len() - 1].1
                }
            };
            // Taken by the writer for a swap only: never waited on for long.
            let mut b = lock(batch);
            if b.lines >= shared.cap_lines {
                return false;
            }
            if b.text.capacity() == 0 {
                b.text.reserve(64 * 1024);
            }
            entry.format_into(&mut b.text);
            b.lines += 1;
            true
        });
        // Not written: the batch is full, or the thread is being torn down.
        if written != Ok(true) {
            shared.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Wait (at most `within`) until every line queued before this call is
    /// written and flushed: two writer ticks, the second of which started
    /// after the call. For the end of a drain.
    pub async fn flush(&self, within: Duration) {
        let from = self.shared.ticks.load(Relaxed);
        let _ = tokio::time::timeout(within, async {
            while self.shared.ticks.load(Relaxed) < from + 2 {
                tokio::time::sleep(WRITE_EVERY / 2).await;
            }
        })
        .await;
    }

    /// Reopen the file by its path before the next write (SIGHUP).
    pub fn reopen(&self) {
        // Taken by the writer at its next tick.
        self.shared.reopen.store(true, Relaxed);
    }

    /// On every SIGHUP, reopen (a task of the current runtime).
    pub fn reopen_on_sighup(&self) {
        #[cfg(unix)]
        {
            let log = self.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::hangup()) {
                    Ok(mut hup) => {
                        while hup.recv().await.is_some() {
                            tracing::info!("SIGHUP: access log reopened");
                            log.reopen();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "access log: cannot listen for SIGHUP"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_json_with_escaped_strings() {
        let path = json_quoted("/pets/{id}");
        let e = Entry {
            trace_id: 0xabc,
            api: Some("a1"),
            resource_path_json: Some(&path),
            latency_us: 1500,
            bytes_out: Some(12),
            auth_id: Some("au1"),
            ..entry("r\"1")
        };
        let line = e.format();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["trace_id"], "00000000000000000000000000000abc");
        assert_eq!(v["api"], "a1");
        assert_eq!(v["stage"], serde_json::Value::Null);
        assert_eq!(v["resource_path"], "/pets/{id}");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["latency_ms"], 1.5);
        assert_eq!(v["bytes_out"], 12);
        assert_eq!(v["client"], "127.0.0.1");
    }

    fn entry(request_id: &str) -> Entry<'_> {
        Entry {
            request_id,
            trace_id: 7,
            api_stage_json: None,
            api: None,
            resource_path_json: None,
            method: "GET",
            status: 200,
            latency_us: 1,
            integration_us: 0,
            bytes_in: None,
            bytes_out: None,
            client: "127.0.0.1".parse().unwrap(),
            api_key_id: None,
            auth_id: None,
            error: None,
        }
    }

    fn lines_of(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn every_threads_lines_are_written_whole_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let dropped = Arc::new(AtomicU64::new(0));
        let log = AccessLog::start(Target::File(path.clone()), 10_000, dropped.clone()).unwrap();
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        log.log(&entry(&format!("t{t}-{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.log(&entry("main"));
        log.flush(Duration::from_secs(5)).await;
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 601);
        assert_eq!(dropped.load(Relaxed), 0);
        // Each thread's lines in the order it wrote them.
        for t in 0..3 {
            let ids: Vec<String> = lines
                .iter()
                .filter_map(|v| v["request_id"].as_str())
                .filter(|id| id.starts_with(&format!("t{t}-")))
                .map(str::to_string)
                .collect();
            let want: Vec<String> = (0..200).map(|i| format!("t{t}-{i}")).collect();
            assert_eq!(ids, want);
        }
        // The last handle gone, the writer writes what is left and ends.
        log.log(&entry("last"));
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines_of(&path).len() < 602 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lines_of(&path).last().unwrap()["request_id"], "last");
    }

    #[tokio::test]
    async fn a_full_batch_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let dropped = Arc::new(AtomicU64::new(0));
        let log = AccessLog::start(Target::File(path.clone()), 2, dropped.clone()).unwrap();
        for i in 0..1000 {
            log.log(&entry(&i.to_string()));
        }
        log.flush(Duration::from_secs(5)).await;
        let written = lines_of(&path).len() as u64;
        let dropped = dropped.load(Relaxed);
        assert_eq!(written + dropped, 1000);
        // Two lines per writer tick (20 ms) at most got through.
        assert!(
            dropped > 0 && written >= 2,
            "written {written}, dropped {dropped}"
        );
    }

    #[test]
    fn names_rendered_by_the_snapshot_are_escaped_once() {
        let names = api_stage_json("a\"1", "s\\1");
        let path = json_quoted("/p/\u{1}");
        for method in ["GET", "OPTIONS", "PROPFIND", "X\"Y"] {
            let e = Entry {
                api_stage_json: Some(&names),
                resource_path_json: Some(&path),
                method,
                status: 404,
                bytes_in: Some(0),
                client: "::1".parse().unwrap(),
                api_key_id: Some("k1"),
                error: Some("NotFound"),
                ..entry("r1")
            };
            let v: serde_json::Value = serde_json::from_str(&e.format()).unwrap();
            assert_eq!(v["api"], "a\"1");
            assert_eq!(v["stage"], "s\\1");
            assert_eq!(v["resource_path"], "/p/\u{1}");
            assert_eq!(v["method"], method);
            assert_eq!(v["client"], "::1");
            assert_eq!(v["error"], "NotFound");
        }
    }

    #[test]
    fn numbers_and_escapes_as_core_fmt_would_write_them() {
        for us in [0u64, 7, 999, 1000, 1500, 12_345_678] {
            let mut s = String::new();
            push_ms(&mut s, us);
            assert_eq!(s, format!("{:.3}", us as f64 / 1000.0));
        }
        for ip in ["10.0.255.1", "0.0.0.0", "::1", "2001:db8::8"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
        for raw in [
            "plain/path",
            "q\"uote",
            "back\\slash",
            "tab\there",
            "ünï",
            "0123456789abcdef\u{1f}",
            "0123456\"89abcdef",
            "012345678901234\\",
        ] {
            let mut s = String::new();
            json_str(&mut s, raw);
            let back: String = serde_json::from_str(&s).unwrap();
            assert_eq!(back, raw);
        }
        // Every byte value, alone and at each place of an 8-byte word.
        for b in 0u8..=255 {
            for at in 0..9 {
                let mut v = vec![b'a'; 9];
                v[at] = b;
                let expect = b == b'"' || b == b'\\' || b < 0x20;
                assert_eq!(needs_escape(&v), expect, "byte {b:#x} at {at}");
            }
        }
        let mut t = String::new();
        push_time(&mut t);
        assert_eq!(t.len(), "2026-12-02T05:00:00.000Z".len());
        assert!(t.ends_with('Z'));
    }
}
