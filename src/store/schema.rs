//! Whether the schema is there: applied at start-up, by the drain once the database is back (it
//! may have been dropped and created again), and by `roomsync migrate`; one function for all
//! three ([`ensure_schema`]). Its verdict is [`super::Health`]'s to act on.

use sqlx::{
    migrate::{Migrate, MigrateError},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{MIGRATOR, StoreError};

/// Why the database could not be made ready for writes.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("the database is unreachable")]
    Unreachable(#[source] StoreError),
    #[error("could not apply the migrations")]
    Migrate(#[source] MigrateError),
    /// `RUN_MIGRATIONS=false` and the migrations are not all applied.
    #[error("the schema is not applied (RUN_MIGRATIONS is false): run `roomsync migrate`")]
    SchemaBehind,
}

/// Makes sure the schema is applied: with `run_migrations`, applies what is pending; without,
/// checks that every migration this binary embeds is recorded. On a connection of its own,
/// (the writers' lock timeout is theirs alone: a migration may wait for a lock and take long).
/// Start-up, the drain and `roomsync migrate` all come here.
pub async fn ensure_schema(
    options: &PgConnectOptions,
    run_migrations: bool,
) -> Result<(), ReachError> {
    let unreachable = |e: sqlx::Error| ReachError::Unreachable(StoreError::from(e));
    // A pool of one, of its own: the migrator takes a pool (its bounds on a bare connection
    // keep the callers' futures from being `Send`).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .map_err(unreachable)?;
    let result = async {
        if run_migrations {
            MIGRATOR.run(&pool).await.map_err(ReachError::Migrate)?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        let mut conn = pool.acquire().await.map_err(unreachable)?;
        let applied = match conn.list_applied_migrations(&MIGRATOR.table_name).await {
            Ok(applied) => applied,
            Err(MigrateError::Execute(e)) => match StoreError::from(e) {
                StoreError::SchemaMissing(_) => return Err(ReachError::SchemaBehind),
                other => return Err(ReachError::Unreachable(other)),
            },
            Err(other) => return Err(ReachError::Migrate(other)),
        };
        let behind = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .any(|m| !applied.iter().any(|a| a.version == m.version));
        if behind {
            return Err(ReachError::SchemaBehind);
        }
        Ok(())
    }
    .await;
    pool.close().await;
    result
}
