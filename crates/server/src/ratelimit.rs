//! Server-wide limits per client address and per API token (the `[limits]` table).
//!
//! - [`AddressLimits`] guards the WebSocket upgrade: new connections per second per
//!   address (a token bucket) and open connections per address (a counter released when
//!   the connection ends).
//! - [`RestLimiter`] guards `/api/*`: requests per second per API token — or per address
//!   for callers without the right token, which also slows down guessing it.
//!
//! Addresses are grouped by [`switchboard_hub::address_key`] (IPv6 by /64). The maps
//! only hold addresses that are currently limited or connected: full buckets are pruned
//! as the map grows, so a scan from many addresses cannot grow memory without bound.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use dashmap::DashMap;
use serde::Deserialize;
use switchboard_hub::{TokenBucket, address_key};
use switchboard_protocol::ErrorCode;

use crate::api::error_response;
use crate::ws::RemoteAddr;

/// The `[limits]` table, as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub connects_per_ip_per_second: Option<u32>,
    pub connects_per_ip_burst: Option<u32>,
    pub max_connections_per_ip: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_rooms: Option<usize>,
    pub wrong_codes_burst: Option<u32>,
    pub wrong_codes_refill_s: Option<u64>,
    pub api_requests_per_second: Option<u32>,
    pub api_burst: Option<u32>,
}

/// An endpoint's `rate_limit` table: data frames per connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRateConfig {
    pub messages_per_second: Option<u32>,
    pub burst: Option<u32>,
    pub max_violations: Option<u32>,
}

impl MessageRateConfig {
    /// The hub's limit; errors are `(key, message)`.
    pub fn check(&self) -> Result<switchboard_hub::MessageLimit, (String, String)> {
        let d = switchboard_hub::MessageLimit::default();
        if self.burst == Some(0) {
            return Err(("burst".into(), "must be at least 1".into()));
        }
        Ok(switchboard_hub::MessageLimit {
            per_second: self.messages_per_second.unwrap_or(d.per_second),
            burst: self.burst.unwrap_or(d.burst),
            max_violations: self.max_violations.unwrap_or(d.max_violations),
        })
    }
}

/// The checked limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// New WebSocket connections per second per address; 0 = no limit.
    pub connects_per_ip_per_second: u32,
    /// Connections an address may open at once above that rate.
    pub connects_per_ip_burst: u32,
    /// Open WebSocket connections per address; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Time a client has to send its complete request head (upgrade or REST).
    pub handshake_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// API requests per second per token (or per address without one); 0 = no limit.
    pub api_requests_per_second: u32,
    /// API requests at once above that rate.
    pub api_burst: u32,
}

/// hyper refuses read buffers smaller than this.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connects_per_ip_per_second: 0,
            connects_per_ip_burst: 20,
            max_connections_per_ip: 0,
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            api_requests_per_second: 1000,
            api_burst: 1000,
        }
    }
}

impl LimitsConfig {
    /// Checks the values; errors are `(key, message)`.
    pub fn check(&self) -> Result<Limits, (String, String)> {
        let d = Limits::default();
        let max_header_bytes = self.max_header_bytes.unwrap_or(d.max_header_bytes);
        if max_header_bytes < MIN_HEADER_BYTES {
            return Err((
                "max_header_bytes".into(),
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        let handshake_ms = self
            .handshake_timeout_ms
            .unwrap_or(d.handshake_timeout.as_millis() as u64);
        if handshake_ms < 100 {
            return Err(("handshake_timeout_ms".into(), "must be at least 100".into()));
        }
        if self.connects_per_ip_burst == Some(0) {
            return Err(("connects_per_ip_burst".into(), "must be at least 1".into()));
        }
        if self.api_burst == Some(0) {
            return Err(("api_burst".into(), "must be at least 1".into()));
        }
        Ok(Limits {
            connects_per_ip_per_second: self
                .connects_per_ip_per_second
                .unwrap_or(d.connects_per_ip_per_second),
            connects_per_ip_burst: self
                .connects_per_ip_burst
                .unwrap_or(d.connects_per_ip_burst),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(d.max_connections_per_ip),
            handshake_timeout: Duration::from_millis(handshake_ms),
            max_header_bytes,
            api_requests_per_second: self
                .api_requests_per_second
                .unwrap_or(d.api_requests_per_second),
            api_burst: self.api_burst.unwrap_or(d.api_burst),
        })
    }
}

/// Prune a bucket map once it holds this many entries (and then every time it doubles).
const PRUNE_AT: usize = 1024;

/// Keyed token buckets that forget keys whose bucket is full again.
struct Buckets<K> {
    rate: f64,
    burst: f64,
    map: DashMap<K, TokenBucket>,
    prune_at: parking_lot::Mutex<usize>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(rate: u32, burst: u32) -> Self {
        Buckets {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            map: DashMap::new(),
            prune_at: parking_lot::Mutex::new(PRUNE_AT),
        }
    }

    /// Takes a token for `key`; on refusal, how long until one is available.
    fn take(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let result = {
            let mut b = self
                .map
                .entry(key)
                .or_insert_with(|| TokenBucket::full(self.burst));
            if b.take(self.rate, self.burst, now) {
                Ok(())
            } else {
                Err(b.wait_for_one(self.rate))
            }
        };
        self.maybe_prune(now);
        result
    }

    fn maybe_prune(&self, now: Instant) {
        if self.map.len() < *self.prune_at.lock() {
            return;
        }
        self.map.retain(|_, b| {
            b.refill(self.rate, self.burst, now);
            b.tokens() < self.burst
        });
        // Whatever is left is genuinely limited: look again when the map has doubled.
        *self.prune_at.lock() = (self.map.len() * 2).max(PRUNE_AT);
    }
}

/// Per-address admission for WebSocket upgrades, shared by every endpoint.
pub struct AddressLimits {
    connects: Option<Buckets<IpAddr>>,
    max_open: usize,
    open: Arc<DashMap<IpAddr, usize>>,
}

/// Why an upgrade was refused by [`AddressLimits::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many new connections from this address; retry after this long.
    Rate(Duration),
    /// Too many open connections from this address.
    Open(usize),
}

/// One open connection counted against its address; released on drop.
pub struct AddressSlot {
    ip: IpAddr,
    open: Arc<DashMap<IpAddr, usize>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut e) = self.open.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl AddressLimits {
    pub fn new(limits: &Limits) -> Self {
        AddressLimits {
            connects: (limits.connects_per_ip_per_second > 0).then(|| {
                Buckets::new(
                    limits.connects_per_ip_per_second,
                    limits.connects_per_ip_burst,
                )
            }),
            max_open: limits.max_connections_per_ip,
            open: Arc::new(DashMap::new()),
        }
    }

    /// Counts a new connection from `ip`: a connect token, then an open slot (held for
    /// the connection's life; `None` when open connections are not limited).
    pub fn admit(&self, ip: IpAddr) -> Result<Option<AddressSlot>, Refusal> {
        let key = address_key(ip);
        if let Some(b) = &self.connects {
            b.take(key).map_err(Refusal::Rate)?;
        }
        if self.max_open == 0 {
            return Ok(None);
        }
        let mut n = self.open.entry(key).or_insert(0);
        if *n >= self.max_open {
            return Err(Refusal::Open(self.max_open));
        }
        *n += 1;
        Ok(Some(AddressSlot {
            ip: key,
            open: self.open.clone(),
        }))
    }
}

/// The REST limiter: one bucket per API token, or per address for other callers.
#[derive(Clone)]
pub struct RestLimiter(Option<Arc<RestInner>>);

struct RestInner {
    buckets: Buckets<RestKey>,
    api_token: Option<String>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum RestKey {
    /// The configured token (hashed: the map never holds the secret).
    Token(u64),
    Addr(IpAddr),
}

impl RestLimiter {
    pub fn new(limits: &Limits, api_token: Option<String>) -> Self {
        RestLimiter((limits.api_requests_per_second > 0).then(|| {
            Arc::new(RestInner {
                buckets: Buckets::new(limits.api_requests_per_second, limits.api_burst),
                api_token,
                hasher: Default::default(),
            })
        }))
    }
}

/// Middleware: `429` with `RATE_LIMITED` and `Retry-After` once a caller is over its rate.
pub async fn limit_rest(State(l): State<RestLimiter>, req: Request, next: Next) -> Response {
    let Some(inner) = &l.0 else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = match (bearer, &inner.api_token) {
        (Some(given), Some(token)) if given == token => {
            RestKey::Token(inner.hasher.hash_one(token))
        }
        _ => match req.extensions().get::<RemoteAddr>() {
            Some(a) => RestKey::Addr(address_key(a.0.ip())),
            None => return next.run(req).await,
        },
    };
    match inner.buckets.take(key) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let mut r = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many API requests; retry after the time in Retry-After",
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
        let mut l = Limits::default();
        f(&mut l);
        l
    }

    #[test]
    fn connects_are_limited_per_address() {
        let a = AddressLimits::new(&limits(|l| {
            l.connects_per_ip_per_second = 1;
            l.connects_per_ip_burst = 2;
        }));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(a.admit(ip).is_ok());
        assert!(a.admit(ip).is_ok());
        assert!(matches!(a.admit(ip), Err(Refusal::Rate(_))));
        assert!(a.admit("10.0.0.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn open_connections_are_counted_and_released() {
        let a = AddressLimits::new(&limits(|l| l.max_connections_per_ip = 2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let s1 = a.admit(ip).unwrap();
        let _s2 = a.admit(ip).unwrap();
        assert_eq!(a.admit(ip).err(), Some(Refusal::Open(2)));
        drop(s1);
        assert!(a.admit(ip).is_ok());
        // An address with nothing open is forgotten.
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        drop(a.admit(other).unwrap());
        assert!(!a.open.contains_key(&other));
    }

    #[test]
    fn unlimited_by_default() {
        let a = AddressLimits::new(&Limits::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| matches!(a.admit(ip), Ok(None))));
    }

    #[test]
    fn full_buckets_are_pruned() {
        let b: Buckets<u32> = Buckets::new(1_000_000, 1);
        for k in 0..(PRUNE_AT as u32 * 3) {
            let _ = b.take(k);
        }
        // At a million tokens a second every bucket refills at once and is forgotten.
        assert!(b.map.len() < PRUNE_AT + 1, "{}", b.map.len());
    }

    #[test]
    fn limits_are_checked() {
        let bad = |c: LimitsConfig| c.check().unwrap_err().0;
        assert_eq!(
            bad(LimitsConfig {
                max_header_bytes: Some(100),
                ..Default::default()
            }),
            "max_header_bytes"
        );
        assert_eq!(
            bad(LimitsConfig {
                api_burst: Some(0),
                ..Default::default()
            }),
            "api_burst"
        );
        assert_eq!(LimitsConfig::default().check().unwrap(), Limits::default());
    }
}
