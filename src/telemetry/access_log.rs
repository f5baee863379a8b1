//! Access logs: one JSON line per answered request, written off the
//! request path.
//!
//! The logging phase formats the line (one `String`) and hands it to a
//! bounded queue with `try_send`: when the queue is full the line is
//! dropped and counted (`apigw_access_log_dropped_total`), a worker never
//! waits. One writer thread drains the queue into a buffered stdout or
//! file, flushing whenever the queue is empty. SIGHUP (logrotate's
//! `postrotate`) reopens the file by its path.
//!
//! What a line holds is chosen, not copied: never a header value, a query
//! string, a cookie, a token or an API key (the key's id only).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
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

/// The handle the data plane writes through (cheap to clone).
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

/// One request, as the logging phase knows it.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub trace_id: u128,
    pub api: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub resource_path: Option<&'a str>,
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

fn json_str(out: &mut String, s: &str) {
    out.push('"');
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
    out.push('"');
}

fn opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn opt_u64(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

impl Entry<'_> {
    /// The JSON line, newline included.
    pub fn format(&self) -> String {
        let mut s = String::with_capacity(384);
        let now = chrono::Utc::now();
        let _ = write!(
            s,
            "{{\"time\":\"{}\",\"request_id\":",
            now.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        json_str(&mut s, self.request_id);
        let _ = write!(s, ",\"trace_id\":\"{:032x}\",\"api\":", self.trace_id);
        opt_str(&mut s, self.api);
        s.push_str(",\"stage\":");
        opt_str(&mut s, self.stage);
        s.push_str(",\"resource_path\":");
        opt_str(&mut s, self.resource_path);
        s.push_str(",\"method\":");
        json_str(&mut s, self.method);
        let _ = write!(
            s,
            ",\"status\":{},\"latency_ms\":{:.3},\"integration_latency_ms\":{:.3},\"bytes_in\":",
            self.status,
            self.latency_us as f64 / 1000.0,
            self.integration_us as f64 / 1000.0
        );
        opt_u64(&mut s, self.bytes_in);
        s.push_str(",\"bytes_out\":");
        opt_u64(&mut s, self.bytes_out);
        let _ = write!(s, ",\"client\":\"{}\",\"api_key_id\":", self.client);
        opt_str(&mut s, self.api_key_id);
        s.push_str(",\"auth_id\":");
        opt_str(&mut s, self.auth_id);
        s.push_str(",\"error\":");
        opt_str(&mut s, self.error);
        s.push_str("}\n");
        s
    }
}

enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(std::io::BufWriter<std::fs::File>),
}

impl Sink {
    fn open(t: &Target) -> std::io::Result<Sink> {
        Ok(match t {
            Target::Stdout => Sink::Stdout(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stdout(),
            )),
            Target::File(p) => Sink::File(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
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
    /// Open the target and start the writer thread; `queue` lines at most
    /// wait; `dropped` counts the lines a full queue refused.
    pub fn start(target: Target, queue: usize, dropped: Arc<AtomicU64>) -> std::io::Result<Self> {
        let mut sink = Sink::open(&target)?;
        let (tx, rx) = sync_channel::<String>(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("apigw-access-log".into())
            .spawn(move || loop {
                let line = match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(l) => Some(l),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        let _ = sink.out().flush();
                        return;
                    }
                };
                if flag.swap(false, Relaxed) {
                    let _ = sink.out().flush();
                    match Sink::open(&target) {
                        Ok(s) => sink = s,
                        Err(e) => tracing::error!(error = %e, "access log: reopen failed; writing on to the old file"),
                    }
                }
                let mut failed = false;
                if let Some(l) = line {
                    failed |= sink.out().write_all(l.as_bytes()).is_err();
                    while let Ok(l) = rx.try_recv() {
                        failed |= sink.out().write_all(l.as_bytes()).is_err();
                    }
                }
                failed |= sink.out().flush().is_err();
                if failed {
                    tracing::warn!("access log: write failed");
                }
            })?;
        Ok(AccessLog {
            tx,
            reopen,
            dropped,
        })
    }

    /// Queue a line; dropped and counted when the queue is full.
    #[inline]
    pub fn send(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Reopen the file by its path before the next write (SIGHUP).
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
        // Wake the writer (an empty line writes nothing).
        let _ = self.tx.try_send(String::new());
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
        let e = Entry {
            request_id: "r\"1",
            trace_id: 0xabc,
            api: Some("a1"),
            stage: None,
            resource_path: Some("/pets/{id}"),
            method: "GET",
            status: 200,
            latency_us: 1500,
            integration_us: 0,
            bytes_in: None,
            bytes_out: Some(12),
            client: "127.0.0.1".parse().unwrap(),
            api_key_id: None,
            auth_id: Some("au1"),
            error: None,
        };
        let line = e.format();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["trace_id"], "00000000000000000000000000000abc");
        assert_eq!(v["stage"], serde_json::Value::Null);
        assert_eq!(v["latency_ms"], 1.5);
        assert_eq!(v["bytes_out"], 12);
    }
}
