//! `roomsync rejected reapply` (docs/operations.md#reapplying-refused-callbacks): parses
//! refused callbacks again with today's parser and bounds. One that parses now goes through
//! the write path, exactly once: in one transaction with its `rejected_callbacks` row locked,
//! so two operators at once, or a second run, add nothing; its `EventTime` places it in the
//! history as any late callback. One still refused keeps its body and gets today's code and
//! reason. Refusals from an app this service does not serve are never reapplied.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    callback::{CallbackQuery, SdkAppId, parse_body},
    codes,
    store::{Outcome, Rules, apply_batch},
};

/// Which rows to look at.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub app: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub code: Option<i32>,
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows that parse now and went into the history (or would).
    pub reapplied: u64,
    /// Rows that parse now and were already in the history (an identical callback).
    pub duplicate: u64,
    /// Rows that still do not parse (with today's code and reason recorded).
    pub still_refused: u64,
    /// Rows of an app this service does not serve: never reapplied.
    pub not_ours: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reapplied {}, duplicate {}, still refused {}, not ours {}",
            self.reapplied, self.duplicate, self.still_refused, self.not_ours
        )
    }
}

/// Rows read per page.
const PAGE: i64 = 100;

/// Parses every matching row again; see the module's documentation.
pub async fn reapply(
    pool: &PgPool,
    apps: &[SdkAppId],
    rules: Rules,
    max_future: Duration,
    filter: &Filter,
    dry_run: bool,
) -> Result<Report, sqlx::Error> {
    let codes: Vec<i32> = codes::PAST_APP_CHECKS.iter().map(|c| *c as i32).collect();
    let mut report = Report::default();
    let mut after = 0_i64;
    loop {
        let ids = sqlx::query_scalar!(
            r#"SELECT id FROM rejected_callbacks
               WHERE id > $1 AND reapplied_at IS NULL AND error_code = ANY($2::int4[])
                 AND ($3::int8 IS NULL OR sdk_app_id = $3)
                 AND ($4::timestamptz IS NULL OR received_at >= $4)
                 AND ($5::timestamptz IS NULL OR received_at < $5)
                 AND ($6::int4 IS NULL OR error_code = $6)
               ORDER BY id LIMIT $7"#,
            after,
            &codes,
            filter.app,
            filter.since,
            filter.until,
            filter.code,
            PAGE,
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = ids.last() else {
            return Ok(report);
        };
        after = *last;
        for id in ids {
            one(pool, id, apps, rules, max_future, dry_run, &mut report).await?;
        }
    }
}

/// The history row an identical callback made, if any (by the history's dedup key).
async fn stored_as(
    conn: &mut sqlx::PgConnection,
    callback: &crate::callback::Callback,
) -> Result<Option<i64>, sqlx::Error> {
    let room = callback.room_id.as_ref().map(|r| r.as_str());
    sqlx::query_scalar!(
        r#"SELECT id FROM room_events
           WHERE sdk_app_id = $1 AND room_id IS NOT DISTINCT FROM $2 AND dedup_key = $3"#,
        callback.sdk_app_id.get(),
        room,
        &callback.dedup_key()[..],
    )
    .fetch_optional(conn)
    .await
}

async fn one(
    pool: &PgPool,
    id: i64,
    apps: &[SdkAppId],
    rules: Rules,
    max_future: Duration,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Locked: an operator running the same command at once skips it (and finds it done).
    let Some(row) = sqlx::query!(
        r#"SELECT sdk_app_id, query, received_at, body_size,
                  coalesce(body_bytes, convert_to(body, 'UTF8')) AS "body!"
           FROM rejected_callbacks
           WHERE id = $1 AND reapplied_at IS NULL
           FOR UPDATE SKIP LOCKED"#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    let Some(app) = row
        .sdk_app_id
        .and_then(SdkAppId::from_i64)
        .filter(|app| apps.contains(app))
    else {
        report.not_ours += 1;
        return Ok(());
    };
    let cut = row
        .body_size
        .is_some_and(|size| i64::from(size) > row.body.len() as i64);
    let parsed = if cut {
        Err((
            codes::OUT_OF_BOUNDS,
            format!(
                "only the first {} bytes of the body were kept (REJECTED_BODY_MAX_BYTES): it cannot be parsed again",
                row.body.len()
            ),
        ))
    } else {
        let query = CallbackQuery::parse(&row.query);
        parse_body(&row.body, &query, app, row.received_at, Some(max_future))
            .map_err(|rejection| (rejection.code(), rejection.info))
    };
    match parsed {
        Err((code, info)) => {
            report.still_refused += 1;
            if !dry_run {
                sqlx::query!(
                    r#"UPDATE rejected_callbacks
                       SET reapply_checked_at = now(), reapply_outcome = 'refused',
                           reapply_code = $2, reapply_info = $3
                       WHERE id = $1"#,
                    id,
                    code as i32,
                    info,
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(callback) => {
            let known = stored_as(&mut tx, &callback).await?;
            if dry_run {
                if known.is_some() {
                    report.duplicate += 1;
                } else {
                    report.reapplied += 1;
                }
                return Ok(());
            }
            let (event_id, outcome) = match known {
                Some(id) => (Some(id), "duplicate"),
                None => match apply_batch(&mut tx, &[&callback], None, rules).await?[..] {
                    [Outcome::Stored { id }] => (Some(id), "reapplied"),
                    // Stored meanwhile by a callback that arrived again.
                    _ => (None, "duplicate"),
                },
            };
            let event_id = match event_id {
                Some(id) => Some(id),
                None => stored_as(&mut tx, &callback).await?,
            };
            // After the write path's last statement: the feed's head stays held for this one
            // statement more, which an operator's command may afford.
            // Counted in ingest_daily as reapplied (its history row counted as accepted).
            sqlx::query!(
                r#"WITH marked AS (
                       UPDATE rejected_callbacks
                       SET reapplied_at = now(), reapply_outcome = $3,
                           reapply_checked_at = now(), reapply_code = NULL, reapply_info = NULL,
                           reapplied_event_id = $2
                       WHERE id = $1
                       RETURNING sdk_app_id
                   )
                   SELECT ingest_counted(ARRAY[sdk_app_id], ARRAY[$4::text], NULL, NULL, NULL,
                                         ARRAY[1::int8], NULL)
                   FROM marked WHERE $3 = 'reapplied'"#,
                id,
                event_id,
                outcome,
                callback.command.as_str(),
            )
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            if outcome == "reapplied" {
                report.reapplied += 1;
            } else {
                report.duplicate += 1;
            }
        }
    }
    Ok(())
}
