//! Authentication: API keys (`X-Api-Key: <key>`, `Authorization: Bearer <key>`, or HTTP Basic with the
//! key as password, which schema-registry clients send from `http://user:key@host` URLs) and JWT bearer
//! tokens (HS256 with a shared secret, RS256 and ES256 with configured public keys or a JWKS file).

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderMap, header};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{GatewayError, Rejection};
use crate::rate_limit::OwnLimit;
use crate::scopes::Scopes;
use crate::settings::{ApiKeySettings, GatewaySettings, JwtSettings};

/// Who made a request, as far as the gateway could prove.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The client: the API key's id, or the token's `sub`.
    pub client: String,
    /// What it may do.
    pub scopes: Scopes,
    /// Its own sustained rate and burst, when configured.
    pub limit: Option<OwnLimit>,
    /// The customer it acts for, when its credential is bound to one (never for `admin`).
    pub customer: Option<String>,
}

/// A verified API key's owner.
#[derive(Debug, Clone)]
struct KeyOwner {
    id: String,
    scopes: Scopes,
    limit: Option<OwnLimit>,
    customer: Option<String>,
}

/// The customer a credential with `scopes` acts for: `bound`, unless the credential is staff (`admin`).
fn bound_customer(scopes: &Scopes, bound: Option<String>) -> Option<String> {
    bound.filter(|c| !c.is_empty() && !scopes.allow_staff())
}

/// A key that may verify tokens.
struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks credentials. Keys are held by their SHA-256, so the process never compares raw secrets and a
/// memory dump of the map does not reveal them.
pub struct Authenticator {
    keys: HashMap<[u8; 32], KeyOwner>,
    jwt_keys: Vec<VerifyingKey>,
    jwt: JwtSettings,
}

/// The claims Orderflow reads from a token (the library checks `exp`, `nbf`, `iss` and `aud`).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Every claim, for the configurable customer claim.
    #[serde(flatten)]
    other: HashMap<String, serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<ScopeClaim>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    List(Vec<String>),
    Text(String),
}

fn read_secret(what: &'static str, path: &Path) -> Result<String, GatewayError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| GatewayError::File {
            what,
            path: path.to_owned(),
            source,
        })
}

/// SHA-256 of a key.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn key_owner(entry: &ApiKeySettings) -> Result<([u8; 32], KeyOwner), GatewayError> {
    if entry.id.trim().is_empty() {
        return Err(GatewayError::Settings("every API key needs an id".into()));
    }
    let given = [
        entry.key.is_some(),
        entry.key_file.is_some(),
        entry.key_sha256.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(GatewayError::Settings(format!(
            "API key '{}' needs exactly one of key, key_file and key_sha256",
            entry.id
        )));
    }
    let plain = match (&entry.key, &entry.key_file) {
        (Some(key), _) => Some(key.expose_secret().trim().to_owned()),
        (None, Some(path)) => Some(read_secret("an API key", path)?),
        (None, None) => None,
    };
    let digest = if let Some(key) = plain {
        // An empty key (an unfilled secret mount, say) would match an empty header: refuse it.
        if key.len() < 16 {
            return Err(GatewayError::Settings(format!(
                "API key '{}' is shorter than 16 characters",
                entry.id
            )));
        }
        key_digest(&key)
    } else {
        let hex = entry.key_sha256.as_deref().unwrap_or_default();
        parse_hex_digest(hex).ok_or_else(|| {
            GatewayError::Settings(format!(
                "API key '{}': key_sha256 must be 64 hex digits",
                entry.id
            ))
        })?
    };
    let scopes = Scopes::from_names(entry.scopes.iter().map(String::as_str));
    let unknown: Vec<&String> = entry
        .scopes
        .iter()
        .filter(|s| crate::scopes::Scope::parse(s).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(GatewayError::Settings(format!(
            "API key '{}' has unknown scopes {unknown:?} (known: orders:write, orders:read, analytics:read, admin)",
            entry.id
        )));
    }
    if let Some(customer) = &entry.customer_id
        && (customer.is_empty() || !customer.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(GatewayError::Settings(format!(
            "API key '{}': customer_id must be visible ASCII without spaces",
            entry.id
        )));
    }
    let limit = Some(OwnLimit {
        requests_per_second: entry.requests_per_second,
        burst: entry.burst,
    });
    Ok((
        digest,
        KeyOwner {
            id: entry.id.clone(),
            customer: bound_customer(&scopes, entry.customer_id.clone()),
            scopes,
            limit,
        },
    ))
}

fn algorithm(name: &str) -> Result<Algorithm, GatewayError> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(GatewayError::Settings(format!(
            "JWT key algorithm '{other}' is not supported (RS256 or ES256)"
        ))),
    }
}

fn verifying_keys(jwt: &JwtSettings) -> Result<Vec<VerifyingKey>, GatewayError> {
    let mut keys = Vec::new();
    let secret = match (&jwt.hs256_secret, &jwt.hs256_secret_file) {
        (Some(secret), _) => Some(secret.clone()),
        (None, Some(path)) => Some(SecretString::from(read_secret("the HS256 secret", path)?)),
        (None, None) => None,
    };
    if let Some(secret) = secret {
        if secret.expose_secret().len() < 32 {
            return Err(GatewayError::Settings(
                "the HS256 secret must be at least 32 bytes".into(),
            ));
        }
        keys.push(VerifyingKey {
            kid: None,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()).map_err(|source| {
                GatewayError::Key {
                    name: "hs256_secret".into(),
                    source,
                }
            })?,
        });
    }
    for entry in &jwt.keys {
        let algorithm = algorithm(&entry.algorithm)?;
        let pem = std::fs::read(&entry.public_key_file).map_err(|source| GatewayError::File {
            what: "a JWT public key",
            path: entry.public_key_file.clone(),
            source,
        })?;
        let key = match algorithm {
            Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_rsa_pem(&pem),
        }
        .map_err(|source| GatewayError::Key {
            name: entry.public_key_file.display().to_string(),
            source,
        })?;
        keys.push(VerifyingKey {
            kid: entry.kid.clone(),
            algorithm,
            key,
        });
    }
    if let Some(path) = &jwt.jwks_file {
        let text = read_secret("a JWKS", path)?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|source| GatewayError::Jwks {
            path: path.clone(),
            source,
        })?;
        for jwk in &set.keys {
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                .filter(|a| matches!(a, Algorithm::RS256 | Algorithm::ES256));
            let Some(algorithm) = algorithm else {
                tracing::warn!(kid = ?jwk.common.key_id, "JWKS key without an RS256/ES256 'alg': skipped");
                continue;
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|source| GatewayError::Key {
                name: jwk.common.key_id.clone().unwrap_or_else(|| "(no kid)".into()),
                source,
            })?;
            keys.push(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
    }
    Ok(keys)
}

impl Authenticator {
    /// Loads the configured API keys and JWT keys.
    pub fn new(settings: &GatewaySettings) -> Result<Self, GatewayError> {
        let mut keys = HashMap::new();
        for entry in &settings.api_keys {
            let (digest, owner) = key_owner(entry)?;
            if keys.insert(digest, owner).is_some() {
                return Err(GatewayError::Settings(format!(
                    "API key '{}' has the same secret as another key",
                    entry.id
                )));
            }
        }
        Ok(Self {
            keys,
            jwt_keys: verifying_keys(&settings.jwt)?,
            jwt: settings.jwt.clone(),
        })
    }

    /// Adds one more API key (the embedded default's development key).
    pub fn add_key(&mut self, id: &str, key: &str, scopes: Scopes) {
        self.keys.insert(
            key_digest(key),
            KeyOwner {
                id: id.to_owned(),
                scopes,
                limit: None,
                customer: None,
            },
        );
    }

    /// Whether any credential can be accepted at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.jwt_keys.is_empty()
    }

    /// The principal behind the request's credential.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Rejection> {
        let api_key = headers.get("x-api-key").map(|v| v.to_str());
        let bearer = headers.get(header::AUTHORIZATION).map(|v| v.to_str());
        let credential = match (api_key, bearer) {
            (Some(Ok(key)), _) => Credential::Key(key.trim()),
            (Some(Err(_)), _) => return Err(unauthenticated("the X-Api-Key header is not readable")),
            (None, Some(Ok(value))) => {
                let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
                let token = token.trim();
                if scheme.eq_ignore_ascii_case("basic") && !token.is_empty() {
                    return self.basic(token);
                }
                if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                    return Err(unauthenticated("expected 'Authorization: Bearer <token or key>'"));
                }
                if token.split('.').count() == 3 {
                    Credential::Jwt(token)
                } else {
                    Credential::Key(token)
                }
            }
            (None, Some(Err(_))) => return Err(unauthenticated("the Authorization header is not readable")),
            (None, None) => {
                return Err(unauthenticated(
                    "no credential: send 'X-Api-Key: <key>' or 'Authorization: Bearer <token>'",
                ));
            }
        };
        match credential {
            Credential::Key(key) => self.api_key(key),
            Credential::Jwt(token) => self.verify_jwt(token),
        }
    }

    fn api_key(&self, key: &str) -> Result<Principal, Rejection> {
        if key.is_empty() {
            return Err(unauthenticated("empty API key"));
        }
        self.keys
            .get(&key_digest(key))
            .map(|owner| Principal {
                client: format!("key:{}", owner.id),
                scopes: owner.scopes.clone(),
                limit: owner.limit,
                customer: owner.customer.clone(),
            })
            .ok_or_else(|| unauthenticated("unknown API key"))
    }

    /// HTTP Basic: any user name, the API key as password.
    fn basic(&self, encoded: &str) -> Result<Principal, Rejection> {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
        let (_, key) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
        self.api_key(key)
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("malformed token"))?;
        let candidates = self
            .jwt_keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            });
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.jwt.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if self.jwt.issuer.is_some() {
            required.push("iss");
        }
        if self.jwt.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        if let Some(issuer) = &self.jwt.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.jwt.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    let mut names: Vec<String> = claims
                        .scope
                        .as_deref()
                        .map(|s| s.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default();
                    match claims.scp {
                        Some(ScopeClaim::List(list)) => names.extend(list),
                        Some(ScopeClaim::Text(text)) => {
                            names.extend(text.split_whitespace().map(str::to_owned))
                        }
                        None => {}
                    }
                    let scopes = Scopes::from_names(names.iter().map(String::as_str));
                    let customer = match self.jwt.customer_claim.as_deref() {
                        Some("sub") => Some(claims.sub.clone()),
                        Some(claim) => claims
                            .other
                            .get(claim)
                            .and_then(|v| v.as_str())
                            .map(str::to_owned),
                        None => None,
                    };
                    return Ok(Principal {
                        client: format!("sub:{}", claims.sub),
                        customer: bound_customer(&scopes, customer),
                        scopes,
                        limit: None,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        use jsonwebtoken::errors::ErrorKind;
        Err(match last.as_ref().map(|e| e.kind()) {
            None => unauthenticated("no key accepts this token's algorithm and key id"),
            Some(ErrorKind::ExpiredSignature) => unauthenticated("the token has expired"),
            Some(ErrorKind::ImmatureSignature) => unauthenticated("the token is not valid yet"),
            Some(ErrorKind::InvalidIssuer) => unauthenticated("the token's issuer is not accepted"),
            Some(ErrorKind::InvalidAudience) => unauthenticated("the token's audience is not accepted"),
            Some(ErrorKind::MissingRequiredClaim(claim)) => {
                unauthenticated(&format!("the token has no '{claim}' claim"))
            }
            Some(_) => unauthenticated("the token's signature or claims are not valid"),
        })
    }
}

enum Credential<'a> {
    Key(&'a str),
    Jwt(&'a str),
}

fn unauthenticated(why: &str) -> Rejection {
    Rejection::Unauthenticated(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_parse_and_bad_ones_do_not() {
        let digest = key_digest("k");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hex_digest(&hex), Some(digest));
        assert_eq!(parse_hex_digest("abc"), None);
        assert_eq!(parse_hex_digest(&"zz".repeat(32)), None);
    }
}
