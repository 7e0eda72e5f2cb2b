//! `mot migrate` against the running Cassandra, each test in a keyspace of its own.

mod common;

use std::process::Command;

use mot::config::Config;
use mot::store::{self, migrate::Migration};

fn config_for(keyspace: &str) -> Config {
    let mut config = common::dev_config();
    config.cassandra.keyspace = keyspace.to_owned();
    config
}

async fn tables_of(session: &scylla::client::session::Session, keyspace: &str) -> Vec<String> {
    let rows = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut names: Vec<String> = rows
        .rows::<(String,)>()
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    names.sort();
    names
}

async fn applied_rows(
    session: &scylla::client::session::Session,
    keyspace: &str,
) -> Vec<(i32, String, String, scylla::value::CqlTimestamp)> {
    let rows = session
        .query_unpaged(
            format!("SELECT version, name, checksum, applied_at FROM {keyspace}.schema_migrations"),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut out: Vec<_> = rows.rows().unwrap().map(|r| r.unwrap()).collect();
    out.sort_by_key(|r: &(i32, String, String, scylla::value::CqlTimestamp)| r.0);
    out
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_keyspace_and_a_second_run_changes_nothing() {
    let keyspace = common::unique("mot_migrate");
    let config = config_for(&keyspace);
    let migrations = Migration::embedded().unwrap();
    let session = store::connect(&config.cassandra).await.unwrap();

    let first = store::migrate::migrate(&session, &config.cassandra, &migrations)
        .await
        .unwrap();
    assert_eq!(first.applied.len(), migrations.len());
    assert!(first.already_applied.is_empty());
    let tables = tables_of(&session, &keyspace).await;
    for table in [
        "deployments",
        "deployments_by_app",
        "idempotency_keys",
        "schema_migrations",
    ] {
        assert!(
            tables.contains(&table.to_owned()),
            "{table} missing from {tables:?}"
        );
    }
    let recorded = applied_rows(&session, &keyspace).await;
    assert_eq!(recorded.len(), migrations.len());
    for (row, m) in recorded.iter().zip(&migrations) {
        assert_eq!((row.0, &row.1, &row.2), (m.version, &m.name, &m.checksum));
    }

    let second = store::migrate::migrate(&session, &config.cassandra, &migrations)
        .await
        .unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied.len(), migrations.len());
    assert_eq!(
        applied_rows(&session, &keyspace).await,
        recorded,
        "a second run rewrites nothing"
    );
    assert_eq!(tables_of(&session, &keyspace).await, tables);

    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused_by_the_cli() {
    let keyspace = common::unique("mot_migrate");
    let config_file =
        common::dev_toml_with(&[("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\""))]);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::repo_path("migrations")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let count = std::fs::read_dir(dir.path()).unwrap().count();
    let run = || {
        Command::new(common::mot_bin())
            .args(["migrate", "--config"])
            .arg(config_file.path())
            .arg("--migrations")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains(&format!(
        "applied {count} migration(s) (0001_deployments.cql, "
    )));
    let again = run();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout)
        .contains(&format!("applied 0 migration(s), {count} already applied")));

    let file = dir.path().join("0001_deployments.cql");
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("trace_id text,", "trace_id text, owner text,");
    std::fs::write(&file, edited).unwrap();
    let refused = run();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("migration 0001 (`0001_deployments.cql`)"),
        "{stderr}"
    );
    assert!(stderr.contains("edited after it was applied"), "{stderr}");

    let config = config_for(&keyspace);
    let session = store::connect(&config.cassandra).await.unwrap();
    let owner_columns = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = 'deployments' AND column_name = 'owner'",
            (&keyspace,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num();
    assert_eq!(owner_columns, 0, "the refused run changed nothing");
    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}
