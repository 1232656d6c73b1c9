//! Webhook settings: the TOML tables as written ([`HooksTable`] in each `[[endpoint]]`,
//! [`WebhooksTable`] at the top level) and their checked forms ([`EndpointHooks`],
//! [`LifecycleSettings`]). Every value is checked when the server starts, so a typo in a
//! URL or an unknown event name stops it with the key that is wrong.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::sign::Secret;

/// `hooks.*` of one `[[endpoint]]`: synchronous hooks that may allow, rewrite or reject.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksTable {
    pub connect: Option<String>,
    pub join: Option<String>,
    pub publish: Option<String>,
    pub direct: Option<String>,
    pub close: Option<String>,
    pub timeout_ms: Option<u64>,
    pub fail_open: Option<bool>,
    pub secret: Option<String>,
    pub max_in_flight: Option<usize>,
}

/// `[webhooks]`: asynchronous lifecycle notifications for the whole server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksTable {
    pub url: String,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub offline_grace_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub retry_backoff_max_ms: Option<u64>,
    pub queue_size: Option<usize>,
    pub concurrency: Option<usize>,
}

/// A setting that cannot be used; `key` is relative to its table (e.g. `publish`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{key}`: {message}")]
pub struct SettingError {
    pub key: &'static str,
    pub message: String,
}

fn bad(key: &'static str, message: impl Into<String>) -> SettingError {
    SettingError {
        key,
        message: message.into(),
    }
}

/// The synchronous hooks an endpoint can call, in a fixed order (see [`SyncHook::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncHook {
    Connect,
    Join,
    Publish,
    Direct,
    Close,
}

impl SyncHook {
    pub const ALL: [SyncHook; 5] = [
        SyncHook::Connect,
        SyncHook::Join,
        SyncHook::Publish,
        SyncHook::Direct,
        SyncHook::Close,
    ];

    /// The `event` field of the call and the key in `hooks.*`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncHook::Connect => "connect",
            SyncHook::Join => "join",
            SyncHook::Publish => "publish",
            SyncHook::Direct => "direct",
            SyncHook::Close => "close",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// An endpoint's checked hook settings.
#[derive(Debug, Clone)]
pub struct EndpointHooks {
    urls: [Option<Url>; 5],
    /// The whole call, including waiting for a free slot, must finish within this.
    pub timeout: Duration,
    /// What a failed call (timeout, unreachable, unexpected status) means: allow or reject.
    pub fail_open: bool,
    /// Signs each call (see [`super::sign`]) when set.
    pub secret: Option<Secret>,
    /// Calls of this endpoint in flight at once; further ones wait (within `timeout`).
    pub max_in_flight: usize,
}

pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Longest `timeout_ms` accepted, for hooks and lifecycle deliveries alike: a client
/// waiting longer than this for its publish is better served by an error.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

impl EndpointHooks {
    /// Checks an endpoint's `hooks` table.
    pub fn from_table(t: HooksTable) -> Result<EndpointHooks, SettingError> {
        let mut urls: [Option<Url>; 5] = Default::default();
        for (hook, value) in SyncHook::ALL
            .into_iter()
            .zip([t.connect, t.join, t.publish, t.direct, t.close])
        {
            if let Some(v) = value {
                urls[hook.index()] = Some(parse_url(hook.as_str(), &v)?);
            }
        }
        if urls.iter().all(Option::is_none) {
            return Err(bad(
                "hooks",
                "names no hook: set at least one of connect, join, publish, direct, close",
            ));
        }
        Ok(EndpointHooks {
            urls,
            timeout: timeout("timeout_ms", t.timeout_ms, DEFAULT_HOOK_TIMEOUT_MS)?,
            fail_open: t.fail_open.unwrap_or(false),
            secret: secret("secret", t.secret)?,
            max_in_flight: match t.max_in_flight {
                Some(0) => return Err(bad("max_in_flight", "must be at least 1")),
                Some(n) => n,
                None => DEFAULT_MAX_IN_FLIGHT,
            },
        })
    }

    /// The URL of `hook`, when this endpoint calls it.
    pub fn url(&self, hook: SyncHook) -> Option<&Url> {
        self.urls[hook.index()].as_ref()
    }
}

/// The lifecycle events a server can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleEvent {
    RoomOccupied,
    RoomVacated,
    MemberJoined,
    MemberLeft,
    ClientOnline,
    ClientOffline,
}

impl LifecycleEvent {
    pub const ALL: [LifecycleEvent; 6] = [
        LifecycleEvent::RoomOccupied,
        LifecycleEvent::RoomVacated,
        LifecycleEvent::MemberJoined,
        LifecycleEvent::MemberLeft,
        LifecycleEvent::ClientOnline,
        LifecycleEvent::ClientOffline,
    ];

    /// The `event` field of the delivery and its name in `webhooks.events`.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::RoomOccupied => "room_occupied",
            LifecycleEvent::RoomVacated => "room_vacated",
            LifecycleEvent::MemberJoined => "member_joined",
            LifecycleEvent::MemberLeft => "member_left",
            LifecycleEvent::ClientOnline => "client_online",
            LifecycleEvent::ClientOffline => "client_offline",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`LifecycleEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleEvents(u8);

impl LifecycleEvents {
    pub fn all() -> Self {
        LifecycleEvents(LifecycleEvent::ALL.iter().fold(0, |m, e| m | e.bit()))
    }

    pub fn contains(self, e: LifecycleEvent) -> bool {
        self.0 & e.bit() != 0
    }

    /// Parses names; the first unknown one is the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = 0;
        for n in names {
            let e = LifecycleEvent::ALL
                .into_iter()
                .find(|e| e.as_str() == n)
                .ok_or_else(|| n.to_owned())?;
            set |= e.bit();
        }
        Ok(LifecycleEvents(set))
    }
}

/// The checked `[webhooks]` table.
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub url: Url,
    pub events: LifecycleEvents,
    pub secret: Option<Secret>,
    /// A client is reported offline this long after its last connection closed, unless
    /// it reconnected meanwhile.
    pub offline_grace: Duration,
    /// One delivery attempt must finish within this.
    pub timeout: Duration,
    /// Attempts per event, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; it doubles for each further one, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Events waiting for delivery, at most; more are dropped (and counted).
    pub queue_size: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl LifecycleSettings {
    /// Checks the `[webhooks]` table.
    pub fn from_table(t: WebhooksTable) -> Result<LifecycleSettings, SettingError> {
        let url = parse_url("url", &t.url)?;
        let events = match &t.events {
            None => LifecycleEvents::all(),
            Some(names) => {
                LifecycleEvents::from_names(names.iter().map(String::as_str)).map_err(|n| {
                    bad(
                        "events",
                        format!(
                            "unknown event `{n}`; known: {}",
                            LifecycleEvent::ALL.map(LifecycleEvent::as_str).join(", ")
                        ),
                    )
                })?
            }
        };
        let max_attempts = t.max_attempts.unwrap_or(6);
        if !(1..=100).contains(&max_attempts) {
            return Err(bad("max_attempts", "must be 1 to 100"));
        }
        let backoff = Duration::from_millis(t.retry_backoff_ms.unwrap_or(500));
        let backoff_max = Duration::from_millis(t.retry_backoff_max_ms.unwrap_or(60_000));
        if backoff.is_zero() {
            return Err(bad("retry_backoff_ms", "must be at least 1"));
        }
        if backoff_max < backoff {
            return Err(bad(
                "retry_backoff_max_ms",
                "must be at least retry_backoff_ms",
            ));
        }
        let queue_size = t.queue_size.unwrap_or(10_000);
        if queue_size == 0 {
            return Err(bad("queue_size", "must be at least 1"));
        }
        let concurrency = t.concurrency.unwrap_or(4);
        if !(1..=256).contains(&concurrency) {
            return Err(bad("concurrency", "must be 1 to 256"));
        }
        Ok(LifecycleSettings {
            url,
            events,
            secret: secret("secret", t.secret)?,
            offline_grace: Duration::from_millis(t.offline_grace_ms.unwrap_or(5000)),
            timeout: timeout("timeout_ms", t.timeout_ms, 5000)?,
            max_attempts,
            backoff,
            backoff_max,
            queue_size,
            concurrency,
        })
    }
}

fn parse_url(key: &'static str, value: &str) -> Result<Url, SettingError> {
    let url = Url::parse(value).map_err(|e| bad(key, format!("`{value}` is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(
            key,
            format!("`{value}`: use an http:// or https:// URL with a host"),
        ));
    }
    Ok(url)
}

fn timeout(key: &'static str, ms: Option<u64>, default: u64) -> Result<Duration, SettingError> {
    match ms.unwrap_or(default) {
        0 => Err(bad(key, "must be at least 1")),
        ms if ms > MAX_TIMEOUT_MS => Err(bad(key, format!("must be at most {MAX_TIMEOUT_MS}"))),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn secret(key: &'static str, value: Option<String>) -> Result<Option<Secret>, SettingError> {
    match value {
        Some(s) => Secret::new(s)
            .map(Some)
            .ok_or_else(|| bad(key, "must not be empty (leave it out to not sign)")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hooks_are_checked() {
        let t = HooksTable {
            publish: Some("http://127.0.0.1:9/publish".into()),
            ..Default::default()
        };
        let h = EndpointHooks::from_table(t).unwrap();
        assert_eq!(h.timeout, Duration::from_millis(2000));
        assert!(!h.fail_open);
        assert!(h.url(SyncHook::Publish).is_some() && h.url(SyncHook::Join).is_none());

        let err = |t: HooksTable| EndpointHooks::from_table(t).unwrap_err().key;
        assert_eq!(err(HooksTable::default()), "hooks");
        let url = || Some("http://h/x".to_owned());
        assert_eq!(
            err(HooksTable {
                join: Some("ftp://h/x".into()),
                ..Default::default()
            }),
            "join"
        );
        assert_eq!(
            err(HooksTable {
                join: url(),
                timeout_ms: Some(0),
                ..Default::default()
            }),
            "timeout_ms"
        );
        assert_eq!(
            err(HooksTable {
                join: url(),
                secret: Some(String::new()),
                ..Default::default()
            }),
            "secret"
        );
    }

    #[test]
    fn config_file_keys_reach_the_settings_and_mistakes_are_named() {
        use crate::config::{Config, FileConfig, Overrides};
        let merge = |text: &str| {
            let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
            Config::merge(file, Overrides::default()).map_err(|e| e.to_string())
        };
        let c = merge(
            r#"
            [webhooks]
            url = "http://127.0.0.1:1/events"
            offline_grace_ms = 0
            [[endpoint]]
            path = "/ws"
            hooks.publish = "http://127.0.0.1:1/publish"
            hooks.fail_open = true
            [[endpoint]]
            path = "/plain"
            "#,
        )
        .unwrap();
        let h = c.endpoints[0].hooks.as_ref().unwrap();
        assert!(h.fail_open && h.url(SyncHook::Publish).is_some());
        assert!(c.endpoints[1].hooks.is_none());
        assert_eq!(c.webhooks.unwrap().offline_grace, Duration::ZERO);

        let err = |text: &str| merge(text).unwrap_err();
        let ws = "[[endpoint]]\npath = \"/ws\"\n";
        assert!(
            err(&format!("{ws}hooks.publish = \"nope\"")).contains("endpoint[0].hooks.publish")
        );
        assert!(err(&format!("{ws}hooks.timeout_ms = 5")).contains("`endpoint[0].hooks`"));
        assert!(err(&format!("{ws}hooks.pubish = \"http://h/\"")).contains("pubish"));
        assert!(
            err("[webhooks]\nurl = \"http://h/\"\nevents = [\"x\"]").contains("webhooks.events")
        );
        assert!(err("[webhooks]\nevents = []").contains("url"));
        let raw = "[[endpoint]]\npath = \"/raw\"\nmode = \"raw\"\n";
        assert!(err(&format!("{raw}hooks.publish = \"http://h/\"")).contains("hooks.publish"));
        assert!(merge(&format!("{raw}hooks.connect = \"http://h/\"")).is_ok());
    }

    #[test]
    fn lifecycle_settings_have_defaults_and_limits() {
        let t = WebhooksTable {
            url: "https://backend.example/events".into(),
            events: Some(vec!["client_offline".into(), "room_vacated".into()]),
            ..Default::default()
        };
        let s = LifecycleSettings::from_table(t.clone()).unwrap();
        assert!(s.events.contains(LifecycleEvent::ClientOffline));
        assert!(!s.events.contains(LifecycleEvent::MemberJoined));
        assert_eq!(s.max_attempts, 6);
        assert_eq!(s.offline_grace, Duration::from_millis(5000));

        let err = |t: WebhooksTable| LifecycleSettings::from_table(t).unwrap_err();
        let e = err(WebhooksTable {
            events: Some(vec!["room_burned".into()]),
            ..t.clone()
        });
        assert_eq!(e.key, "events");
        assert!(e.message.contains("room_burned"));
        assert_eq!(
            err(WebhooksTable {
                url: "not a url".into(),
                ..t.clone()
            })
            .key,
            "url"
        );
        assert_eq!(
            err(WebhooksTable {
                retry_backoff_ms: Some(1000),
                retry_backoff_max_ms: Some(10),
                ..t.clone()
            })
            .key,
            "retry_backoff_max_ms"
        );
        assert_eq!(
            err(WebhooksTable {
                queue_size: Some(0),
                ..t
            })
            .key,
            "queue_size"
        );
    }
}
