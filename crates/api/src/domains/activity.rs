//! `/api/v1/activity`: the activity log (everyone sees their own; `activity:read` sees all).

use actix_web::{HttpResponse, web};
use keel_activity::{Activity, LIST_SPEC};

use crate::error::ApiError;
use crate::extract::{Caller, ListParams};

/// Registers the activity route (read-only: the log has no update or delete).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/activity").route(web::get().to(list)));
}

async fn list(
    Caller(caller): Caller,
    params: ListParams,
    activity: web::Data<Activity>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&LIST_SPEC)?;
    let page = activity.list(&caller, query).await?;
    Ok(HttpResponse::Ok().json(page))
}
