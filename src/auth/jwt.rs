//! OIDC access tokens (JWTs) from the company's identity provider.
//!
//! A token is accepted when its signature verifies with one of the provider's public keys (a
//! JWKS document from a file or a URL), its `iss` and `aud` are the configured ones, and it is
//! within its `nbf`..`exp` window (give or take the configured leeway). The algorithm is the
//! key's, never the token header's choice: a header naming another algorithm is refused, and
//! symmetric (`oct`) keys are never taken from a JWKS. Keys are cached: re-read from the URL
//! every `jwks_refresh_secs`, and at once (at most every 10 s) when a token names a key id the
//! cache does not hold, so a key rotation at the provider is followed without a restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{AuthError, Principal, Role};
use crate::config::JwtConfig;

/// How often an unknown key id may make the URL be re-read.
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(10);

/// Whether `token` has a JWT's shape (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3 && parts[..2].iter().all(|p| !p.is_empty())
}

struct Key {
    id: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

struct Keys {
    keys: Vec<Key>,
    /// When the URL was last read (`None`: never; from a file the keys never go stale).
    fetched: Option<Instant>,
}

/// Checks JWTs against the configured issuer, audience and keys.
pub struct Verifier {
    config: JwtConfig,
    keys: std::sync::RwLock<Keys>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl Verifier {
    /// Reads the JWKS file now; a JWKS URL is read on first use (trusting `tls` for `https://`).
    pub fn new(config: &JwtConfig, tls: &crate::config::TlsConfig) -> anyhow::Result<Self> {
        let keys = match &config.jwks_file {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            config: config.clone(),
            keys: std::sync::RwLock::new(Keys {
                keys,
                fetched: None,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            http: crate::platform::http::builder(tls)
                .map_err(anyhow::Error::msg)?
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// Re-reads the JWKS file, if keys come from one.
    pub fn reload_file(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.config.jwks_file {
            let keys = read_file(path)?;
            self.keys.write().unwrap_or_else(|p| p.into_inner()).keys = keys;
        }
        Ok(())
    }

    /// The principal `token` stands for.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Jwt(format!("malformed: {e}")))?;
        let kid = header.kid.as_deref();
        if self.config.jwks_url.is_some() {
            let (stale, known) = {
                let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
                let age = keys.fetched.map(|f| f.elapsed());
                let stale = age.is_none_or(|a| a > self.refresh_every());
                let known = find(&keys.keys, kid).is_some();
                let may_retry = age.is_none_or(|a| a > UNKNOWN_KID_REFRESH);
                (stale || (!known && may_retry), known)
            };
            if stale {
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "cannot read the identity provider's keys (auth.jwt.jwks_url); keeping the cached ones");
                    if !known {
                        return Err(AuthError::Jwt(
                            "the identity provider's keys could not be read".into(),
                        ));
                    }
                }
            }
        }
        let (key, algorithm) = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            let key = find(&keys.keys, kid).ok_or_else(|| {
                AuthError::Jwt(match kid {
                    Some(kid) => format!("no key `{kid}` at the identity provider"),
                    None => "no key id (kid), and the identity provider has several keys".into(),
                })
            })?;
            (key.key.clone(), key.algorithm)
        };
        if header.alg != algorithm {
            return Err(AuthError::Jwt(format!(
                "signed with {:?}, but its key is for {algorithm:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AuthError::Jwt(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not valid yet (nbf)",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => {
                        "a required claim (exp, iss, aud) is missing"
                    }
                    _ => "invalid",
                }
                .into(),
            )
        })?;
        self.principal(&data.claims)
    }

    fn refresh_every(&self) -> Duration {
        Duration::from_secs(self.config.jwks_refresh_secs)
    }

    /// Reads the JWKS URL (one reader at a time; a caller that waited for another's read uses
    /// it).
    async fn refresh(&self) -> anyhow::Result<()> {
        let Some(url) = &self.config.jwks_url else {
            return Ok(());
        };
        let started = Instant::now();
        let _one = self.refreshing.lock().await;
        let fetched = self.keys.read().unwrap_or_else(|p| p.into_inner()).fetched;
        if fetched.is_some_and(|f| f > started) {
            return Ok(());
        }
        let result = async {
            let set: JwkSet = self
                .http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(usable(&set))
        }
        .await;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        // A failed read is not retried before UNKNOWN_KID_REFRESH either.
        keys.fetched = Some(Instant::now());
        keys.keys = result?;
        Ok(())
    }

    /// The principal the claims name.
    fn principal(&self, claims: &Value) -> Result<Principal, AuthError> {
        let c = &self.config;
        let name = claim(claims, &c.principal_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Jwt(format!("no `{}` claim", c.principal_claim)))?;
        let roles: BTreeSet<Role> = strings(claim(claims, &c.roles_claim))
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect();
        if roles.is_empty() {
            return Err(AuthError::Jwt(format!(
                "its `{}` claim names no mot role (viewer, deployer, admin)",
                c.roles_claim
            )));
        }
        Ok(Principal {
            name: name.to_owned(),
            teams: strings(claim(claims, &c.teams_claim)),
            roles,
            environments: strings(claim(claims, &c.environments_claim))
                .into_iter()
                .collect(),
        })
    }
}

/// The claim at a dotted `path` (`realm_access.roles`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// A claim as a list of strings: an array, or a string of space- or comma-separated words.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn find<'a>(keys: &'a [Key], kid: Option<&str>) -> Option<&'a Key> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.id.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<Key>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("auth.jwt.jwks_file {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("auth.jwt.jwks_file {}: not a JWKS: {e}", path.display()))?;
    let keys = usable(&set);
    if keys.is_empty() {
        anyhow::bail!(
            "auth.jwt.jwks_file {}: no usable public key (RSA, EC or OKP)",
            path.display()
        );
    }
    Ok(keys)
}

/// The public keys of `set` with their algorithm (symmetric keys and keys for encryption are
/// skipped).
fn usable(set: &JwkSet) -> Vec<Key> {
    set.keys
        .iter()
        .filter(|jwk| {
            !matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            )
        })
        .filter_map(|jwk| {
            let algorithm = algorithm_of(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some(Key {
                id: jwk.common.key_id.clone(),
                key,
                algorithm,
            })
        })
        .collect()
}

/// The key's algorithm: its `alg`, or what its type implies.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    // A key naming an algorithm mot cannot verify with (e.g. RSA-OAEP, for encryption) is
    // skipped, not taken for what its type implies.
    let named = match jwk.common.key_algorithm {
        Some(a) => Some(Algorithm::from_str(&a.to_string()).ok()?),
        None => None,
    };
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithm = named.or(implied)?;
    let family_matches = matches!(
        (&jwk.algorithm, algorithm),
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) | (
            AlgorithmParameters::EllipticCurve(_),
            Algorithm::ES256 | Algorithm::ES384
        ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
    );
    family_matches.then_some(algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_read_as_lists() {
        let claims = serde_json::json!({
            "groups": ["checkout", "payments"],
            "scope": "viewer deployer",
            "realm_access": {"roles": ["admin", "offline_access"]},
        });
        assert_eq!(strings(claim(&claims, "groups")), ["checkout", "payments"]);
        assert_eq!(strings(claim(&claims, "scope")), ["viewer", "deployer"]);
        assert_eq!(
            strings(claim(&claims, "realm_access.roles")),
            ["admin", "offline_access"]
        );
        assert!(strings(claim(&claims, "missing")).is_empty());
        assert!(looks_like_jwt("a.b.c") && !looks_like_jwt("mot_abc"));
    }
}
