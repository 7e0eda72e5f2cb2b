//! Static tokens for bots and CI: a TOML file whose entries hold each token's SHA-256 (hex),
//! never the token itself, and who it stands for.
//!
//! ```toml
//! [[tokens]]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! principal = "ci-checkout"
//! teams = ["checkout"]
//! roles = ["deployer"]
//! environments = ["test", "production"]
//! ```
//!
//! `mot token new` makes a token and prints its entry.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Principal, Role};
use crate::config::AuthConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    sha256: String,
    principal: String,
    #[serde(default)]
    teams: Vec<String>,
    roles: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
}

/// The known tokens, by hash.
#[derive(Default)]
pub struct Tokens {
    by_hash: HashMap<String, Principal>,
}

/// The SHA-256 of `token`, lowercase hex: what the tokens file holds.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random token: `mot_` and 43 base64url characters (256 bits from the OS's random
/// source).
pub fn generate() -> Result<String, crate::secrets::SecretError> {
    use base64::Engine;
    let bytes = crate::secrets::random::<32>()?;
    Ok(format!(
        "mot_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The tokens-file entry of `token` for `principal`.
pub fn entry(token: &str, principal: &Principal) -> String {
    let quoted = |items: &mut dyn Iterator<Item = String>| {
        items
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[tokens]]\nsha256 = \"{}\"\nprincipal = {:?}\nteams = [{}]\nroles = [{}]\nenvironments = [{}]\n",
        hash(token),
        principal.name,
        quoted(&mut principal.teams.iter().cloned()),
        quoted(&mut principal.roles.iter().map(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })),
        quoted(&mut principal.environments.iter().cloned()),
    )
}

/// Names the principals only: the hashes stay out of logs.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.by_hash.values().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        f.debug_struct("Tokens")
            .field("principals", &names)
            .finish()
    }
}

impl Tokens {
    /// The tokens of `config.tokens_file`, none without one.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        match &config.tokens_file {
            Some(path) => Self::load(path),
            None => Ok(Self::default()),
        }
    }

    /// Reads and checks the tokens file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("auth.tokens_file {}: cannot read", path.display()))?;
        Self::parse(&text).with_context(|| format!("auth.tokens_file {}", path.display()))
    }

    /// Parses a tokens file; every entry must name a known role and a 64-hex-digit hash.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut by_hash = HashMap::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}]");
            let sha = entry.sha256.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("{at}.sha256: must be 64 hex digits (the token's SHA-256)");
            }
            if entry.principal.trim().is_empty() {
                anyhow::bail!("{at}.principal: must not be empty");
            }
            let mut roles = BTreeSet::new();
            for (j, role) in entry.roles.iter().enumerate() {
                roles.insert(Role::parse(role).ok_or_else(|| {
                    anyhow::anyhow!("{at}.roles[{j}]: `{role}` is not viewer, deployer or admin")
                })?);
            }
            if roles.is_empty() {
                anyhow::bail!("{at}.roles: names no role");
            }
            let principal = Principal {
                name: entry.principal,
                teams: entry.teams,
                roles,
                environments: entry.environments.into_iter().collect(),
            };
            if by_hash.insert(sha, principal).is_some() {
                anyhow::bail!("{at}.sha256: the same token is listed twice");
            }
        }
        Ok(Self { by_hash })
    }

    /// Who `token` stands for.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        self.by_hash.get(&hash(token)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_made_for_a_token_authenticates_it() {
        let token = generate().unwrap();
        assert!(token.starts_with("mot_") && token.len() == 47, "{token}");
        let principal = Principal {
            name: "ci-checkout".into(),
            teams: vec!["checkout".into()],
            roles: [Role::Deployer].into(),
            environments: ["test".to_owned(), "production".to_owned()].into(),
        };
        let tokens = Tokens::parse(&entry(&token, &principal)).unwrap();
        assert_eq!(tokens.principal(&token), Some(principal));
        assert_eq!(tokens.principal(&generate().unwrap()), None);
        assert_eq!(
            hash("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn a_bad_entry_is_named() {
        let bad = "[[tokens]]\nsha256 = \"abc\"\nprincipal = \"x\"\nroles = [\"viewer\"]\n";
        assert!(Tokens::parse(bad)
            .unwrap_err()
            .to_string()
            .contains("tokens[0].sha256"));
        let bad = format!(
            "[[tokens]]\nsha256 = \"{}\"\nprincipal = \"x\"\nroles = [\"root\"]\n",
            hash("t")
        );
        assert!(Tokens::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("tokens[0].roles[0]"));
    }
}
