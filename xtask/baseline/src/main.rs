//! The least a server can do for `GET /projects/{id}` and `GET /projects?limit=20` on Keel's
//! own `projects` table: actix-web, sqlx, one query per read (two for the list), no
//! authentication, no scope, no middleware. `cargo xtask bench crud|auth` runs it next to Keel.
//!
//! Configuration: `DATABASE_URL`, `PORT`, `POOL_SIZE` (connections in all, default 10,
//! Keel's default), `WORKERS` (default one per CPU, as Keel), `POOL` (`per-worker`, the
//! default: each actix worker builds its own pool of `POOL_SIZE / WORKERS` connections on its
//! own runtime, the fastest a bare server gets; or `shared`: one pool built in `main`).
//!
//! `keel-bench-baseline hash THREADS SECONDS MEMORY_KIB ITERATIONS PARALLELISM` instead prints
//! how many argon2id hashes per second THREADS threads manage: the bound on sign-ins.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
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

/// Hashes with argon2id on `threads` threads for `seconds`; prints hashes per second.
fn hash_bound(args: &[String]) -> anyhow::Result<()> {
    let number = |i: usize, name: &str| -> anyhow::Result<u32> {
        args.get(i).and_then(|v| v.parse().ok()).with_context(|| {
            format!("{name} (hash THREADS SECONDS MEMORY_KIB ITERATIONS PARALLELISM)")
        })
    };
    let threads = number(0, "THREADS")?;
    let seconds = number(1, "SECONDS")?;
    let params = argon2::Params::new(
        number(2, "MEMORY_KIB")?,
        number(3, "ITERATIONS")?,
        number(4, "PARALLELISM")?,
        None,
    )
    .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let hashes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let hashes = Arc::clone(&hashes);
            let params = params.clone();
            std::thread::spawn(move || {
                let argon = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params.clone(),
                );
                let mut memory = vec![argon2::Block::default(); params.block_count()];
                let mut out = [0u8; 32];
                while Instant::now() < deadline {
                    if argon
                        .hash_password_into_with_memory(
                            b"plum-orbit-kettle-7",
                            b"sixteen byte salt",
                            &mut out,
                            &mut memory,
                        )
                        .is_ok()
                    {
                        hashes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?;
    }
    let rate = hashes.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    // The answer is the output: xtask reads it.
    #[allow(clippy::print_stdout)]
    {
        println!("{rate:.1}");
    }
    Ok(())
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hash") {
        return hash_bound(&args[1..]);
    }
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL (a PostgreSQL URL)")?;
    let options = PgConnectOptions::from_str(&url).context("DATABASE_URL")?;
    let workers = env_or(
        "WORKERS",
        std::thread::available_parallelism().map_or(2, usize::from),
    );
    let pool_size: u32 = env_or("POOL_SIZE", 10);
    let per_worker = std::env::var("POOL").map_or(true, |mode| mode != "shared");
    let shared = if per_worker {
        None
    } else {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .connect_with(options.clone())
            .await
            .context("connecting to PostgreSQL")?;
        Some(web::Data::new(pool))
    };
    let worker_pool_size = pool_size
        .div_ceil(u32::try_from(workers).unwrap_or(1))
        .max(1);
    let port: u16 = env_or("PORT", 18_090);
    HttpServer::new(move || {
        // Built on the worker's own runtime: its connections' wake-ups stay on this thread.
        let pool = shared.clone().unwrap_or_else(|| {
            web::Data::new(
                PgPoolOptions::new()
                    .max_connections(worker_pool_size)
                    .connect_lazy_with(options.clone()),
            )
        });
        App::new()
            .app_data(pool)
            .route("/projects", web::get().to(list))
            .route("/projects/{id}", web::get().to(get))
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?
    .run()
    .await?;
    Ok(())
}
