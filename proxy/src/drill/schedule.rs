//! `[[drill]]` schedules: sitesteer runs its own drills at cron times, against its own admin
//! API, and keeps the results in the incidents list (and so sends them to the webhooks).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitesteer_config::Drill;

use super::{run, DrillPlan};

/// Runs `drills` forever, each at its schedule's times.
pub(crate) fn start(
    drills: &[Drill],
    admin: std::net::SocketAddr,
    token: crate::secrets::AdminToken,
) {
    for drill in drills.iter().cloned() {
        let token = token.clone();
        tokio::spawn(async move {
            loop {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let Some(next) = drill.schedule.next_after(now) else {
                    tracing::warn!(site = %drill.site, schedule = drill.schedule.as_str(), "drill schedule never fires");
                    return;
                };
                tokio::time::sleep(Duration::from_secs(next.saturating_sub(now))).await;
                let plan = DrillPlan {
                    admin: format!("http://{admin}"),
                    token: token.current().map(|t| t.to_string()),
                    site: drill.site.clone(),
                    mode: drill.mode,
                    duration: drill.duration,
                    rate: drill.rate,
                    record: true,
                };
                match run(&plan).await {
                    Ok(r) => {
                        tracing::info!(site = %r.site, met = r.met, shift_ms = ?r.shift_ms, failed = r.failed, "scheduled drill finished")
                    }
                    Err(e) => {
                        tracing::warn!(site = %drill.site, error = %e.1, "scheduled drill could not run")
                    }
                }
            }
        });
    }
}
