//! Who is calling and what they may do: principals authenticated by a static token (bots, CI) or
//! by a JWT from the company's identity provider, their roles, teams and environments, and the
//! rules that decide whether a call is allowed.
//!
//! - [`tokens`]: the static tokens file (each token's SHA-256, never the token);
//! - [`jwt`]: OIDC access tokens checked against the provider's keys (JWKS, cached, refreshed);
//! - [`limits`]: the per-principal rate limit on mutating calls.
//!
//! The rules (see [`Principal`]): a `viewer` reads, a `deployer` changes the apps of its teams in
//! its environments, an `admin` does everything. A principal whose teams include `*` sees every
//! app; one whose environments include `*` reaches every environment.

pub mod jwt;
pub mod limits;
pub mod tokens;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::AuthConfig;
use crate::topics::names::RegionName;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Deploys, switches traffic, rolls back and removes the apps of its teams, in its
    /// environments.
    Deployer,
    /// Everything, including who owns an app and the audit log.
    Admin,
}

impl Role {
    /// `viewer`, `deployer` or `admin`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "viewer" => Some(Self::Viewer),
            "deployer" => Some(Self::Deployer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// "Every team" or "every environment" in a principal's lists.
pub const ALL: &str = "*";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Its name: a static token's `principal`, a JWT's subject claim.
    pub name: String,
    /// The teams it acts for; the first is the one a new app is given to.
    pub teams: Vec<String>,
    pub roles: BTreeSet<Role>,
    /// The environments (`test`, `production`, ...) whose regions it may change.
    pub environments: BTreeSet<String>,
}

/// Why a call is not allowed: a sentence for the caller, and the field it is about, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub field: Option<String>,
}

impl Refusal {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            field: None,
        }
    }
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether it may read at all (every role reads).
    pub fn reads(&self) -> bool {
        !self.roles.is_empty()
    }

    /// Whether it sees the apps of every team.
    pub fn sees_all(&self) -> bool {
        self.is_admin() || self.teams.iter().any(|t| t == ALL)
    }

    /// Whether it acts for one of `owners`.
    fn in_teams(&self, owners: &BTreeSet<String>) -> bool {
        self.teams.iter().any(|t| t == ALL || owners.contains(t))
    }

    /// Whether it may read the app owned by `owners` (`None`: an app nobody owns yet, which
    /// every reader sees).
    pub fn may_read(&self, owners: Option<&BTreeSet<String>>) -> bool {
        self.reads() && (self.sees_all() || owners.is_none_or(|o| self.in_teams(o)))
    }

    /// Whether it may change an app owned by `owners` in `regions` (the field of each region is
    /// named by `field(i)`); `claims` when the call gives an unowned app to the caller's team (a
    /// deployment does, the other calls do not).
    pub fn may_change(
        &self,
        app: &str,
        owners: Option<&BTreeSet<String>>,
        claims: bool,
        regions: &[RegionName],
        field: impl Fn(usize) -> String,
    ) -> Result<(), Refusal> {
        if self.is_admin() {
            return Ok(());
        }
        if !self.roles.contains(&Role::Deployer) {
            return Err(Refusal::new(format!(
                "{} may only read: changing an app needs the deployer or admin role",
                self.name
            )));
        }
        match owners {
            Some(owners) if !self.in_teams(owners) => {
                return Err(Refusal {
                    reason: format!(
                        "app {app} belongs to {}, not to a team of {} ({})",
                        list(owners),
                        self.name,
                        list(&self.teams)
                    ),
                    field: Some("app".into()),
                })
            }
            Some(_) => {}
            None if claims && self.teams.iter().any(|t| t != ALL) => {}
            None if claims => {
                return Err(Refusal::new(format!(
                    "{} belongs to no team that could own the new app {app}",
                    self.name
                )))
            }
            None => {
                return Err(Refusal {
                    reason: format!(
                        "app {app} has no owner yet; an admin gives it one (PUT /apps/{app}/owners)"
                    ),
                    field: Some("app".into()),
                })
            }
        }
        for (i, region) in regions.iter().enumerate() {
            let environment = region.environment();
            if !self.reaches(environment.as_str()) {
                return Err(Refusal {
                    reason: format!(
                        "{} may not change the {} environment (region {region}); it may change {}",
                        self.name,
                        environment.as_str(),
                        list(&self.environments)
                    ),
                    field: Some(field(i)),
                });
            }
        }
        Ok(())
    }

    /// Whether it sees an app's plain `env` values: an admin, or a member of a team owning it
    /// (a viewer of every team reads the rest, not those).
    pub fn sees_env(&self, owners: Option<&BTreeSet<String>>) -> bool {
        self.is_admin() || owners.is_some_and(|o| self.teams.iter().any(|t| o.contains(t)))
    }

    /// Whether it may change regions of `environment`.
    pub fn reaches(&self, environment: &str) -> bool {
        self.is_admin()
            || self.environments.contains(ALL)
            || self.environments.contains(environment)
    }

    /// The team a new app it deploys is given to.
    pub fn home_team(&self) -> Option<&str> {
        self.teams.iter().map(String::as_str).find(|t| *t != ALL)
    }
}

fn list<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let items: Vec<&str> = items.into_iter().map(String::as_str).collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Why credentials were refused (answered `401`; the detail is for the caller, never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error("unknown token")]
    UnknownToken,
    #[error("the JWT was refused: {0}")]
    Jwt(String),
}

/// Checks credentials: static tokens first (a token that looks like a JWT goes to the JWT
/// verifier), then the JWT verifier when one is configured.
pub struct Authenticator {
    tokens: std::sync::RwLock<tokens::Tokens>,
    jwt: Option<jwt::Verifier>,
    /// The rate limit on mutating calls.
    pub limits: limits::RateLimiter,
}

impl Authenticator {
    /// Reads the tokens file and the JWT settings of `config`.
    pub fn from_config(
        config: &AuthConfig,
        tls: &crate::config::TlsConfig,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            tokens: std::sync::RwLock::new(tokens::Tokens::from_config(config)?),
            jwt: config
                .jwt
                .as_ref()
                .map(|jwt| jwt::Verifier::new(jwt, tls))
                .transpose()?,
            limits: limits::RateLimiter::new(config.mutations_per_minute, config.mutation_burst),
        })
    }

    /// Re-reads the tokens file (token rotation: add the new token's entry, reload, hand it out,
    /// remove the old one, reload) and the JWKS file. On error, keeps what it had.
    pub fn reload(&self, config: &AuthConfig) -> anyhow::Result<()> {
        let fresh = tokens::Tokens::from_config(config)?;
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.limits
            .set_rate(config.mutations_per_minute, config.mutation_burst);
        if let Some(jwt) = &self.jwt {
            jwt.reload_file()?;
        }
        Ok(())
    }

    /// The principal `authorization` (the header's value) stands for.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.contains(' '))
            .ok_or(AuthError::Malformed)?;
        let known = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .principal(token);
        if let Some(principal) = known {
            return Ok(principal);
        }
        match &self.jwt {
            Some(verifier) if jwt::looks_like_jwt(token) => verifier.verify(token).await,
            _ => Err(AuthError::UnknownToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role], teams: &[&str], environments: &[&str]) -> Principal {
        Principal {
            name: "p".into(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().copied().collect(),
            environments: environments.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn owners(teams: &[&str]) -> BTreeSet<String> {
        teams.iter().map(|s| s.to_string()).collect()
    }

    fn regions(names: &[&str]) -> Vec<RegionName> {
        names
            .iter()
            .map(|n| RegionName::parse(n).unwrap())
            .collect()
    }

    fn field(i: usize) -> String {
        format!("targets[{i}].region")
    }

    #[test]
    fn deployers_change_their_teams_apps_in_their_environments() {
        let p = principal(&[Role::Deployer], &["checkout"], &["test"]);
        let test = regions(&["test-us-east-1"]);
        let mixed = regions(&["test-us-east-1", "production-us-west-2"]);
        assert_eq!(
            p.may_change("a", Some(&owners(&["checkout"])), false, &test, field),
            Ok(())
        );
        let refused = p
            .may_change("a", Some(&owners(&["checkout"])), false, &mixed, field)
            .unwrap_err();
        assert_eq!(refused.field.as_deref(), Some("targets[1].region"));
        let refused = p
            .may_change("a", Some(&owners(&["payments"])), false, &test, field)
            .unwrap_err();
        assert_eq!(refused.field.as_deref(), Some("app"));
        // A deployment claims an unowned app; other calls do not.
        assert_eq!(p.may_change("a", None, true, &test, field), Ok(()));
        assert!(p.may_change("a", None, false, &test, field).is_err());
    }

    #[test]
    fn viewers_read_and_admins_do_everything() {
        let viewer = principal(&[Role::Viewer], &["checkout"], &[ALL]);
        let all = regions(&["production-us-west-2"]);
        assert!(viewer
            .may_change("a", Some(&owners(&["checkout"])), false, &all, field)
            .is_err());
        assert!(viewer.may_read(Some(&owners(&["checkout"]))));
        assert!(!viewer.may_read(Some(&owners(&["payments"]))));
        assert!(viewer.may_read(None));
        let admin = principal(&[Role::Admin], &[], &[]);
        assert!(admin.may_read(Some(&owners(&["payments"]))));
        assert_eq!(admin.may_change("a", None, false, &all, field), Ok(()));
        let everyone = principal(&[Role::Viewer], &[ALL], &[]);
        assert!(everyone.may_read(Some(&owners(&["payments"]))));
        assert!(!principal(&[], &[ALL], &[]).may_read(None));
    }
}
