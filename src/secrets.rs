//! Secret environment values (`secret_env`): sealed by the API before they leave it, carried and
//! kept sealed on Kafka and in Cassandra, opened only by a region's operation and mending agents
//! for the scheduler call, never shown by a GET.
//!
//! A sealed value is `mot:v1:<key id>:<base64url(nonce | ciphertext)>`: XChaCha20-Poly1305 with a
//! random 192-bit nonce, the variable's name as associated data (a value cannot be moved to
//! another variable). The keyring is a list of `<id>=<base64 of 32 bytes>` lines, from a file or
//! an environment variable (entries separated by newlines or commas); the first key seals, every
//! key opens. To rotate: put a new key first, reload or restart the API and the regional
//! replicas, and drop the old key once no deployment that may be launched again (its rollbacks
//! included) holds values sealed with it.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::config::SecretsConfig;

const PREFIX: &str = "mot:v1:";

/// `N` bytes from the OS's random source.
pub fn random<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(bytes)
}

/// What GETs show instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// A sealed value, as it travels and rests. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Hides a deployment request's (JSON) secrets: every `spec.secret_env` value, and with
/// `hide_env` every `spec.env` value too, become `"<redacted>"`.
pub fn redact_request(request: &mut serde_json::Value, hide_env: bool) {
    let fields: &[&str] = if hide_env {
        &["secret_env", "env"]
    } else {
        &["secret_env"]
    };
    for field in fields {
        if let Some(vars) = request
            .get_mut("spec")
            .and_then(|s| s.get_mut(*field))
            .and_then(|v| v.as_object_mut())
        {
            for value in vars.values_mut() {
                *value = serde_json::Value::String(REDACTED.into());
            }
        }
    }
}

/// Why a secret could not be sealed or opened (never holds the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the OS's random source failed: {0}")]
    Random(String),
    #[error("no secret key is configured ([secrets] keyring_file or keyring_env)")]
    NoKey,
    #[error("the keyring: {0}")]
    Keyring(String),
    #[error("secret_env {name}: sealed with key `{key}`, which the keyring does not hold")]
    UnknownKey { name: String, key: String },
    #[error("secret_env {name}: not a value mot sealed, or altered")]
    Corrupt { name: String },
}

/// The secret keys: the first seals, all open.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<(String, [u8; 32])>,
    /// Why the configured keyring could not be read (then it seals and opens nothing).
    problem: Option<String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("keys", &REDACTED)
            .finish()
    }
}

impl Keyring {
    /// The keyring `config` names; empty without one.
    pub fn from_config(config: &SecretsConfig) -> Result<Self, SecretError> {
        let text = match (&config.keyring_file, &config.keyring_env) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                SecretError::Keyring(format!("secrets.keyring_file {}: {e}", path.display()))
            })?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                SecretError::Keyring(format!("secrets.keyring_env: ${var} is not set"))
            })?,
            (None, None) => return Ok(Self::default()),
        };
        Self::parse(&text)
    }

    /// The keyring of `config`, or one that refuses every secret with the reason it could not
    /// be read (an agent keeps running and fails only the launches that carry secrets).
    pub fn from_config_or_problem(config: &SecretsConfig) -> Self {
        Self::from_config(config).unwrap_or_else(|e| Self {
            keys: Vec::new(),
            problem: Some(e.to_string()),
        })
    }

    /// Parses `<id>=<base64 key>` entries, one per line or comma-separated; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let mut keys: Vec<(String, [u8; 32])> = Vec::new();
        let entries = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let bad = |why: &str| SecretError::Keyring(format!("entry {i}: {why}"));
            let (id, key) = entry
                .split_once('=')
                .ok_or_else(|| bad("not `<id>=<base64 key>`"))?;
            let id = id.trim();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad("the id must be letters, digits, - or _"));
            }
            let bytes = STANDARD
                .decode(key.trim())
                .map_err(|_| bad("the key is not base64"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad("the key must be 32 bytes"))?;
            if keys.iter().any(|(other, _)| other == id) {
                return Err(bad("the id is listed twice"));
            }
            keys.push((id.to_owned(), key));
        }
        Ok(Self {
            keys,
            problem: None,
        })
    }

    /// A new keyring entry `<id>=<base64 key>` (32 bytes from the OS's random source).
    pub fn new_entry(id: &str) -> Result<String, SecretError> {
        Ok(format!("{id}={}", STANDARD.encode(random::<32>()?)))
    }

    fn unusable(&self) -> SecretError {
        match &self.problem {
            Some(problem) => SecretError::Keyring(problem.clone()),
            None => SecretError::NoKey,
        }
    }

    /// Seals `value` of variable `name` with the first key.
    pub fn seal(&self, name: &str, value: &str) -> Result<Sealed, SecretError> {
        let (id, key) = self.keys.first().ok_or_else(|| self.unusable())?;
        let cipher = XChaCha20Poly1305::new(key.into());
        let nonce = random::<24>()?;
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt { name: name.into() })?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(Sealed(format!(
            "{PREFIX}{id}:{}",
            URL_SAFE_NO_PAD.encode(out)
        )))
    }

    /// Opens `sealed`, the value of variable `name`.
    pub fn open(&self, name: &str, sealed: &Sealed) -> Result<String, SecretError> {
        let corrupt = || SecretError::Corrupt { name: name.into() };
        let (id, data) = sealed
            .0
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(corrupt)?;
        if self.keys.is_empty() {
            return Err(self.unusable());
        }
        let (_, key) =
            self.keys
                .iter()
                .find(|(k, _)| k == id)
                .ok_or_else(|| SecretError::UnknownKey {
                    name: name.into(),
                    key: id.into(),
                })?;
        let bytes = URL_SAFE_NO_PAD.decode(data).map_err(|_| corrupt())?;
        if bytes.len() < 24 {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }

    /// Opens every value of `sealed`.
    pub fn open_all(
        &self,
        sealed: &BTreeMap<String, Sealed>,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        sealed
            .iter()
            .map(|(name, value)| Ok((name.clone(), self.open(name, value)?)))
            .collect()
    }

    /// A keyed digest of `value` (HMAC-SHA-256 with the first key): tells a retried request
    /// from another without keeping the secret or a plain hash of it.
    pub fn digest(&self, name: &str, value: &str) -> Result<String, SecretError> {
        use hmac::Mac;
        let (_, key) = self.keys.first().ok_or_else(|| self.unusable())?;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
            .map_err(|_| SecretError::NoKey)?;
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_any_key_of_the_ring_and_only_for_their_name() {
        let old = Keyring::parse(&Keyring::new_entry("k1").unwrap()).unwrap();
        let both = Keyring::parse(&format!(
            "{}\n{}",
            Keyring::new_entry("k2").unwrap(),
            Keyring::new_entry("k1").unwrap()
        ))
        .unwrap();
        let sealed = old.seal("DB_PASSWORD", "hunter2").unwrap();
        assert!(sealed.0.starts_with("mot:v1:k1:"), "{}", sealed.0);
        assert!(!sealed.0.contains("hunter2"));
        assert_eq!(format!("{sealed:?}"), REDACTED);
        assert_eq!(old.open("DB_PASSWORD", &sealed).unwrap(), "hunter2");
        // Another key of the same id does not open it.
        assert_eq!(
            both.open("DB_PASSWORD", &sealed),
            Err(SecretError::Corrupt {
                name: "DB_PASSWORD".into()
            })
        );
        let rotated = Keyring::parse(&format!(
            "{},{}",
            Keyring::new_entry("k2").unwrap(),
            Keyring::new_entry("k1").unwrap().replace("k1=", "k0=")
        ))
        .unwrap();
        assert!(matches!(
            rotated.open("DB_PASSWORD", &sealed),
            Err(SecretError::UnknownKey { .. })
        ));
        // Moved to another variable, it does not open.
        assert!(old.open("OTHER", &sealed).is_err());
        // Two seals of one value differ (random nonces).
        assert_ne!(old.seal("A", "x").unwrap(), old.seal("A", "x").unwrap());
        assert_eq!(old.digest("A", "x").unwrap(), old.digest("A", "x").unwrap());
        assert_ne!(old.digest("A", "x").unwrap(), old.digest("B", "x").unwrap());
        assert_eq!(Keyring::default().seal("A", "x"), Err(SecretError::NoKey));
        assert!(format!("{both:?}").contains("k2") && !format!("{both:?}").contains('='));
    }

    #[test]
    fn a_bad_keyring_is_named() {
        assert!(Keyring::parse("k1=short").is_err());
        assert!(Keyring::parse("=AAAA").is_err());
        let twice = format!(
            "{}\n{}",
            Keyring::new_entry("k").unwrap(),
            Keyring::new_entry("k").unwrap()
        );
        assert!(Keyring::parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
