//! Per-stage, per-day (UTC) request statistics behind the List Reports
//! operation (`GET /v1/apis/{api_id}/reports`).
//!
//! Hot path: [`StageStats::record`] touches only a shard of relaxed atomic
//! counters picked by a thread-local index (no lock, no allocation, no
//! clock read): the status class counter, the latency sum and a log-scale
//! latency histogram bucket, the same two for the integration latency when
//! the request went upstream, and the matched route's 2xx counter. Shards
//! are cache-line aligned, so worker threads do not share lines.
//!
//! Off the hot path: [`Stats::flush`] (every `interval`, from
//! [`Stats::spawn_flusher`]) swaps every shard's counters to zero and adds
//! them to the aggregate of the current UTC day, then upserts the changed
//! days through a [`StatsStore`]. Each counter is taken by exactly one
//! flush, so nothing is lost or counted twice. [`Stats::report`] folds the
//! stage's pending counters first, so a report is always current.
//!
//! Day attribution: counts belong to the UTC day of the flush that takes
//! them. The flusher wakes exactly at UTC midnight and attributes that
//! flush to the day that just ended, so a request recorded within the
//! scheduling slack around midnight (milliseconds) may land in either day.
//!
//! Durability: a crash loses at most the last flush interval of counts.

use super::lock;
use crate::clock::{Clock, SystemClock};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The body of List Reports (`GET /v1/apis/{api_id}/reports`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportListResponse {
    pub count: usize,
    pub reports: Vec<Report>,
    /// At most 5 resources, by 2xx calls over the range.
    pub top_resources: Vec<TopResource>,
}

/// One stage (or its canary) and UTC day; latencies in ms (0 without calls).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// 2xx calls.
    pub call_count: u64,
    /// Present (true) on the rows of the stage's canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<bool>,
    #[schema(pattern = r"^\d{4}-\d{2}-\d{2}$")]
    pub date: String,
    pub error_4xx_count: u64,
    pub error_5xx_count: u64,
    pub integration_latency: f64,
    pub integration_latency_p95: f64,
    pub latency: f64,
    pub latency_p95: f64,
    /// Every call, whatever its status.
    pub total_count: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopResource {
    pub call_count: u64,
    /// The last segment of the path (`/` for the root).
    pub name: String,
    #[schema(pattern = "^/")]
    pub path: String,
    #[serde(rename = "type")]
    pub method_type: String,
}

/// Routes (resource path + method) counted individually per stage; the
/// route index of any further route is [`OTHER_ROUTE`].
pub const ROUTE_CAP: usize = 2048;
/// Route index counted in the stage's "other" bucket (not in top resources).
pub const OTHER_ROUTE: u32 = u32::MAX;
/// Longest report range, in days (inclusive of both ends).
pub const MAX_RANGE_DAYS: i64 = 31;
/// Days kept in memory (and loaded at start); older days are not reported.
pub const RETENTION_DAYS: i64 = 400;
/// The report counters' stage name of a stage's canary (stage names are
/// `[a-z0-9-]`, so it never collides with a stage's).
pub fn canary_stage(stage: &str) -> String {
    format!("{stage}#canary")
}

/// Identifies the histogram layout in persisted rows.
pub const HIST_SCHEME: u32 = 1;

const CHUNK: usize = 64;
const NCHUNKS: usize = ROUTE_CAP / CHUNK;
const DAY_MS: i64 = 86_400_000;

// Latency histogram, in microseconds: 0..16 exact, then 8 sub-buckets per
// power of two (bucket width <= 1/8 of its lower bound: the midpoint is
// within 6.25 % of any value in it), up to 2^36 µs (19 h), clamped above.
const LINEAR: usize = 16;
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const MIN_E: u32 = 4;
const MAX_E: u32 = 35;
/// Number of histogram buckets.
pub const BUCKETS: usize = LINEAR + (MAX_E - MIN_E + 1) as usize * SUB;

/// Histogram bucket of a value in microseconds.
#[inline]
pub fn bucket(v: u64) -> usize {
    if v < LINEAR as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    if e > MAX_E {
        return BUCKETS - 1;
    }
    let sub = ((v >> (e - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR + (e - MIN_E) as usize * SUB + sub
}

/// `[lo, hi)` in microseconds of a histogram bucket.
pub fn bucket_range(i: usize) -> (u64, u64) {
    if i < LINEAR {
        return (i as u64, i as u64 + 1);
    }
    let e = ((i - LINEAR) / SUB) as u32 + MIN_E;
    let w = 1u64 << (e - SUB_BITS);
    let lo = (SUB as u64 + ((i - LINEAR) % SUB) as u64) * w;
    (lo, lo + w)
}

// ---------------------------------------------------------------- hot path

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD_IX: usize = NEXT_SHARD.fetch_add(1, Relaxed);
}

/// Shards per stage: the next power of two >= 2 x cores, in [4, 16].
fn shard_count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        (2 * cores).next_power_of_two().clamp(4, 16)
    })
}

#[repr(align(128))]
struct Shard {
    /// 2xx, 4xx, 5xx, other.
    status: [AtomicU64; 4],
    lat_sum: AtomicU64,
    int_sum: AtomicU64,
    route_other: AtomicU64,
    lat_hist: [AtomicU64; BUCKETS],
    int_hist: [AtomicU64; BUCKETS],
    /// 2xx count per route index, allocated a chunk at a time at
    /// registration (never on the hot path).
    routes: [OnceLock<Box<[AtomicU64; CHUNK]>>; NCHUNKS],
}

impl Shard {
    fn new() -> Shard {
        Shard {
            status: [const { AtomicU64::new(0) }; 4],
            lat_sum: AtomicU64::new(0),
            int_sum: AtomicU64::new(0),
            route_other: AtomicU64::new(0),
            lat_hist: [const { AtomicU64::new(0) }; BUCKETS],
            int_hist: [const { AtomicU64::new(0) }; BUCKETS],
            routes: [const { OnceLock::new() }; NCHUNKS],
        }
    }

    #[inline]
    fn route(&self, r: u32) -> &AtomicU64 {
        let r = r as usize;
        if r < ROUTE_CAP {
            if let Some(c) = self.routes[r / CHUNK].get() {
                return &c[r % CHUNK];
            }
        }
        &self.route_other
    }
}

struct RouteTable {
    index: HashMap<(String, String), u32>,
    labels: Vec<(String, String)>,
}

/// The collector of one (API, stage); held by the compiled stage.
pub struct StageStats {
    api_id: String,
    stage: String,
    mask: usize,
    shards: Box<[Shard]>,
    routes: Mutex<RouteTable>,
}

impl std::fmt::Debug for StageStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageStats")
            .field("api_id", &self.api_id)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

/// Swap a counter to zero, skipping the write when it is already zero.
#[inline]
fn take(a: &AtomicU64) -> u64 {
    if a.load(Relaxed) == 0 {
        0
    } else {
        a.swap(0, Relaxed)
    }
}

#[derive(Default)]
struct Delta {
    status: [u64; 4],
    lat_sum: u64,
    int_sum: u64,
    route_other: u64,
    lat_hist: Vec<(u16, u64)>,
    int_hist: Vec<(u16, u64)>,
    routes: Vec<(u32, u64)>,
}

impl StageStats {
    fn new(api_id: &str, stage: &str) -> StageStats {
        let n = shard_count();
        StageStats {
            api_id: api_id.to_string(),
            stage: stage.to_string(),
            mask: n - 1,
            shards: (0..n).map(|_| Shard::new()).collect(),
            routes: Mutex::new(RouteTable {
                index: HashMap::new(),
                labels: Vec::new(),
            }),
        }
    }

    pub fn api_id(&self) -> &str {
        &self.api_id
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Hot path, once per answered request: status code, total latency and
    /// integration (upstream) latency in microseconds (0 when the gateway
    /// answered itself), and the route index of the matched resource+method
    /// from [`StageStats::route_index`] (None when no route matched).
    #[inline]
    pub fn record(&self, route: Option<u32>, status: u16, latency_us: u64, integration_us: u64) {
        let ix = SHARD_IX.try_with(|i| *i).unwrap_or(0);
        let s = &self.shards[ix & self.mask];
        s.lat_sum.fetch_add(latency_us, Relaxed);
        s.lat_hist[bucket(latency_us)].fetch_add(1, Relaxed);
        if integration_us > 0 {
            s.int_sum.fetch_add(integration_us, Relaxed);
            s.int_hist[bucket(integration_us)].fetch_add(1, Relaxed);
        }
        let class = match status {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => 3,
        };
        if class == 0 {
            if let Some(r) = route {
                s.route(r).fetch_add(1, Relaxed);
            }
        }
        // Last: a flush skips shards whose status counters are all zero
        // (the other counters of a record in flight wait for the next one).
        s.status[class].fetch_add(1, Relaxed);
    }

    /// Register a route label (resource path, method type) once at snapshot
    /// build time; the same index for the same label on this StageStats.
    /// Beyond [`ROUTE_CAP`] routes: [`OTHER_ROUTE`].
    pub fn route_index(&self, path: &str, method: &str) -> u32 {
        let mut t = lock(&self.routes);
        let key = (path.to_string(), method.to_string());
        if let Some(&i) = t.index.get(&key) {
            return i;
        }
        let i = t.labels.len();
        if i >= ROUTE_CAP {
            return OTHER_ROUTE;
        }
        for s in self.shards.iter() {
            s.routes[i / CHUNK].get_or_init(|| Box::new([const { AtomicU64::new(0) }; CHUNK]));
        }
        t.labels.push(key.clone());
        t.index.insert(key, i as u32);
        i as u32
    }

    /// Snapshot-and-reset every shard; None when nothing was recorded.
    fn take(&self) -> Option<Delta> {
        let mut d = Delta::default();
        let mut lat = [0u64; BUCKETS];
        let mut int = [0u64; BUCKETS];
        let mut routes: BTreeMap<u32, u64> = BTreeMap::new();
        let mut any = false;
        for s in self.shards.iter() {
            if s.status.iter().all(|c| c.load(Relaxed) == 0) {
                continue;
            }
            any = true;
            for (acc, c) in d.status.iter_mut().zip(&s.status) {
                *acc += take(c);
            }
            d.lat_sum += take(&s.lat_sum);
            d.int_sum += take(&s.int_sum);
            d.route_other += take(&s.route_other);
            for (acc, c) in lat.iter_mut().zip(&s.lat_hist) {
                *acc += take(c);
            }
            for (acc, c) in int.iter_mut().zip(&s.int_hist) {
                *acc += take(c);
            }
            for (ci, chunk) in s.routes.iter().enumerate() {
                let Some(chunk) = chunk.get() else { continue };
                for (j, c) in chunk.iter().enumerate() {
                    let v = take(c);
                    if v > 0 {
                        *routes.entry((ci * CHUNK + j) as u32).or_default() += v;
                    }
                }
            }
        }
        if !any {
            return None;
        }
        let sparse = |h: &[u64]| -> Vec<(u16, u64)> {
            h.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u16, *c))
                .collect()
        };
        d.lat_hist = sparse(&lat);
        d.int_hist = sparse(&int);
        d.routes = routes.into_iter().collect();
        Some(d)
    }
}

// ------------------------------------------------------------- persistence

/// One route's 2xx count in a day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCount {
    pub path: String,
    pub method: String,
    pub count: u64,
}

/// The persisted aggregate of one (API, stage, UTC day).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DailyRow {
    pub api_id: String,
    pub stage: String,
    /// YYYY-MM-DD (UTC).
    pub date: String,
    pub count_2xx: u64,
    pub count_4xx: u64,
    pub count_5xx: u64,
    /// 1xx, 3xx and anything else.
    pub count_other: u64,
    pub latency_sum_us: u64,
    pub latency_count: u64,
    pub integration_sum_us: u64,
    pub integration_count: u64,
    /// [`HIST_SCHEME`] of the histograms below (0: unknown, ignored).
    pub hist_scheme: u32,
    /// Sparse histograms: (bucket index, count), see [`bucket_range`].
    pub latency_hist: Vec<(u16, u64)>,
    pub integration_hist: Vec<(u16, u64)>,
    /// 2xx calls per route (resource path, method type).
    pub routes: Vec<RouteCount>,
    /// 2xx calls of routes beyond [`ROUTE_CAP`] or not registered.
    pub routes_other: u64,
}

impl DailyRow {
    /// A row as a stats store keeps it: the key columns and the JSON of
    /// the counters. None (logged) when the JSON is corrupt: the row is
    /// skipped rather than failing the whole load.
    pub fn from_stored(
        api_id: String,
        stage: String,
        date: String,
        body: &str,
    ) -> Option<DailyRow> {
        match serde_json::from_str::<DailyRow>(body) {
            Ok(mut r) => {
                r.api_id = api_id;
                r.stage = stage;
                r.date = date;
                Some(r)
            }
            Err(e) => {
                tracing::warn!(%api_id, %stage, %date, error = %e, "stats: skipping a corrupt row");
                None
            }
        }
    }
}

/// Durable storage of daily rows (SQLite: `store::sqlite_stats`).
pub trait StatsStore: Send + Sync {
    fn load(&self) -> Result<Vec<DailyRow>, String>;
    /// Upsert the rows, keyed by (api_id, stage, date).
    fn save(&self, rows: &[DailyRow]) -> Result<(), String>;
    /// Delete the rows of an API (stage None) or of one of its stages.
    fn delete(&self, _api_id: &str, _stage: Option<&str>) -> Result<(), String> {
        Ok(())
    }
    /// The rows other nodes saved for these stages of an API in
    /// `[from, to]` (YYYY-MM-DD); a store of one node has none.
    fn others(
        &self,
        _api_id: &str,
        _stages: &[String],
        _from: &str,
        _to: &str,
    ) -> Result<Vec<DailyRow>, String> {
        Ok(Vec::new())
    }
}

// --------------------------------------------------------------- aggregate

#[derive(Default)]
struct Day {
    status: [u64; 4],
    lat_sum: u64,
    lat_n: u64,
    int_sum: u64,
    int_n: u64,
    lat_hist: BTreeMap<u16, u64>,
    int_hist: BTreeMap<u16, u64>,
    routes: HashMap<(String, String), u64>,
    route_other: u64,
    dirty: bool,
}

fn p95_ms(h: &BTreeMap<u16, u64>, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let rank = (n * 95).div_ceil(100);
    let mut seen = 0;
    for (&i, &c) in h {
        seen += c;
        if seen >= rank {
            let (lo, hi) = bucket_range(i as usize);
            let v = if hi - lo == 1 {
                lo as f64
            } else {
                (lo + hi) as f64 / 2.0
            };
            return ms(v);
        }
    }
    0.0
}

/// Microseconds to milliseconds, rounded to the microsecond.
fn ms(us: f64) -> f64 {
    (us).round() / 1000.0
}

impl Day {
    fn add(&mut self, d: &Delta, labels: &[(String, String)]) {
        for (a, b) in self.status.iter_mut().zip(d.status) {
            *a += b;
        }
        self.lat_sum += d.lat_sum;
        self.int_sum += d.int_sum;
        for &(i, c) in &d.lat_hist {
            *self.lat_hist.entry(i).or_default() += c;
            self.lat_n += c;
        }
        for &(i, c) in &d.int_hist {
            *self.int_hist.entry(i).or_default() += c;
            self.int_n += c;
        }
        self.route_other += d.route_other;
        for &(r, c) in &d.routes {
            match labels.get(r as usize) {
                Some(l) => *self.routes.entry(l.clone()).or_default() += c,
                None => self.route_other += c,
            }
        }
        self.dirty = true;
    }

    fn total(&self) -> u64 {
        self.status.iter().sum()
    }

    fn from_row(r: &DailyRow) -> Day {
        let hist = |h: &[(u16, u64)]| -> BTreeMap<u16, u64> {
            if r.hist_scheme != HIST_SCHEME {
                return BTreeMap::new();
            }
            let mut m = BTreeMap::new();
            for &(i, c) in h.iter().filter(|(i, _)| (*i as usize) < BUCKETS) {
                *m.entry(i).or_default() += c;
            }
            m
        };
        let mut routes = HashMap::new();
        for rc in &r.routes {
            *routes
                .entry((rc.path.clone(), rc.method.clone()))
                .or_default() += rc.count;
        }
        Day {
            status: [r.count_2xx, r.count_4xx, r.count_5xx, r.count_other],
            lat_sum: r.latency_sum_us,
            lat_n: r.latency_count,
            int_sum: r.integration_sum_us,
            int_n: r.integration_count,
            lat_hist: hist(&r.latency_hist),
            int_hist: hist(&r.integration_hist),
            routes,
            route_other: r.routes_other,
            dirty: false,
        }
    }

    /// Add another node's day to this one.
    fn merge(&mut self, o: &Day) {
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        self.lat_sum += o.lat_sum;
        self.lat_n += o.lat_n;
        self.int_sum += o.int_sum;
        self.int_n += o.int_n;
        for (i, c) in &o.lat_hist {
            *self.lat_hist.entry(*i).or_default() += c;
        }
        for (i, c) in &o.int_hist {
            *self.int_hist.entry(*i).or_default() += c;
        }
        for (k, c) in &o.routes {
            *self.routes.entry(k.clone()).or_default() += c;
        }
        self.route_other += o.route_other;
    }

    fn to_row(&self, api_id: &str, stage: &str, date: NaiveDate) -> DailyRow {
        let mut routes: Vec<RouteCount> = self
            .routes
            .iter()
            .map(|((p, m), c)| RouteCount {
                path: p.clone(),
                method: m.clone(),
                count: *c,
            })
            .collect();
        routes.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
        DailyRow {
            api_id: api_id.to_string(),
            stage: stage.to_string(),
            date: date.to_string(),
            count_2xx: self.status[0],
            count_4xx: self.status[1],
            count_5xx: self.status[2],
            count_other: self.status[3],
            latency_sum_us: self.lat_sum,
            latency_count: self.lat_n,
            integration_sum_us: self.int_sum,
            integration_count: self.int_n,
            hist_scheme: HIST_SCHEME,
            latency_hist: self.lat_hist.iter().map(|(i, c)| (*i, *c)).collect(),
            integration_hist: self.int_hist.iter().map(|(i, c)| (*i, *c)).collect(),
            routes,
            routes_other: self.route_other,
        }
    }
}

type Key = (String, String);

/// The statistics of every stage of the process.
pub struct Stats {
    store: Option<Arc<dyn StatsStore>>,
    clock: Arc<dyn Clock>,
    stages: Mutex<HashMap<Key, Arc<StageStats>>>,
    days: Mutex<HashMap<Key, BTreeMap<NaiveDate, Day>>>,
    deletes: Mutex<Vec<(String, Option<String>)>>,
    flush_lock: Mutex<()>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

fn day_of_ms(ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

/// Parse and check a report range: `YYYY-MM-DD` both, start <= end, at
/// most [`MAX_RANGE_DAYS`] days including both ends.
pub fn parse_range(start: &str, end: &str) -> Result<(NaiveDate, NaiveDate), String> {
    let parse = |name: &str, s: &str| {
        let ok = s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
        ok.then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .flatten()
            .ok_or_else(|| format!("{name} must be a date YYYY-MM-DD, got {s:?}"))
    };
    let (s, e) = (parse("start_date", start)?, parse("end_date", end)?);
    if s > e {
        return Err("start_date must not be after end_date".into());
    }
    if (e - s).num_days() + 1 > MAX_RANGE_DAYS {
        return Err(format!("the range must not exceed {MAX_RANGE_DAYS} days"));
    }
    Ok((s, e))
}

/// How long the flusher sleeps from `now_ms`, and the day the flush at the
/// end of the sleep belongs to when the sleep ends at UTC midnight (None:
/// the day at wake-up).
fn next_wake(now_ms: i64, interval: Duration) -> (Duration, Option<NaiveDate>) {
    let to_midnight = DAY_MS - now_ms.rem_euclid(DAY_MS);
    let iv = (interval.as_millis() as i64).max(1);
    if to_midnight <= iv {
        (
            Duration::from_millis(to_midnight as u64),
            Some(day_of_ms(now_ms)),
        )
    } else {
        (interval, None)
    }
}

impl Stats {
    /// Stats on the wall clock; loads the persisted rows when a store is
    /// given (a load error is logged and the rows are left out).
    pub fn new(store: Option<Arc<dyn StatsStore>>) -> Arc<Stats> {
        Stats::with_clock(store, None)
    }

    /// Stats whose day attribution follows `clock` (Unix seconds).
    pub fn with_clock(
        store: Option<Arc<dyn StatsStore>>,
        clock: Option<Arc<dyn Clock>>,
    ) -> Arc<Stats> {
        let stats = Stats {
            store,
            clock: clock.unwrap_or_else(|| Arc::new(SystemClock)),
            stages: Mutex::new(HashMap::new()),
            days: Mutex::new(HashMap::new()),
            deletes: Mutex::new(Vec::new()),
            flush_lock: Mutex::new(()),
        };
        if let Some(store) = &stats.store {
            match store.load() {
                Ok(rows) => {
                    let oldest = stats.today() - chrono::Duration::days(RETENTION_DAYS);
                    let mut days = lock(&stats.days);
                    for r in rows {
                        let Ok(date) = NaiveDate::parse_from_str(&r.date, "%Y-%m-%d") else {
                            tracing::warn!(date = %r.date, "stats: skipping a row with a bad date");
                            continue;
                        };
                        if date < oldest {
                            continue;
                        }
                        days.entry((r.api_id.clone(), r.stage.clone()))
                            .or_default()
                            .insert(date, Day::from_row(&r));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "stats: loading persisted reports failed"),
            }
        }
        Arc::new(stats)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn today(&self) -> NaiveDate {
        day_of_ms(self.now_ms())
    }

    /// The collector of a stage: the same Arc for the same (API, stage)
    /// until the API (or stage) is forgotten.
    pub fn stage(&self, api_id: &str, stage: &str) -> Arc<StageStats> {
        lock(&self.stages)
            .entry((api_id.to_string(), stage.to_string()))
            .or_insert_with(|| Arc::new(StageStats::new(api_id, stage)))
            .clone()
    }

    /// Fold a stage's pending counters into `day`.
    fn fold(&self, st: &Arc<StageStats>, day: NaiveDate) {
        let Some(d) = st.take() else { return };
        let labels: Vec<(String, String)> = {
            let t = lock(&st.routes);
            let n = d.routes.last().map_or(0, |&(max, _)| max as usize + 1);
            t.labels.iter().take(n).cloned().collect()
        };
        let key = (st.api_id.clone(), st.stage.clone());
        let mut days = lock(&self.days);
        // A stage forgotten meanwhile: drop its counts rather than revive it.
        let live = lock(&self.stages)
            .get(&key)
            .is_some_and(|s| Arc::ptr_eq(s, st));
        if live {
            days.entry(key)
                .or_default()
                .entry(day)
                .or_default()
                .add(&d, &labels);
        }
    }

    /// Fold every stage's counters into today (UTC) and persist the days
    /// that changed.
    pub fn flush(&self) {
        self.flush_at(self.today());
    }

    /// [`Stats::flush`], attributing the counters taken to `day`.
    pub fn flush_at(&self, day: NaiveDate) {
        let _serial = lock(&self.flush_lock);
        let stages: Vec<Arc<StageStats>> = lock(&self.stages).values().cloned().collect();
        for st in &stages {
            self.fold(st, day);
        }
        let deletes = std::mem::take(&mut *lock(&self.deletes));
        let oldest = day - chrono::Duration::days(RETENTION_DAYS);
        let mut rows = Vec::new();
        {
            let mut days = lock(&self.days);
            for ((api, stage), m) in days.iter_mut() {
                m.retain(|d, _| *d >= oldest);
                for (date, d) in m.iter_mut().filter(|(_, d)| d.dirty) {
                    d.dirty = false;
                    rows.push(d.to_row(api, stage, *date));
                }
            }
            days.retain(|_, m| !m.is_empty());
        }
        let Some(store) = &self.store else { return };
        for (i, (api, stage)) in deletes.iter().enumerate() {
            if let Err(e) = store.delete(api, stage.as_deref()) {
                tracing::warn!(error = %e, "stats: deleting persisted reports failed");
                lock(&self.deletes).extend(deletes[i..].iter().cloned());
                break;
            }
        }
        if rows.is_empty() {
            return;
        }
        if let Err(e) = store.save(&rows) {
            tracing::warn!(error = %e, rows = rows.len(), "stats: saving reports failed");
            let mut days = lock(&self.days);
            for r in &rows {
                let date = NaiveDate::parse_from_str(&r.date, "%Y-%m-%d").ok();
                if let Some(d) = date.and_then(|date| {
                    days.get_mut(&(r.api_id.clone(), r.stage.clone()))?
                        .get_mut(&date)
                }) {
                    d.dirty = true;
                }
            }
        }
    }

    /// Flush every `interval`, and exactly at each UTC midnight (that flush
    /// belongs to the day that ended). Flushes run on the blocking pool.
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let (wait, day) = next_wake(me.now_ms(), interval);
                tokio::time::sleep(wait).await;
                let m = me.clone();
                let r = tokio::task::spawn_blocking(move || match day {
                    Some(d) => m.flush_at(d),
                    None => m.flush(),
                })
                .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "stats flush panicked");
                }
            }
        })
    }

    /// The List Reports answer for `[start, end]` (inclusive): one entry per
    /// day with calls, and the 5 routes with the most 2xx calls in the range.
    /// The answers of the stage's canary are counted apart: their own
    /// entries, `"canary": true`, after the stage's entry of the same day
    /// (top resources count both).
    pub fn report(&self, api_id: &str, stage: &str, start: NaiveDate, end: NaiveDate) -> Value {
        serde_json::to_value(self.report_with(api_id, stage, start, end, &[]))
            .unwrap_or(Value::Null)
    }

    /// The rows the other nodes of a shared store saved for a report
    /// (blocking: run it off the async workers). A store that cannot be
    /// read gives none (logged): the report is then this node's alone.
    pub fn others(
        &self,
        api_id: &str,
        stage: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Vec<DailyRow> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let stages = [stage.to_string(), canary_stage(stage)];
        match store.others(api_id, &stages, &start.to_string(), &end.to_string()) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "stats: other nodes' reports unavailable");
                Vec::new()
            }
        }
    }

    /// [`Stats::report`] with the days of other nodes (`extra`) added.
    pub fn report_with(
        &self,
        api_id: &str,
        stage: &str,
        start: NaiveDate,
        end: NaiveDate,
        extra: &[DailyRow],
    ) -> ReportListResponse {
        let canary = canary_stage(stage);
        for name in [stage, canary.as_str()] {
            let key = (api_id.to_string(), name.to_string());
            let st = lock(&self.stages).get(&key).cloned();
            if let Some(st) = st {
                self.fold(&st, self.today());
            }
        }
        let mut days: HashMap<Key, BTreeMap<NaiveDate, Day>> = HashMap::new();
        {
            let local = lock(&self.days);
            for name in [stage, canary.as_str()] {
                let key = (api_id.to_string(), name.to_string());
                if let Some(m) = local.get(&key).filter(|_| start <= end) {
                    let merged = days.entry(key.clone()).or_default();
                    for (date, d) in m.range(start..=end) {
                        merged.insert(*date, Day::from_row(&d.to_row(api_id, name, *date)));
                    }
                }
            }
        }
        for r in extra.iter().filter(|r| r.api_id == api_id) {
            let Ok(date) = NaiveDate::parse_from_str(&r.date, "%Y-%m-%d") else {
                continue;
            };
            if date < start || date > end || (r.stage != stage && r.stage != canary) {
                continue;
            }
            days.entry((r.api_id.clone(), r.stage.clone()))
                .or_default()
                .entry(date)
                .or_default()
                .merge(&Day::from_row(r));
        }
        let mut reports: Vec<(NaiveDate, bool, Report)> = Vec::new();
        let mut top: HashMap<&(String, String), u64> = HashMap::new();
        for (name, is_canary) in [(stage, false), (canary.as_str(), true)] {
            let key = (api_id.to_string(), name.to_string());
            let Some(m) = days.get(&key).filter(|_| start <= end) else {
                continue;
            };
            for (date, d) in m.range(start..=end) {
                if d.total() == 0 {
                    continue;
                }
                let avg = |sum: u64, n: u64| {
                    if n == 0 {
                        0.0
                    } else {
                        ms(sum as f64 / n as f64)
                    }
                };
                let row = Report {
                    call_count: d.status[0],
                    canary: is_canary.then_some(true),
                    date: date.to_string(),
                    error_4xx_count: d.status[1],
                    error_5xx_count: d.status[2],
                    integration_latency: avg(d.int_sum, d.int_n),
                    integration_latency_p95: p95_ms(&d.int_hist, d.int_n),
                    latency: avg(d.lat_sum, d.lat_n),
                    latency_p95: p95_ms(&d.lat_hist, d.lat_n),
                    total_count: d.total(),
                };
                reports.push((*date, is_canary, row));
                for (label, c) in &d.routes {
                    *top.entry(label).or_default() += c;
                }
            }
        }
        reports.sort_by_key(|(date, is_canary, _)| (*date, *is_canary));
        let reports: Vec<Report> = reports.into_iter().map(|(_, _, r)| r).collect();
        let mut top: Vec<_> = top.into_iter().filter(|(_, c)| *c > 0).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let top_resources: Vec<TopResource> = top
            .into_iter()
            .take(5)
            .map(|((path, method), c)| {
                let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("/");
                TopResource {
                    call_count: c,
                    name: name.to_string(),
                    path: path.clone(),
                    method_type: method.clone(),
                }
            })
            .collect();
        ReportListResponse {
            count: reports.len(),
            reports,
            top_resources,
        }
    }

    /// Drop an API's statistics (in memory now, persisted at the next flush).
    pub fn forget_api(&self, api_id: &str) {
        lock(&self.stages).retain(|(a, _), _| a != api_id);
        lock(&self.days).retain(|(a, _), _| a != api_id);
        lock(&self.deletes).push((api_id.to_string(), None));
    }

    /// Drop one stage's statistics (stage deleted).
    pub fn forget_stage(&self, api_id: &str, stage: &str) {
        for name in [stage.to_string(), canary_stage(stage)] {
            let key = (api_id.to_string(), name.clone());
            lock(&self.stages).remove(&key);
            lock(&self.days).remove(&key);
            lock(&self.deletes).push((api_id.to_string(), Some(name)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn today() -> NaiveDate {
        Utc::now().date_naive()
    }

    #[test]
    fn buckets_cover_values() {
        for v in (0..100_000u64).chain([1 << 20, (1 << 36) - 1, 123_456_789]) {
            let (lo, hi) = bucket_range(bucket(v));
            assert!(lo <= v && v < hi, "{v} not in [{lo},{hi})");
            assert!((hi - lo) * 8 <= lo.max(8), "bucket too wide at {v}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_range(BUCKETS - 1).1, 1 << 36);
    }

    #[test]
    fn stage_identity_and_route_indices() {
        let stats = Stats::new(None);
        let a = stats.stage("api", "prod");
        assert!(Arc::ptr_eq(&a, &stats.stage("api", "prod")));
        assert!(!Arc::ptr_eq(&a, &stats.stage("api", "dev")));
        assert_eq!(a.route_index("/a", "GET"), 0);
        assert_eq!(a.route_index("/a", "POST"), 1);
        assert_eq!(a.route_index("/a", "GET"), 0);
        for i in 2..ROUTE_CAP {
            assert_eq!(a.route_index(&format!("/r{i}"), "GET"), i as u32);
        }
        assert_eq!(a.route_index("/overflow", "GET"), OTHER_ROUTE);
        a.record(Some(OTHER_ROUTE), 200, 10, 0);
        a.record(Some(ROUTE_CAP as u32 - 1), 200, 10, 0);
        let r = stats.report("api", "prod", today(), today());
        assert_eq!(r["reports"][0]["call_count"], 2);
        assert_eq!(
            r["top_resources"][0]["path"],
            format!("/r{}", ROUTE_CAP - 1)
        );
        stats.forget_api("api");
        assert!(!Arc::ptr_eq(&a, &stats.stage("api", "prod")));
        assert_eq!(stats.report("api", "prod", today(), today())["count"], 0);
    }

    #[test]
    fn concurrent_records_match_report() {
        let stats = Stats::new(None);
        let st = stats.stage("api1", "prod");
        let routes: Vec<u32> = (0..6)
            .map(|k| {
                st.route_index(
                    &format!("/res{k}/x{k}"),
                    if k % 2 == 0 { "GET" } else { "POST" },
                )
            })
            .collect();
        const THREADS: u64 = 4;
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for (k, r) in routes.iter().enumerate() {
                        for _ in 0..(k + 1) * 100 {
                            st.record(Some(*r), 200, 1000, 500);
                        }
                    }
                    for _ in 0..50 {
                        st.record(None, 404, 100, 0);
                    }
                    for _ in 0..20 {
                        st.record(Some(routes[5]), 503, 30_000, 29_000);
                    }
                    for _ in 0..5 {
                        st.record(Some(routes[0]), 301, 1000, 500);
                    }
                });
            }
        });
        // Some before the flush, some after (folded by report).
        stats.flush();
        st.record(Some(routes[0]), 201, 1000, 500);
        let r = stats.report("api1", "prod", today(), today());
        assert_eq!(r["count"], 1);
        let d = &r["reports"][0];
        assert_eq!(d["date"], today().to_string());
        assert_eq!(d["call_count"], THREADS * 2100 + 1);
        assert_eq!(d["error_4xx_count"], THREADS * 50);
        assert_eq!(d["error_5xx_count"], THREADS * 20);
        assert_eq!(d["total_count"], THREADS * 2175 + 1);
        let n = (THREADS * 2175 + 1) as f64;
        let lat = ((THREADS * 2105 + 1) as f64 * 1000.0
            + (THREADS * 50) as f64 * 100.0
            + (THREADS * 20) as f64 * 30_000.0)
            / n
            / 1000.0;
        assert!((d["latency"].as_f64().unwrap() - lat).abs() < 0.001, "{d}");
        let ni = (THREADS * 2125 + 1) as f64;
        let int =
            ((THREADS * 2105 + 1) as f64 * 500.0 + (THREADS * 20) as f64 * 29_000.0) / ni / 1000.0;
        assert!(
            (d["integration_latency"].as_f64().unwrap() - int).abs() < 0.001,
            "{d}"
        );
        // p95: 95 % of the calls took 1 ms / went upstream for 0.5 ms.
        let p = d["latency_p95"].as_f64().unwrap();
        assert!((p - 1.0).abs() <= 1.0 / 16.0, "p95 {p}");
        let p = d["integration_latency_p95"].as_f64().unwrap();
        assert!((p - 0.5).abs() <= 0.5 / 16.0, "p95 {p}");
        let top = r["top_resources"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        for (i, k) in [5usize, 4, 3, 2, 1].into_iter().enumerate() {
            assert_eq!(top[i]["path"], format!("/res{k}/x{k}"));
            assert_eq!(top[i]["name"], format!("x{k}"));
            assert_eq!(top[i]["type"], if k % 2 == 0 { "GET" } else { "POST" });
            assert_eq!(top[i]["call_count"], THREADS * (k as u64 + 1) * 100);
        }
    }

    #[test]
    fn p95_of_a_spread() {
        let stats = Stats::new(None);
        let st = stats.stage("a", "s");
        for v in 1..=10_000u64 {
            st.record(None, 200, v * 10, 0);
        }
        let r = stats.report("a", "s", today(), today());
        let p = r["reports"][0]["latency_p95"].as_f64().unwrap();
        assert!((p - 95.0).abs() <= 95.0 * 0.0625, "p95 {p}");
        assert_eq!(r["reports"][0]["integration_latency"], 0.0);
        assert_eq!(r["reports"][0]["integration_latency_p95"], 0.0);
        assert!((r["reports"][0]["latency"].as_f64().unwrap() - 50.005).abs() < 1e-9);
    }

    #[test]
    fn persistence_round_trip_and_restart() {
        use crate::store::sqlite::SqliteStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.db");
        let store: Arc<dyn StatsStore> = Arc::new(SqliteStore::open(&path).unwrap());
        let s1 = Stats::new(Some(store.clone()));
        let st = s1.stage("api", "prod");
        let x = st.route_index("/x", "GET");
        let y = st.route_index("/y/{id}", "DELETE");
        for _ in 0..10 {
            st.record(Some(x), 200, 2000, 1500);
        }
        for _ in 0..4 {
            st.record(Some(y), 204, 3000, 0);
        }
        for _ in 0..3 {
            st.record(Some(x), 500, 4000, 3900);
        }
        s1.stage("other", "prod").record(None, 200, 1, 1);
        s1.flush();
        let before = s1.report("api", "prod", today(), today());
        drop((st, s1));

        // Restart on the same store: the same figures.
        let s2 = Stats::new(Some(store.clone()));
        assert_eq!(s2.report("api", "prod", today(), today()), before);
        assert_eq!(before["reports"][0]["call_count"], 14);
        assert_eq!(before["reports"][0]["error_5xx_count"], 3);
        assert_eq!(before["top_resources"][0]["path"], "/x");
        assert_eq!(before["top_resources"][1]["name"], "{id}");
        // More calls after the restart add up.
        let st = s2.stage("api", "prod");
        let y = st.route_index("/y/{id}", "DELETE");
        for _ in 0..7 {
            st.record(Some(y), 200, 3000, 0);
        }
        s2.flush();
        s2.forget_api("other");
        s2.flush();
        drop((st, s2));

        // A new process: a new connection to the file.
        let store3: Arc<dyn StatsStore> = Arc::new(SqliteStore::open(&path).unwrap());
        let rows = store3.load().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let s3 = Stats::new(Some(store3));
        let r = s3.report("api", "prod", today(), today());
        let d = &r["reports"][0];
        assert_eq!(d["call_count"], 21);
        assert_eq!(d["error_5xx_count"], 3);
        assert_eq!(d["total_count"], 24);
        let lat = (10.0 * 2000.0 + 11.0 * 3000.0 + 3.0 * 4000.0) / 24.0 / 1000.0;
        assert!((d["latency"].as_f64().unwrap() - lat).abs() < 0.001);
        let int = (10.0 * 1500.0 + 3.0 * 3900.0) / 13.0 / 1000.0;
        assert!((d["integration_latency"].as_f64().unwrap() - int).abs() < 0.001);
        assert_eq!(r["top_resources"][0]["path"], "/y/{id}");
        assert_eq!(r["top_resources"][0]["call_count"], 11);
        assert_eq!(r["top_resources"][1]["call_count"], 10);
        assert_eq!(s3.report("other", "prod", today(), today())["count"], 0);
    }

    #[test]
    fn day_boundary_attribution() {
        let t = Arc::new(AtomicI64::new(0));
        let set = |s: &str| {
            let dt = DateTime::parse_from_rfc3339(s).unwrap();
            t.store(dt.timestamp(), Relaxed);
        };
        let tc = t.clone();
        let stats = Stats::with_clock(None, Some(Arc::new(move || tc.load(Relaxed))));
        let st = stats.stage("a", "s");
        set("2025-07-01T23:59:59Z");
        for _ in 0..3 {
            st.record(None, 200, 10, 0);
        }
        stats.flush();
        set("2025-07-02T00:00:01Z");
        for _ in 0..2 {
            st.record(None, 404, 10, 0);
        }
        // Taken by the midnight flush of the flusher: the day that ended.
        stats.flush_at(date("2025-07-01"));
        st.record(None, 500, 10, 0);
        let r = stats.report("a", "s", date("2025-06-01"), date("2025-07-31"));
        assert_eq!(r["count"], 2, "{r}");
        assert_eq!(r["reports"][0]["date"], "2025-07-01");
        assert_eq!(r["reports"][0]["call_count"], 3);
        assert_eq!(r["reports"][0]["error_4xx_count"], 2);
        assert_eq!(r["reports"][1]["date"], "2025-07-02");
        assert_eq!(r["reports"][1]["error_5xx_count"], 1);
        let r = stats.report("a", "s", date("2025-07-02"), date("2025-07-02"));
        assert_eq!(r["count"], 1);
        assert_eq!(
            stats.report("a", "s", date("2025-07-03"), date("2025-07-04"))["count"],
            0
        );
    }

    #[test]
    fn flusher_wakes_at_midnight() {
        let ms = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        let iv = Duration::from_secs(1);
        assert_eq!(next_wake(ms("2025-07-01T12:00:00Z"), iv), (iv, None));
        assert_eq!(
            next_wake(ms("2025-07-01T23:59:59.250Z"), iv),
            (Duration::from_millis(750), Some(date("2025-07-01")))
        );
        assert_eq!(next_wake(ms("2025-07-02T00:00:00Z"), iv), (iv, None));
    }

    #[test]
    fn range_parsing() {
        assert_eq!(
            parse_range("2025-07-01", "2025-07-31"),
            Ok((date("2025-07-01"), date("2025-07-31")))
        );
        assert!(parse_range("2025-07-01", "2025-08-01").is_err());
        assert!(parse_range("2025-07-02", "2025-07-01").is_err());
        assert!(parse_range("2025-7-1", "2025-07-01").is_err());
        assert!(parse_range("2025-02-30", "2025-03-01").is_err());
        assert!(parse_range("20250701", "2025-07-01").is_err());
    }

    /// `cargo test --release --lib stats -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn record_cost() {
        let stats = Stats::new(None);
        let st = stats.stage("bench", "prod");
        let routes: Vec<u32> = (0..8)
            .map(|i| st.route_index(&format!("/r{i}"), "GET"))
            .collect();
        const N: u64 = 10_000_000;
        let run = |st: &StageStats| {
            let t = std::time::Instant::now();
            for i in 0..N {
                let r = routes[(i & 7) as usize];
                let status = if i % 16 == 0 { 404 } else { 200 };
                st.record(
                    std::hint::black_box(Some(r)),
                    status,
                    800 + (i & 1023),
                    600 + (i & 511),
                );
            }
            t.elapsed().as_nanos() as f64 / N as f64
        };
        run(&st);
        let one = run(&st);
        println!("record: {one:.1} ns/record (1 thread, {N} records)");
        for threads in [2usize, 4] {
            let per: Vec<f64> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| run(&st))).collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            println!("record: {per:.1?} ns/record ({threads} threads on one stage)");
        }
        let t = std::time::Instant::now();
        stats.flush();
        println!("flush of one busy stage: {:?}", t.elapsed());
        let r = stats.report("bench", "prod", today(), today());
        assert_eq!(r["reports"][0]["total_count"], 8 * N);
    }
}
