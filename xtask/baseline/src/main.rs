//! The least a server can do for `GET /projects/{id}` and `GET /projects?limit=20` on Keel's
//! own `projects` table: actix-web, one sqlx pool, one query per read (two for the list),
//! no authentication, no scope, no middleware. `cargo xtask bench crud` runs it next to Keel.
//!
//! Configuration: `DATABASE_URL`, `PORT`, `POOL_SIZE` (default 10, Keel's default), `WORKERS`
//! (default one per CPU, as Keel).

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

macro_rules! columns {
    () => {
        "id, name, description, status, owner_id, version, created_by, updated_by, created_at, \
         updated_at"
    };
}

const GET_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM projects WHERE id = $1 AND deleted_at IS NULL"
);
const LIST_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM projects WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $1"
);

#[derive(Debug, Serialize)]
struct Project {
    id: Uuid,
    name: String,
    description: Option<String>,
    status: String,
    owner_id: Uuid,
    version: i64,
    created_by: Option<Uuid>,
    updated_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Project {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            status: row.try_get("status")?,
            owner_id: row.try_get("owner_id")?,
            version: row.try_get("version")?,
            created_by: row.try_get("created_by")?,
            updated_by: row.try_get("updated_by")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

async fn get(pool: web::Data<PgPool>, id: web::Path<Uuid>) -> HttpResponse {
    match sqlx::query(GET_SQL)
        .bind(id.into_inner())
        .fetch_optional(pool.get_ref())
        .await
        .and_then(|row| row.as_ref().map(Project::from_row).transpose())
    {
        Ok(Some(project)) => HttpResponse::Ok().json(project),
        Ok(None) => HttpResponse::NotFound().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<i64>,
}

async fn list(pool: web::Data<PgPool>, params: web::Query<ListParams>) -> HttpResponse {
    let limit = params.limit.unwrap_or(20).clamp(1, 100);
    let rows = sqlx::query(LIST_SQL).bind(limit).fetch_all(pool.get_ref());
    let total =
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM projects WHERE deleted_at IS NULL")
            .fetch_one(pool.get_ref());
    match tokio::try_join!(rows, total) {
        Ok((rows, total)) => match rows
            .iter()
            .map(Project::from_row)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(items) => HttpResponse::Ok().json(serde_json::json!({
                "items": items,
                "total": total,
                "limit": limit,
                "offset": 0,
                "next_cursor": null,
            })),
            Err(_) => HttpResponse::InternalServerError().finish(),
        },
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL (a PostgreSQL URL)")?;
    let pool = PgPoolOptions::new()
        .max_connections(env_or("POOL_SIZE", 10))
        .connect(&url)
        .await
        .context("connecting to PostgreSQL")?;
    let workers = env_or(
        "WORKERS",
        std::thread::available_parallelism().map_or(2, usize::from),
    );
    let port: u16 = env_or("PORT", 18_090);
    let pool = web::Data::new(pool);
    HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .route("/projects", web::get().to(list))
            .route("/projects/{id}", web::get().to(get))
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?
    .run()
    .await?;
    Ok(())
}
