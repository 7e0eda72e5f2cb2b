//! Schema migrations: numbered CQL files (`migrations/NNNN_name.cql`) applied in order to the
//! configured keyspace, each recorded with its checksum in `schema_migrations`.
//!
//! Cassandra DDL is not transactional: a run that dies half-way through a file re-applies that
//! file next time. So every `CREATE` in a migration must say `IF NOT EXISTS` and every `DROP`
//! `IF EXISTS`; [`Migration::parse`] refuses files that do not. A file that was applied and later
//! edited is refused before anything runs: the schema it describes is no longer the one in the
//! database, and a new numbered file is the way to change it.

use std::collections::BTreeMap;
use std::path::Path;

use scylla::client::session::Session;
use sha2::{Digest, Sha256};

use crate::config::CassandraConfig;

/// The migrations compiled into this binary, from the repository's `migrations/` folder.
const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// One numbered CQL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// `NNNN` of the file name: the order of application and the record's key.
    pub version: i32,
    /// The file name, e.g. `0001_deployments.cql`.
    pub name: String,
    /// The statements, split on `;` outside quotes, comments removed.
    pub statements: Vec<String>,
    /// SHA-256 of the file's text (line endings normalised), hex.
    pub checksum: String,
}

/// Why migrations were not applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration file `{name}`: {problem}")]
    BadFile { name: String, problem: String },
    #[error("cannot read migrations from {dir}: {source}")]
    ReadDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {version:04} (`{name}`) was applied with checksum {applied} but the file now has {current}: it was edited after it was applied; restore it and put the change in a new numbered file")]
    Edited {
        version: i32,
        name: String,
        applied: String,
        current: String,
    },
    #[error("migration {version:04} (`{name}`) is recorded as applied but no such file exists here; is this binary older than the schema?")]
    Missing { version: i32, name: String },
    #[error("cassandra refused `{statement}` in `{name}`: {source}")]
    Statement {
        name: String,
        statement: String,
        #[source]
        source: Box<scylla::errors::ExecutionError>,
    },
    #[error("cassandra: {0}")]
    Cassandra(String),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Files applied by this run, in order.
    pub applied: Vec<String>,
    /// Files found already applied, with matching checksums.
    pub already_applied: Vec<String>,
}

impl Migration {
    /// Parses a file named `NNNN_name.cql` with content `text`.
    pub fn parse(name: &str, text: &str) -> Result<Self, MigrateError> {
        let bad = |problem: String| MigrateError::BadFile {
            name: name.to_owned(),
            problem,
        };
        let stem = name
            .strip_suffix(".cql")
            .ok_or_else(|| bad("name must end in `.cql`".into()))?;
        let (number, label) = stem
            .split_once('_')
            .ok_or_else(|| bad("name must be `NNNN_name.cql`".into()))?;
        if number.len() != 4 || !number.chars().all(|c| c.is_ascii_digit()) || label.is_empty() {
            return Err(bad(
                "name must be `NNNN_name.cql` with a four-digit number".into()
            ));
        }
        let version: i32 = number.parse().map_err(|_| bad("bad number".into()))?;
        let normalised = text.replace("\r\n", "\n");
        let statements = split_statements(&normalised);
        if statements.is_empty() {
            return Err(bad("holds no statement".into()));
        }
        for statement in &statements {
            let upper = statement.to_ascii_uppercase();
            if upper.starts_with("CREATE ") && !upper.contains(" IF NOT EXISTS ") {
                return Err(bad(format!(
                    "`{}` must say IF NOT EXISTS, so that a run interrupted half-way can be repeated",
                    first_line(statement)
                )));
            }
            if upper.starts_with("DROP ") && !upper.contains(" IF EXISTS ") {
                return Err(bad(format!(
                    "`{}` must say IF EXISTS, so that a run interrupted half-way can be repeated",
                    first_line(statement)
                )));
            }
        }
        let checksum = hex(&Sha256::digest(normalised.as_bytes()));
        Ok(Self {
            version,
            name: name.to_owned(),
            statements,
            checksum,
        })
    }

    /// The migrations compiled into this binary, in order.
    pub fn embedded() -> Result<Vec<Self>, MigrateError> {
        let mut all = EMBEDDED
            .iter()
            .map(|(name, text)| Self::parse(name, text))
            .collect::<Result<Vec<_>, _>>()?;
        sort_and_check(&mut all)?;
        Ok(all)
    }

    /// The `*.cql` files of `dir`, in order.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, MigrateError> {
        let read_err = |source| MigrateError::ReadDir {
            dir: dir.display().to_string(),
            source,
        };
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().is_some_and(|e| e == "cql") {
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).map_err(read_err)?;
                all.push(Self::parse(&name, &text)?);
            }
        }
        sort_and_check(&mut all)?;
        Ok(all)
    }
}

fn sort_and_check(all: &mut [Migration]) -> Result<(), MigrateError> {
    all.sort_by_key(|m| m.version);
    for pair in all.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(MigrateError::BadFile {
                name: pair[1].name.clone(),
                problem: format!("has the same number as `{}`", pair[0].name),
            });
        }
    }
    Ok(())
}

/// Creates the keyspace if needed, then applies every migration not yet recorded, in order.
///
/// Refuses, before changing anything, when an applied file was edited or is missing. Switches
/// `session` to the keyspace (migration files name tables without a keyspace).
pub async fn migrate(
    session: &Session,
    config: &CassandraConfig,
    migrations: &[Migration],
) -> Result<MigrateReport, MigrateError> {
    let ks = &config.keyspace;
    let cass = |e: &dyn std::fmt::Display| MigrateError::Cassandra(e.to_string());
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
                 {{'class': 'NetworkTopologyStrategy', '{}': {}}}",
                config.datacenter, config.replication_factor
            ),
            (),
        )
        .await
        .map_err(|e| cass(&e))?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (\
                 version int PRIMARY KEY, name text, checksum text, applied_at timestamp)"
            ),
            (),
        )
        .await
        .map_err(|e| cass(&e))?;
    session
        .await_schema_agreement()
        .await
        .map_err(|e| cass(&e))?;

    let rows = session
        .query_unpaged(
            format!("SELECT version, name, checksum FROM {ks}.schema_migrations"),
            (),
        )
        .await
        .map_err(|e| cass(&e))?
        .into_rows_result()
        .map_err(|e| cass(&e))?;
    let mut applied = BTreeMap::new();
    for row in rows.rows::<(i32, String, String)>().map_err(|e| cass(&e))? {
        let (version, name, checksum) = row.map_err(|e| cass(&e))?;
        applied.insert(version, (name, checksum));
    }

    let by_version: BTreeMap<i32, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    for (version, (name, checksum)) in &applied {
        match by_version.get(version) {
            None => {
                return Err(MigrateError::Missing {
                    version: *version,
                    name: name.clone(),
                })
            }
            Some(m) if &m.checksum != checksum => {
                return Err(MigrateError::Edited {
                    version: *version,
                    name: m.name.clone(),
                    applied: checksum.clone(),
                    current: m.checksum.clone(),
                })
            }
            Some(_) => {}
        }
    }

    let mut report = MigrateReport::default();
    // Prepared before `USE`: Cassandra warns about statements prepared under a session keyspace.
    let record = session
        .prepare(format!(
            "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_at) \
             VALUES (?, ?, ?, toTimestamp(now()))"
        ))
        .await
        .map_err(|e| cass(&e))?;
    if migrations.iter().any(|m| !applied.contains_key(&m.version)) {
        session
            .use_keyspace(ks, false)
            .await
            .map_err(|e| cass(&e))?;
    }
    for m in migrations {
        if applied.contains_key(&m.version) {
            report.already_applied.push(m.name.clone());
            continue;
        }
        for statement in &m.statements {
            session
                .query_unpaged(statement.as_str(), ())
                .await
                .map_err(|source| MigrateError::Statement {
                    name: m.name.clone(),
                    statement: first_line(statement).to_owned(),
                    source: Box::new(source),
                })?;
        }
        session
            .await_schema_agreement()
            .await
            .map_err(|e| cass(&e))?;
        session
            .execute_unpaged(&record, (m.version, &m.name, &m.checksum))
            .await
            .map_err(|e| cass(&e))?;
        tracing::info!(migration = %m.name, keyspace = %ks, "applied migration");
        report.applied.push(m.name.clone());
    }
    Ok(report)
}

/// Splits CQL text into statements on `;` outside single-quoted strings, dropping `--` and `//`
/// line comments and blank statements.
fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut in_quote = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_quote && (c == '-' || c == '/') && chars.peek() == Some(&c) {
                break;
            }
            if c == '\'' {
                in_quote = !in_quote;
            }
            if c == ';' && !in_quote {
                push_statement(&mut statements, &mut current);
            } else {
                current.push(c);
            }
        }
        current.push('\n');
    }
    push_statement(&mut statements, &mut current);
    statements
}

fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let statement = current.split_whitespace().collect::<Vec<_>>().join(" ");
    if !statement.is_empty() {
        statements.push(statement);
    }
    current.clear();
}

fn first_line(statement: &str) -> &str {
    let end = statement
        .char_indices()
        .nth(80)
        .map_or(statement.len(), |(i, _)| i);
    &statement[..end]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let m = Migration::parse(
            "0001_x.cql",
            "-- a comment; with a semicolon\nCREATE TABLE IF NOT EXISTS a (k text PRIMARY KEY) WITH comment = 'x;y';\n\n// another\nCREATE TABLE IF NOT EXISTS b (k int PRIMARY KEY);\n",
        )
        .unwrap();
        assert_eq!(
            m.statements,
            [
                "CREATE TABLE IF NOT EXISTS a (k text PRIMARY KEY) WITH comment = 'x;y'",
                "CREATE TABLE IF NOT EXISTS b (k int PRIMARY KEY)"
            ]
        );
        assert_eq!(m.version, 1);
    }

    #[test]
    fn create_without_if_not_exists_is_refused() {
        let err =
            Migration::parse("0002_t.cql", "CREATE TABLE t (k int PRIMARY KEY);").unwrap_err();
        assert!(err.to_string().contains("must say IF NOT EXISTS"), "{err}");
    }

    #[test]
    fn file_names_must_be_numbered() {
        assert!(Migration::parse(
            "init.cql",
            "CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY);"
        )
        .is_err());
        assert!(Migration::parse(
            "01_init.cql",
            "CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY);"
        )
        .is_err());
    }

    #[test]
    fn checksum_ignores_line_endings_but_not_content() {
        let a = Migration::parse(
            "0001_a.cql",
            "CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY);\n",
        )
        .unwrap();
        let b = Migration::parse(
            "0001_a.cql",
            "CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY);\r\n",
        )
        .unwrap();
        let c = Migration::parse(
            "0001_a.cql",
            "CREATE TABLE IF NOT EXISTS t (k bigint PRIMARY KEY);\n",
        )
        .unwrap();
        assert_eq!(a.checksum, b.checksum);
        assert_ne!(a.checksum, c.checksum);
    }

    #[test]
    fn embedded_migrations_parse_in_order() {
        let all = Migration::embedded().unwrap();
        assert!(!all.is_empty());
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
    }
}
