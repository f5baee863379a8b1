//! List Reports: per stage and UTC day, 2xx calls (`call_count`), 4xx and
//! 5xx counts, average and p95 latency and integration latency (ms), and
//! the top 5 resources by 2xx calls over the range (at most 31 days).

use super::{api_of, AdminState, ApiError, Caller};
use axum::extract::{Path, RawQuery, State};
use axum::Json;

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/reports",
    operation_id = "reports_list",
    tag = "Reports (extension)",
    params(crate::admin::openapi::ReportQuery),
    responses((status = 200, description = "OK.", body = crate::telemetry::reports::ReportListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<crate::telemetry::reports::ReportListResponse>, ApiError> {
    let q = super::validate::ListQuery::parse(q.as_deref(), &["date"])?;
    let stage = q
        .get("stage_name")
        .ok_or_else(|| ApiError::field("stage_name", "is required"))?
        .to_string();
    let start = q
        .get("start_date")
        .ok_or_else(|| ApiError::field("start_date", "is required (YYYY-MM-DD)"))?
        .to_string();
    let end = q
        .get("end_date")
        .ok_or_else(|| ApiError::field("end_date", "is required (YYYY-MM-DD)"))?
        .to_string();
    let (from, to) = crate::telemetry::reports::parse_range(&start, &end).map_err(|e| {
        if e.starts_with("start_date") || e.starts_with("end_date") {
            ApiError::bad_request(e)
        } else {
            ApiError::field("end_date", e)
        }
    })?;
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    if !a.stages.contains_key(&stage) {
        return Err(ApiError::not_found(format!("stage {stage} not found")));
    }
    drop(st);
    // Other nodes' rows (a PostgreSQL store): a blocking read, off the
    // async workers.
    let stats = app.stats.clone();
    let (a, s) = (api_id.clone(), stage.clone());
    let extra = tokio::task::spawn_blocking(move || stats.others(&a, &s, from, to))
        .await
        .unwrap_or_default();
    Ok(Json(
        app.stats.report_with(&api_id, &stage, from, to, &extra),
    ))
}
