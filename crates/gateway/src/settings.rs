//! The gateway's settings, as read from configuration. Secrets are [`SecretString`]s (never printed) and
//! may come from files instead, so they stay out of configuration files and process listings.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// Gateway settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Base URLs of the orders instances a standalone gateway forwards to (`http://orders-1:8080`), tried
    /// round-robin; the next one is tried when one refuses the connection.
    pub upstreams: Vec<String>,
    /// API keys and the scopes each grants.
    pub api_keys: Vec<ApiKeySettings>,
    /// JWT bearer tokens: the keys that may sign them and the claims they must carry.
    pub jwt: JwtSettings,
    /// Per-client rate limits.
    pub rate_limit: RateLimitSettings,
    /// Largest request body accepted, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Milliseconds a request may take end to end before the gateway answers 504.
    pub timeout_ms: u64,
    /// Create a development API key with every scope in `<data_dir>/api-key` when no credentials are
    /// configured (the embedded default); when false, a gateway without credentials refuses to start.
    pub dev_key: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            api_keys: Vec::new(),
            jwt: JwtSettings::default(),
            rate_limit: RateLimitSettings::default(),
            max_body_bytes: 256 * 1024,
            timeout_ms: 10_000,
            dev_key: true,
        }
    }
}

impl GatewaySettings {
    /// Whether any credential (API key or JWT key) is configured.
    pub fn has_credentials(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_configured()
    }
}

/// One API key: who it identifies, the secret (exactly one of `key`, `key_file`, `key_sha256`) and its
/// scopes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeySettings {
    /// The client this key identifies (names its rate-limit budget and appears in logs).
    pub id: String,
    /// The key itself (better given through the environment than in a file).
    pub key: Option<SecretString>,
    /// A file holding the key (surrounding whitespace ignored).
    pub key_file: Option<PathBuf>,
    /// The key's SHA-256 as 64 hex digits, so the configuration never holds the key.
    pub key_sha256: Option<String>,
    /// Scopes granted: `orders:write`, `orders:read`, `analytics:read`, `admin`.
    pub scopes: Vec<String>,
    /// This client's sustained requests per second, instead of the default.
    pub requests_per_second: Option<f64>,
    /// This client's burst, instead of the default.
    pub burst: Option<u32>,
    /// The customer this key acts for: it then places, reads, cancels and lists that customer's orders
    /// only (another customer's order answers `404`). A key with the `admin` scope is never bound.
    pub customer_id: Option<String>,
}

/// JWT settings: HS256 with a shared secret and/or RS256 and ES256 with public keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// The HS256 shared secret.
    pub hs256_secret: Option<SecretString>,
    /// A file holding the HS256 shared secret.
    pub hs256_secret_file: Option<PathBuf>,
    /// RS256 and ES256 public keys, each from a PEM file.
    pub keys: Vec<JwtKeySettings>,
    /// A JSON Web Key Set file (`{"keys": [...]}`) with more public keys.
    pub jwks_file: Option<PathBuf>,
    /// The `iss` every token must carry, when set (a token without one is refused).
    pub issuer: Option<String>,
    /// The `aud` every token must carry, when set (a token without one is refused).
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The claim naming the customer a token acts for (`sub`, or a custom one such as `customer_id`): a token
    /// carrying it as a string is bound to that customer, as an API key's `customer_id` binds the key. Tokens
    /// with the `admin` scope, and tokens without the claim, are not bound.
    pub customer_claim: Option<String>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            hs256_secret_file: None,
            keys: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            customer_claim: None,
        }
    }
}

impl JwtSettings {
    /// Whether any signing key is configured.
    pub fn is_configured(&self) -> bool {
        self.hs256_secret.is_some()
            || self.hs256_secret_file.is_some()
            || !self.keys.is_empty()
            || self.jwks_file.is_some()
    }
}

/// A public key that may sign tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeySettings {
    /// The `kid` tokens name this key by; a token without `kid` is tried against every key of its algorithm.
    #[serde(default)]
    pub kid: Option<String>,
    /// `RS256` or `ES256`.
    pub algorithm: String,
    /// PEM file with the public key.
    pub public_key_file: PathBuf,
}

/// Per-client rate limits: a generic cell rate algorithm (a token bucket without a refill timer).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// Sustained requests per second per client.
    pub requests_per_second: f64,
    /// Requests a client may make at once after being idle.
    pub burst: u32,
    /// Milliseconds a Redis call may take; past it (or when Redis fails) the request is let through and
    /// the in-process limiter decides, so a Redis outage never takes the API down.
    pub redis_timeout_ms: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_second: 100.0,
            burst: 200,
            redis_timeout_ms: 250,
        }
    }
}
