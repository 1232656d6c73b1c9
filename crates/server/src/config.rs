//! Configuration: a TOML file, then `SWITCHBOARD_…` environment variables, then flags —
//! each overriding the one before (PROTOCOL §9, §10).
//!
//! [`FileConfig`] mirrors the file; [`Overrides`] carries what the command line and the
//! environment said (clap reads both); [`Config::load`] merges them and checks every value
//! so that a bad file stops the server at start with a clear message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use switchboard_hub::{EndpointRules, EventSet, HubConfig, Mode, SlowConsumer};

use crate::auth::{AuthConfig, JwtAuth};
use crate::cors::CorsConfig;
use crate::ratelimit::{Limits, LimitsConfig, MessageRateConfig};
use crate::webhooks::SyncHook;

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config file {path}: {error}")]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub store: Option<String>,
    pub redis: Option<String>,
    pub api_token: Option<String>,
    pub node_id: Option<String>,
    pub log: Option<String>,
    pub log_format: Option<String>,
    pub shutdown_drain_ms: Option<u64>,
    pub empty_room_grace_ms: Option<u64>,
    pub coded_room_ttl_s: Option<u64>,
    pub room_code_digits: Option<usize>,
    pub discovery: Option<DiscoveryConfig>,
    #[serde(default)]
    pub endpoint: Vec<EndpointConfig>,
    /// Lifecycle webhooks (docs/webhooks.md).
    pub webhooks: Option<crate::webhooks::WebhooksTable>,
    // Security: server-wide limits and CORS (docs/security.md).
    pub limits: Option<LimitsConfig>,
    pub cors: Option<CorsConfig>,
    /// `[cluster]`: tuning of cluster mode (`redis`).
    #[serde(default)]
    pub cluster: ClusterTuning,
}

/// `[cluster]`: how nodes sharing a Redis watch each other (used with `redis` only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTuning {
    /// Prefix of every Redis key and channel (several clusters may share one Redis).
    pub prefix: String,
    /// How often a node announces itself.
    pub heartbeat_ms: u64,
    /// A node silent this long is dead: its members leave presence everywhere.
    pub node_ttl_ms: u64,
    /// How long a room's offsets, epoch and history outlive its last message.
    pub room_ttl_s: u64,
    /// Messages kept per room in Redis for recovery on any node.
    pub stream_len: usize,
}

impl Default for ClusterTuning {
    fn default() -> Self {
        ClusterTuning {
            prefix: "switchboard".into(),
            heartbeat_ms: 10_000,
            node_ttl_ms: 30_000,
            room_ttl_s: 24 * 3600,
            stream_len: 1000,
        }
    }
}

/// `[discovery]`: answering LAN discovery probes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    #[serde(default)]
    pub enabled: bool,
    pub port: Option<u16>,
    pub name: Option<String>,
}

/// One `[[endpoint]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub path: String,
    #[serde(default)]
    pub mode: Mode,
    pub room: Option<String>,
    pub max_connections: Option<usize>,
    pub max_message_size: Option<usize>,
    pub ping_interval_ms: Option<u64>,
    pub connection_timeout_ms: Option<u64>,
    pub auto_create_rooms: Option<bool>,
    pub max_rooms_per_connection: Option<usize>,
    pub room_max_connections: Option<usize>,
    pub history_size: Option<usize>,
    pub history_ttl_s: Option<u64>,
    pub events: Option<Vec<String>>,
    pub compression: Option<bool>,
    // permessage-deflate settings (docs/compression.md); need `compression = true`.
    pub compression_min_bytes: Option<usize>,
    pub compression_level: Option<u32>,
    pub compression_server_no_context_takeover: Option<bool>,
    pub compression_client_no_context_takeover: Option<bool>,
    pub compression_server_max_window_bits: Option<u8>,
    pub compression_client_max_window_bits: Option<u8>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub require_origin: bool,
    pub queue_size: Option<usize>,
    pub presence_events_max_members: Option<usize>,
    pub slow_consumer: Option<SlowConsumer>,
    pub accepts_per_second: Option<u32>,
    /// Synchronous webhooks (docs/webhooks.md).
    pub hooks: Option<crate::webhooks::HooksTable>,
    // Security: JWT auth, message rate and first-message timeout (docs/security.md).
    pub auth: Option<AuthConfig>,
    pub rate_limit: Option<MessageRateConfig>,
    pub first_message_timeout_ms: Option<u64>,
}

/// What the command line and environment set; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub config: Option<PathBuf>,
    pub store: Option<String>,
    pub redis: Option<String>,
    pub api_token: Option<String>,
    pub node_id: Option<String>,
    pub log: Option<String>,
}

/// One endpoint, ready to serve.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub rules: Arc<EndpointRules>,
    pub allowed_origins: Vec<String>,
    pub require_origin: bool,
    pub accepts_per_second: u32,
    /// Synchronous webhooks of this endpoint.
    pub hooks: Option<crate::webhooks::EndpointHooks>,
    /// JWT authentication, when the endpoint has an `auth` table.
    pub auth: Option<Arc<JwtAuth>>,
    /// permessage-deflate, when enabled for this endpoint.
    pub compression: Option<crate::deflate::DeflateConfig>,
}

/// The merged, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: String,
    pub redis: Option<String>,
    pub api_token: Option<String>,
    pub log: String,
    pub log_json: bool,
    pub shutdown_drain: Duration,
    pub hub: HubConfig,
    pub discovery: DiscoveryConfig,
    pub endpoints: Vec<Endpoint>,
    /// Lifecycle webhooks, when `[webhooks]` is set.
    pub webhooks: Option<Arc<crate::webhooks::LifecycleSettings>>,
    /// Per-address and REST limits (`[limits]`).
    pub limits: Limits,
    /// CORS for the REST API (`[cors]`; checked at load).
    pub cors: CorsConfig,
    /// `[cluster]`: tuning of cluster mode (`redis`).
    pub cluster: ClusterTuning,
}

impl Config {
    /// Reads the file named by the overrides (if any) and applies the overrides.
    pub fn load(over: Overrides) -> Result<Config, ConfigError> {
        let file = match &over.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(file, over)
    }

    /// Merges a parsed file with the overrides.
    pub fn merge(file: FileConfig, over: Overrides) -> Result<Config, ConfigError> {
        // Key files named in the config are relative to the config file's folder.
        let base = over
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let limits_file = file.limits.clone().unwrap_or_default();
        let limits = limits_file
            .check()
            .map_err(|(k, m)| invalid(format!("limits.{k}"), m))?;
        let cors = file.cors.clone().unwrap_or_default();
        cors.layer()
            .map_err(|(k, m)| invalid(format!("cors.{k}"), m))?;
        let listen_s = over
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s
            .parse()
            .map_err(|e| invalid("listen", format!("`{listen_s}` is not HOST:PORT ({e})")))?;
        let node_id = over
            .node_id
            .or(file.node_id)
            .unwrap_or_else(|| format!("node-{:04x}", rand::random::<u16>()));
        if node_id.is_empty()
            || !node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid("node_id", "use letters, digits, `-` and `_`"));
        }
        let defaults = HubConfig::default();
        let hub = HubConfig {
            node_id,
            empty_room_grace: file
                .empty_room_grace_ms
                .map_or(defaults.empty_room_grace, Duration::from_millis),
            coded_room_ttl: file
                .coded_room_ttl_s
                .map_or(defaults.coded_room_ttl, Duration::from_secs),
            code_digits: file.room_code_digits.unwrap_or(defaults.code_digits),
            max_rooms: limits_file.max_rooms.unwrap_or(defaults.max_rooms),
            code_attempts_burst: limits_file
                .wrong_codes_burst
                .unwrap_or(defaults.code_attempts_burst),
            code_attempts_refill: limits_file
                .wrong_codes_refill_s
                .map_or(defaults.code_attempts_refill, Duration::from_secs),
            ..defaults
        };
        if hub.max_rooms == 0 {
            return Err(invalid("limits.max_rooms", "must be at least 1"));
        }
        if hub.code_attempts_burst == 0 || hub.code_attempts_refill.is_zero() {
            return Err(invalid(
                "limits.wrong_codes_burst",
                "wrong_codes_burst and wrong_codes_refill_s must be at least 1",
            ));
        }
        if !(4..=8).contains(&hub.code_digits) {
            return Err(invalid("room_code_digits", "must be 4 to 8"));
        }
        let log_format = file.log_format.unwrap_or_else(|| "text".into());
        let log_json = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(invalid(
                    "log_format",
                    format!("`{other}`: use text or json"),
                ));
            }
        };
        let mut endpoints = Vec::new();
        for (i, e) in file.endpoint.into_iter().enumerate() {
            endpoints.push(endpoint(i, e, &base)?);
        }
        if endpoints.is_empty() {
            endpoints.push(Endpoint {
                rules: Arc::new(EndpointRules::new("/ws")),
                allowed_origins: Vec::new(),
                require_origin: false,
                accepts_per_second: 0,
                hooks: None,
                auth: None,
                compression: None,
            });
        }
        for (i, a) in endpoints.iter().enumerate() {
            if endpoints[..i].iter().any(|b| b.rules.path == a.rules.path) {
                return Err(invalid(
                    "endpoint.path",
                    format!("`{}` is declared twice", a.rules.path),
                ));
            }
        }
        Ok(Config {
            listen,
            store: over
                .store
                .or(file.store)
                .unwrap_or_else(|| "sqlite://switchboard.db".into()),
            redis: over.redis.or(file.redis),
            api_token: over.api_token.or(file.api_token).filter(|t| !t.is_empty()),
            log: over.log.or(file.log).unwrap_or_else(|| "info".into()),
            log_json,
            shutdown_drain: Duration::from_millis(file.shutdown_drain_ms.unwrap_or(5000)),
            hub,
            discovery: file.discovery.unwrap_or_default(),
            endpoints,
            webhooks: file
                .webhooks
                .map(crate::webhooks::LifecycleSettings::from_table)
                .transpose()
                .map_err(|e| invalid(format!("webhooks.{}", e.key), e.message))?
                .map(Arc::new),
            limits,
            cors,
            cluster: file.cluster,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_owned(),
        error: Box::new(error),
    })
}

fn endpoint(i: usize, e: EndpointConfig, base: &Path) -> Result<Endpoint, ConfigError> {
    let key = |k: &str| format!("endpoint[{i}].{k}");
    if !e.path.starts_with('/') || e.path.len() < 2 && e.path != "/" {
        return Err(invalid(key("path"), "must start with `/`"));
    }
    if matches!(
        e.path.as_str(),
        "/" | "/admin" | "/healthz" | "/readyz" | "/metrics" | "/client.js"
    ) || e.path.starts_with("/api/")
    {
        return Err(invalid(key("path"), format!("`{}` is reserved", e.path)));
    }
    let compression = crate::deflate::DeflateConfig::from_keys(crate::deflate::DeflateKeys {
        compression: e.compression,
        min_bytes: e.compression_min_bytes,
        level: e.compression_level,
        server_no_context_takeover: e.compression_server_no_context_takeover,
        client_no_context_takeover: e.compression_client_no_context_takeover,
        server_max_window_bits: e.compression_server_max_window_bits,
        client_max_window_bits: e.compression_client_max_window_bits,
    })
    .map_err(|(k, message)| invalid(key(k), message))?;
    let mut r = EndpointRules::new(e.path);
    r.mode = e.mode;
    if let Some(room) = e.room {
        if !switchboard_protocol::room_id::is_valid(&room) {
            return Err(invalid(
                key("room"),
                format!("`{room}` is not a valid room id"),
            ));
        }
        r.raw_room = room;
    }
    let positive = |k: &str, v: Option<usize>, d: usize| -> Result<usize, ConfigError> {
        match v {
            Some(0) => Err(invalid(key(k), "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(d),
        }
    };
    r.max_connections = positive("max_connections", e.max_connections, r.max_connections)?;
    r.max_message_size = positive("max_message_size", e.max_message_size, r.max_message_size)?;
    r.max_rooms_per_connection = positive(
        "max_rooms_per_connection",
        e.max_rooms_per_connection,
        r.max_rooms_per_connection,
    )?;
    r.room_max_connections = positive(
        "room_max_connections",
        e.room_max_connections,
        r.room_max_connections,
    )?;
    r.queue_size = positive("queue_size", e.queue_size, r.queue_size)?;
    if let Some(n) = e.presence_events_max_members {
        r.presence_events_max_members = n;
    }
    if let Some(ms) = e.ping_interval_ms {
        if ms < 10 {
            return Err(invalid(key("ping_interval_ms"), "must be at least 10"));
        }
        r.ping_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = e.connection_timeout_ms {
        if ms < 10 {
            return Err(invalid(key("connection_timeout_ms"), "must be at least 10"));
        }
        r.connection_timeout = Duration::from_millis(ms);
    }
    if let Some(b) = e.auto_create_rooms {
        r.auto_create_rooms = b;
    }
    if let Some(h) = e.history_size {
        r.history_size = h;
    }
    if let Some(t) = e.history_ttl_s {
        r.history_ttl = Duration::from_secs(t);
    }
    if let Some(names) = &e.events {
        r.events = EventSet::from_names(names.iter().map(String::as_str))
            .map_err(|bad| invalid(key("events"), format!("unknown message type `{bad}`")))?;
    }
    if let Some(p) = e.slow_consumer {
        r.slow_consumer = p;
    }
    for o in &e.allowed_origins {
        if o.is_empty() || o.contains(char::is_whitespace) {
            return Err(invalid(
                key("allowed_origins"),
                format!("`{o}` is not an origin"),
            ));
        }
    }
    let hooks = e
        .hooks
        .map(crate::webhooks::EndpointHooks::from_table)
        .transpose()
        .map_err(|err| match err.key {
            "hooks" => invalid(key("hooks"), err.message),
            k => invalid(key(&format!("hooks.{k}")), err.message),
        })?;
    if r.mode != Mode::Protocol
        && let Some(h) = &hooks
        && let Some(hook) = [SyncHook::Join, SyncHook::Publish, SyncHook::Direct]
            .into_iter()
            .find(|k| h.url(*k).is_some())
    {
        return Err(invalid(
            key(&format!("hooks.{}", hook.as_str())),
            "raw and echo endpoints have no joins, publishes or directs; only the connect and close hooks apply",
        ));
    }
    // Security settings (docs/security.md).
    let auth = match &e.auth {
        Some(a) => Some(Arc::new(
            JwtAuth::from_config(a, base)
                .map_err(|(k, m)| invalid(key(&format!("auth.{k}")), m))?,
        )),
        None => None,
    };
    if let Some(a) = &auth {
        r.verifier = Some(a.clone());
        r.expiry_warning = a.expiry_warning();
    }
    if let Some(rl) = &e.rate_limit {
        r.rate_limit = rl
            .check()
            .map_err(|(k, m)| invalid(key(&format!("rate_limit.{k}")), m))?;
    }
    if let Some(ms) = e.first_message_timeout_ms {
        r.first_message_timeout = Duration::from_millis(ms);
    }
    Ok(Endpoint {
        rules: Arc::new(r),
        allowed_origins: e.allowed_origins,
        require_origin: e.require_origin,
        accepts_per_second: e.accepts_per_second.unwrap_or(0),
        hooks,
        auth,
        compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> FileConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file = parse("listen = \"127.0.0.1:9000\"\nstore = \"memory\"\n");
        let over = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let c = Config::merge(file, over).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.store, "memory");
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.endpoints[0].rules.path, "/ws");
        assert_eq!(c.shutdown_drain, Duration::from_millis(5000));
    }

    #[test]
    fn endpoint_tables_are_read_with_their_limits() {
        let file = parse(
            r#"
            [[endpoint]]
            path = "/chat"
            mode = "raw"
            room = "lobby"
            max_message_size = 1024
            events = ["join", "publish"]
            slow_consumer = "drop"
            "#,
        );
        let c = Config::merge(file, Overrides::default()).unwrap();
        let r = &c.endpoints[0].rules;
        assert_eq!(r.mode, Mode::Raw);
        assert_eq!(r.raw_room, "lobby");
        assert_eq!(r.max_message_size, 1024);
        assert!(r.events.allows("join") && !r.events.allows("direct"));
        assert_eq!(r.slow_consumer, SlowConsumer::Drop);
    }

    #[test]
    fn mistakes_are_reported_by_key() {
        let bad = |s: &str| {
            Config::merge(parse(s), Overrides::default())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("[[endpoint]]\npath = \"/ws\"\nevents = [\"jump\"]").contains("jump"));
        assert!(bad("[[endpoint]]\npath = \"/ws\"\nqueue_size = 0").contains("queue_size"));
        assert!(bad("[[endpoint]]\npath = \"/api/x\"").contains("reserved"));
        assert!(bad("[[endpoint]]\npath = \"/a\"\n[[endpoint]]\npath = \"/a\"").contains("twice"));
        assert!(bad("listen = \"nowhere\"").contains("listen"));
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn security_settings_are_read_and_checked() {
        let file = parse(
            r#"
            [limits]
            max_connections_per_ip = 3
            max_rooms = 10
            [cors]
            allowed_origins = ["https://*.example.com"]
            [[endpoint]]
            path = "/s"
            auth.jwt_secret = "0123456789abcdef0123456789abcdef"
            auth.expiry_warning_ms = 5000
            rate_limit.messages_per_second = 10
            first_message_timeout_ms = 2000
            "#,
        );
        let c = Config::merge(file, Overrides::default()).unwrap();
        let r = &c.endpoints[0].rules;
        assert!(c.endpoints[0].auth.is_some() && r.verifier.is_some());
        assert_eq!(r.expiry_warning, Duration::from_millis(5000));
        assert_eq!((r.rate_limit.per_second, r.rate_limit.burst), (10, 100));
        assert_eq!(r.first_message_timeout, Duration::from_millis(2000));
        assert_eq!(c.limits.max_connections_per_ip, 3);
        assert_eq!(c.hub.max_rooms, 10);
        let bad = |s: &str| {
            Config::merge(parse(s), Overrides::default())
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad("[[endpoint]]\npath = \"/s\"\nauth.required = true").contains("auth.jwt_secret")
        );
        assert!(
            bad("[[endpoint]]\npath = \"/s\"\nauth.jwt_public_key = \"missing.pem\"")
                .contains("missing.pem")
        );
        assert!(
            bad("[[endpoint]]\npath = \"/s\"\nrate_limit.burst = 0").contains("rate_limit.burst")
        );
        assert!(bad("[limits]\nmax_header_bytes = 10").contains("limits.max_header_bytes"));
        assert!(
            bad("[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true").contains("cors.")
        );
        assert!(
            toml::from_str::<FileConfig>("[[endpoint]]\npath = \"/s\"\nauth.jwt_secrt = \"x\"")
                .is_err()
        );
    }

    #[test]
    fn compression_keys() {
        let c = Config::merge(
            parse("[[endpoint]]\npath = \"/z\"\ncompression = true\ncompression_level = 1\ncompression_min_bytes = 64"),
            Overrides::default(),
        )
        .unwrap();
        let z = c.endpoints[0].compression.unwrap();
        assert_eq!((z.level, z.min_bytes), (1, 64));
        assert!(z.server_no_context_takeover && z.client_no_context_takeover);
        let bad = |s: &str| {
            Config::merge(parse(s), Overrides::default())
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad("[[endpoint]]\npath = \"/z\"\ncompression_level = 1")
                .contains("endpoint[0].compression_level")
        );
        assert!(bad("[[endpoint]]\npath = \"/z\"\ncompression = true\ncompression_server_max_window_bits = 8")
            .contains("compression_server_max_window_bits"));
    }
}
