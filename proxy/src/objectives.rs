//! Recovery objectives judged against what was measured: the one verdict that incidents
//! (real failovers) and drills (rehearsed ones) both report. A leaf: it needs only the
//! config's [`Objectives`].

use serde::{Deserialize, Serialize};
use sitesteer_config::Objectives;

/// One objective checked against what was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ObjectiveResult {
    /// `shift_time`, `failed_requests` or `availability`.
    pub name: String,
    /// The target, as configured.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether the target was met.
    pub met: bool,
}

/// Checks `objectives` against a failover's figures: the shift time in ms, the requests
/// that failed, and the availability (0 to 1) over the last day.
pub(crate) fn judge(
    objectives: &Objectives,
    shift_ms: u64,
    failed: u64,
    availability: f64,
) -> Vec<ObjectiveResult> {
    let shift_target = objectives.shift_time.as_millis() as u64;
    vec![
        ObjectiveResult {
            name: "shift_time".into(),
            target: format!("{shift_target}ms"),
            measured: format!("{shift_ms}ms"),
            met: shift_ms <= shift_target,
        },
        ObjectiveResult {
            name: "failed_requests".into(),
            target: objectives.failed_requests.to_string(),
            measured: failed.to_string(),
            met: failed <= objectives.failed_requests,
        },
        ObjectiveResult {
            name: "availability".into(),
            target: format!("{:.3}%", objectives.availability * 100.0),
            measured: format!("{:.3}%", availability * 100.0),
            met: availability >= objectives.availability,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_objective_is_met_or_not_on_its_own() {
        let o = Objectives::default();
        let target = o.shift_time.as_millis() as u64;
        let verdicts = judge(&o, target + 1, 0, 1.0);
        let met: Vec<(&str, bool)> = verdicts.iter().map(|v| (v.name.as_str(), v.met)).collect();
        assert_eq!(
            met,
            [
                ("shift_time", false),
                ("failed_requests", true),
                ("availability", true)
            ]
        );
    }
}
