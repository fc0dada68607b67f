//! The critical judge's model panel: each configured model alias is asked, through the model
//! gateway's routes and with the tenant's redaction, for a JSON verdict on the case.

use airlock_policy::judge::{Case, Judgement};
use airlock_store::TenantScope;

use crate::flow_guard::JudgeSettings;
use crate::state::AppState;

/// Asks every model of the panel at once; each answer is a verdict or why there is none.
pub(crate) async fn ask_panel(
    _state: &AppState,
    _scope: &TenantScope,
    _case: &Case<'_>,
    settings: &JudgeSettings,
) -> Vec<(String, Result<Judgement, String>)> {
    settings.models.iter().map(|m| (m.clone(), Err("model judges are not wired yet".to_owned()))).collect()
}
