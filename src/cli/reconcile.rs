//! `roomsync reconcile`: drift repair now, for every live room or the ones named, with one
//! line per room and a summary.

use std::sync::Arc;

use super::failure::chain;
use crate::{
    callback::{Id, SdkAppId},
    config::Config,
    reconcile::{Mode, Reconciler},
    startup, telemetry,
    tencent::TencentClient,
};

pub(super) async fn reconcile(
    config: Config,
    app: Option<i64>,
    room: Option<&str>,
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let drift = config
        .drift_repair
        .clone()
        .ok_or("drift repair is not configured: set TENCENT_SECRET_KEY")?;
    let apps = match app {
        None => Vec::new(),
        Some(raw) => vec![SdkAppId::from_i64(raw).ok_or("--app must be a positive integer")?],
    };
    let room = room
        .map(Id::parse)
        .transpose()
        .map_err(|e| format!("--room {e}"))?;
    let pool = startup::database_pool(&config).map_err(chain)?;
    let client = TencentClient::new(&drift).map_err(chain)?;
    let metrics = Arc::new(telemetry::Metrics::new());
    let (writer, mut writer_tasks) = startup::command_writer(&config, &pool, metrics.clone())
        .await
        .map_err(chain)?;
    let reconciler = Reconciler::new(pool.clone(), writer, client, drift, metrics);
    if let Some(app) = apps.first().filter(|a| !reconciler.knows(**a)) {
        return Err(format!("app {} has no key in TENCENT_SECRET_KEY", app.get()).into());
    }
    let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
    let rooms = reconciler.rooms_to_check(&apps, room.as_ref()).await?;
    let (mut failed, mut unknown) = (0, 0);
    for (app, room) in &rooms {
        let label = format!("app {} room {:?}", app.get(), room.as_str());
        match reconciler.check_room(*app, room, mode).await {
            Ok(report) if report.unknown => {
                unknown += 1;
                println!("{label}: unknown room: {report}");
            }
            Ok(report) => println!("{label}: {report}"),
            Err(error) => {
                failed += 1;
                println!("{label}: not checked: {}", telemetry::error_chain(&error));
            }
        }
    }
    let stored = if dry_run {
        "dry run: nothing stored"
    } else {
        "corrections stored"
    };
    println!(
        "{} rooms checked, {failed} failed, {unknown} unknown ({stored})",
        rooms.len() - failed - unknown
    );
    drop(reconciler);
    while writer_tasks.join_next().await.is_some() {}
    pool.close().await;
    if failed > 0 {
        return Err(format!("{failed} of {} rooms could not be checked", rooms.len()).into());
    }
    // A room asked for by name that no app's view has is a typo, not a successful check
    // (with several apps, one that has it is enough).
    if let Some(room) = room.filter(|_| unknown > 0 && unknown == rooms.len()) {
        return Err(format!("room {:?} is unknown: not in the view", room.as_str()).into());
    }
    Ok(())
}
