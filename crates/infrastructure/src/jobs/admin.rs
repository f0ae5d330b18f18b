//! What the job admin reads and changes: job records from apalis' tables and the outbox,
//! queue depths, retry, delete and purge.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use keel_jobs::policy::cursor_values;
use keel_jobs::{JobRecord, JobRepository, JobState};
use keel_kernel::jobs::{JobId, Queue, RetryPolicy};
use keel_kernel::query::{Direction, Filter, FilterOp, Position, Value};
use keel_kernel::{ListQuery, Page, RepoError, UserId};
// Dynamic SQL here is assembled from fixed fragments and integers; every value is bound.
use sqlx::Row;

use super::outbox::{OutboxRow, outbox_row};
use super::*;

/// A checked job list request, in the terms of the two tables it reads.
#[derive(Debug, Default)]
pub(super) struct Selection {
    /// Any of these states (`None`: all; empty: none, as when two filters exclude each other).
    states: Option<Vec<JobState>>,
    /// Any of these queues.
    queues: Option<Vec<String>>,
    /// Any of these kinds.
    kinds: Option<Vec<String>>,
    /// Newest first.
    descending: bool,
    /// Only ids after this task id, in the list's order (a cursor).
    after: Option<String>,
}

/// Narrows `current` to `values`: filters on one field all hold, like every other list.
fn narrow<T: PartialEq>(current: &mut Option<Vec<T>>, values: Vec<T>) {
    *current = Some(match current.take() {
        Some(mut kept) => {
            kept.retain(|v| values.contains(v));
            kept
        }
        None => values,
    });
}

fn texts(op: &FilterOp) -> Vec<String> {
    let values = match op {
        FilterOp::Eq(value) => std::slice::from_ref(value),
        FilterOp::In(values) => values.as_slice(),
        FilterOp::Gte(_) | FilterOp::Lte(_) => &[],
    };
    values
        .iter()
        .filter_map(|value| match value {
            Value::Text(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

impl Selection {
    /// `query`, already checked against `keel_jobs::LIST_SPEC`.
    fn of(query: &ListQuery) -> Self {
        let mut selection = Self {
            descending: query
                .sort
                .first()
                .is_some_and(|key| key.direction == Direction::Desc),
            ..Self::default()
        };
        for Filter { field, op } in &query.filters {
            let values = texts(op);
            match *field {
                "state" => narrow(
                    &mut selection.states,
                    values.iter().filter_map(|v| JobState::parse(v)).collect(),
                ),
                "queue" => narrow(&mut selection.queues, values),
                "kind" => narrow(&mut selection.kinds, values),
                _ => {}
            }
        }
        if let Position::After(cursor) = &query.position
            && let Some(Value::Uuid(id)) = cursor.values.last()
        {
            selection.after = Some(task_id(JobId::from_uuid(*id)));
        }
        selection
    }

    fn order(&self) -> &'static str {
        if self.descending { "DESC" } else { "ASC" }
    }
}

/// One apalis task as Keel reads it back, from either storage.
pub(super) struct TaskRow {
    pub(super) id: String,
    pub(super) queue: String,
    pub(super) status: String,
    pub(super) attempts: i64,
    pub(super) max_attempts: i64,
    pub(super) run_at: Option<i64>,
    pub(super) done_at: Option<i64>,
    pub(super) last_result: Option<String>,
    pub(super) metadata: HashMap<String, String>,
}

const SQLITE_FINISHED: &str =
    "(status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))";

impl JobStore {
    /// Jobs waiting per queue (pending or retrying, in the queue or still in the outbox).
    pub async fn queued_counts(&self) -> Result<Vec<(Queue, i64)>, RepoError> {
        let (queue_sql, outbox_sql) = match &self.pool {
            Pool::Sqlite(_) => (
                "SELECT job_type, COUNT(*) FROM Jobs WHERE status IN ('Pending', 'Queued') \
                 OR (status = 'Failed' AND attempts < max_attempts) GROUP BY job_type",
                "SELECT queue, COUNT(*) FROM job_outbox GROUP BY queue",
            ),
            Pool::Postgres(_) => (
                "SELECT job_type, COUNT(*) FROM apalis.jobs WHERE status IN ('Pending', 'Queued') \
                 OR (status = 'Failed' AND attempts < max_attempts) GROUP BY job_type",
                "SELECT queue, COUNT(*) FROM job_outbox GROUP BY queue",
            ),
        };
        let mut counts: HashMap<Queue, i64> = Queue::ALL.into_iter().map(|q| (q, 0)).collect();
        let sqls = if let Some(redis) = &self.redis {
            for (queue, count) in redis.queued_counts().await? {
                *counts.entry(queue).or_default() += count;
            }
            vec![outbox_sql]
        } else {
            vec![queue_sql, outbox_sql]
        };
        for sql in sqls {
            let rows: Vec<(String, i64)> = match &self.pool {
                Pool::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
                Pool::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            }
            .map_err(sqlx_err)?;
            for (name, count) in rows {
                if let Some(queue) = Queue::parse(&name) {
                    *counts.entry(queue).or_default() += count;
                }
            }
        }
        Ok(Queue::ALL.into_iter().map(|q| (q, counts[&q])).collect())
    }

    /// Per queue, how long (seconds) the oldest job that could run has been waiting: in the
    /// queue since its `run_at`, or in the outbox since it was committed. Queues with nothing
    /// waiting report 0.
    pub async fn oldest_waiting(&self) -> Result<Vec<(Queue, i64)>, RepoError> {
        let now = Utc::now();
        let queue_rows: Vec<(String, i64)> = match (&self.pool, &self.redis) {
            (_, Some(redis)) => Ok(redis
                .oldest_due()
                .await?
                .into_iter()
                .filter_map(|(queue, since)| Some((queue.as_str().to_owned(), since?)))
                .collect()),
            (Pool::Sqlite(pool), None) => {
                sqlx::query_as(
                    "SELECT job_type, MIN(run_at) FROM Jobs \
                     WHERE status IN ('Pending', 'Queued') AND run_at <= ? GROUP BY job_type",
                )
                .bind(now.timestamp())
                .fetch_all(pool)
                .await
            }
            (Pool::Postgres(pool), None) => {
                sqlx::query_as(
                    "SELECT job_type, EXTRACT(EPOCH FROM MIN(run_at))::bigint FROM apalis.jobs \
                     WHERE status IN ('Pending', 'Queued') AND run_at <= now() GROUP BY job_type",
                )
                .fetch_all(pool)
                .await
            }
        }
        .map_err(sqlx_err)?;
        let outbox_sql = "SELECT queue, MIN(created_at) FROM job_outbox GROUP BY queue";
        let outbox_rows: Vec<(String, i64)> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_as(outbox_sql).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(outbox_sql).fetch_all(pool).await,
        }
        .map_err(sqlx_err)?;
        let mut ages: HashMap<Queue, i64> = Queue::ALL.into_iter().map(|q| (q, 0)).collect();
        let waiting = queue_rows
            .into_iter()
            .map(|(name, since)| (name, now.timestamp() - since))
            .chain(
                outbox_rows
                    .into_iter()
                    .map(|(name, millis)| (name, (now.timestamp_millis() - millis) / 1000)),
            );
        for (name, age) in waiting {
            if let Some(queue) = Queue::parse(&name) {
                let oldest = ages.entry(queue).or_default();
                *oldest = (*oldest).max(age.max(0));
            }
        }
        Ok(Queue::ALL.into_iter().map(|q| (q, ages[&q])).collect())
    }

    pub(super) async fn fetch(&self, id: &str) -> Result<Option<TaskRow>, RepoError> {
        if let Some(redis) = &self.redis {
            return redis.fetch(id).await;
        }
        let rows = self
            .select(&format!("WHERE id = {}", self.param(1)), &[id.into()], None)
            .await?;
        Ok(rows.into_iter().next())
    }

    pub(super) async fn select(
        &self,
        filter: &str,
        binds: &[Bind],
        page: Option<(u64, &str)>,
    ) -> Result<Vec<TaskRow>, RepoError> {
        let paging = page.map_or(String::new(), |(limit, order)| {
            format!(" ORDER BY id {order} LIMIT {limit}")
        });
        match &self.pool {
            Pool::Sqlite(pool) => {
                let sql = format!(
                    "SELECT id, job_type, status, attempts, max_attempts, run_at, done_at, \
                     last_result, metadata FROM Jobs {filter}{paging}"
                );
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                let rows = query.fetch_all(pool).await.map_err(sqlx_err)?;
                rows.iter().map(task_row).collect()
            }
            Pool::Postgres(pool) => {
                let sql = format!(
                    "SELECT id, job_type, status, attempts::bigint AS attempts, \
                     max_attempts::bigint AS max_attempts, \
                     EXTRACT(EPOCH FROM run_at)::bigint AS run_at, \
                     EXTRACT(EPOCH FROM done_at)::bigint AS done_at, \
                     last_result::text AS last_result, \
                     hstore_to_json(metadata)::text AS metadata FROM apalis.jobs {filter}{paging}"
                );
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                let rows = query.fetch_all(pool).await.map_err(sqlx_err)?;
                rows.iter().map(task_row).collect()
            }
        }
    }

    pub(super) async fn count(
        &self,
        filter: &str,
        binds: &[Bind],
        table: &str,
    ) -> Result<u64, RepoError> {
        let sql = format!("SELECT COUNT(*) FROM {table} {filter}");
        let count: i64 = match &self.pool {
            Pool::Sqlite(pool) => {
                let query = bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())), binds);
                query.fetch_one(pool).await
            }
            Pool::Postgres(pool) => {
                let query = bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())), binds);
                query.fetch_one(pool).await
            }
        }
        .map_err(sqlx_err)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    pub(super) fn jobs_table(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "Jobs",
            Pool::Postgres(_) => "apalis.jobs",
        }
    }

    /// `column IN (…)` over `values`, bound; `None` without a filter, and a condition no row
    /// meets when the filters leave no value.
    fn any_of(
        &self,
        column: &str,
        values: Option<&Vec<String>>,
        binds: &mut Vec<Bind>,
    ) -> Option<String> {
        let values = values?;
        if values.is_empty() {
            return Some("1 = 0".to_owned());
        }
        let params: Vec<String> = values
            .iter()
            .map(|value| {
                binds.push(Bind::Text(value.clone()));
                self.param(binds.len())
            })
            .collect();
        Some(format!("{column} IN ({})", params.join(", ")))
    }

    /// The keyset condition of a cursor, bound.
    fn after(&self, selection: &Selection, binds: &mut Vec<Bind>) -> Option<String> {
        let after = selection.after.as_ref()?;
        binds.push(Bind::Text(after.clone()));
        let op = if selection.descending { "<" } else { ">" };
        Some(format!("id {op} {}", self.param(binds.len())))
    }

    fn clause(clauses: &[String]) -> String {
        if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        }
    }

    /// The WHERE clause and binds selecting `selection` in apalis' table (`keyset`: with the
    /// cursor's condition; without it for the total).
    pub(super) fn queue_filter(&self, selection: &Selection, keyset: bool) -> (String, Vec<Bind>) {
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        if let Some(states) = &selection.states {
            let states: Vec<&str> = states
                .iter()
                .map(|state| match state {
                    JobState::Enqueued => "1 = 0",
                    JobState::Pending => "status IN ('Pending', 'Queued')",
                    JobState::Running => "status = 'Running'",
                    JobState::Retrying => "(status = 'Failed' AND attempts < max_attempts)",
                    JobState::Succeeded => "status = 'Done'",
                    JobState::Dead => {
                        "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))"
                    }
                })
                .collect();
            clauses.push(if states.is_empty() {
                "1 = 0".to_owned()
            } else {
                format!("({})", states.join(" OR "))
            });
        }
        clauses.extend(self.any_of("job_type", selection.queues.as_ref(), &mut binds));
        let kind = match self.pool {
            Pool::Sqlite(_) => "json_extract(metadata, '$.\"keel.kind\"')",
            Pool::Postgres(_) => "(metadata -> 'keel.kind')",
        };
        clauses.extend(self.any_of(kind, selection.kinds.as_ref(), &mut binds));
        if keyset {
            clauses.extend(self.after(selection, &mut binds));
        }
        (Self::clause(&clauses), binds)
    }

    /// The same for the outbox, or `None` when no outbox row can match (a state other than
    /// `enqueued` was asked for).
    pub(super) fn outbox_filter(
        &self,
        selection: &Selection,
        keyset: bool,
    ) -> Option<(String, Vec<Bind>)> {
        if selection
            .states
            .as_ref()
            .is_some_and(|states| !states.contains(&JobState::Enqueued))
        {
            return None;
        }
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        clauses.extend(self.any_of("queue", selection.queues.as_ref(), &mut binds));
        clauses.extend(self.any_of("kind", selection.kinds.as_ref(), &mut binds));
        if keyset {
            clauses.extend(self.after(selection, &mut binds));
        }
        Some((Self::clause(&clauses), binds))
    }

    pub(super) async fn outbox(
        &self,
        filter: &str,
        binds: &[Bind],
        page: Option<(u64, &str)>,
    ) -> Result<Vec<JobRecord>, RepoError> {
        let paging = page.map_or(String::new(), |(limit, order)| {
            format!(" ORDER BY id {order} LIMIT {limit}")
        });
        let sql = format!("SELECT * FROM job_outbox {filter}{paging}");
        let rows: Vec<OutboxRow> = match &self.pool {
            Pool::Sqlite(pool) => {
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                query
                    .fetch_all(pool)
                    .await
                    .map_err(sqlx_err)?
                    .iter()
                    .map(outbox_row)
                    .collect::<Result<_, _>>()?
            }
            Pool::Postgres(pool) => {
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                query
                    .fetch_all(pool)
                    .await
                    .map_err(sqlx_err)?
                    .iter()
                    .map(outbox_row)
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(rows.into_iter().map(|r| r.record()).collect())
    }
}

impl JobStore {
    /// The queue side of a list on Redis: every job of the selected queues is read (finished
    /// ones are kept only until `jobs.retention`), filtered, and ordered here. Returns the
    /// total the filters match and the jobs after the cursor, in the list's order.
    async fn redis_window(
        &self,
        redis: &RedisQueues,
        selection: &Selection,
    ) -> Result<(u64, Vec<JobRecord>), RepoError> {
        let queues: Vec<Queue> = Queue::ALL
            .into_iter()
            .filter(|queue| {
                selection
                    .queues
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == queue.as_str()))
            })
            .collect();
        let mut rows = Vec::new();
        for queue in queues {
            rows.extend(redis.all(queue).await?.into_iter().filter(|row| {
                super::redis::selected(selection.states.as_ref(), selection.kinds.as_ref(), row)
            }));
        }
        let total = rows.len() as u64;
        let records = rows
            .iter()
            .filter(|row| {
                selection.after.as_ref().is_none_or(|after| {
                    if selection.descending {
                        row.id < *after
                    } else {
                        row.id > *after
                    }
                })
            })
            .map(record)
            .collect();
        Ok((total, records))
    }
}

fn task_row<R>(row: &R) -> Result<TaskRow, RepoError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let metadata: Option<String> = row.try_get("metadata").map_err(sqlx_err)?;
    Ok(TaskRow {
        id: row.try_get("id").map_err(sqlx_err)?,
        queue: row.try_get("job_type").map_err(sqlx_err)?,
        status: row.try_get("status").map_err(sqlx_err)?,
        attempts: row.try_get("attempts").map_err(sqlx_err)?,
        max_attempts: row.try_get("max_attempts").map_err(sqlx_err)?,
        run_at: row.try_get("run_at").map_err(sqlx_err)?,
        done_at: row.try_get("done_at").map_err(sqlx_err)?,
        last_result: row.try_get("last_result").map_err(sqlx_err)?,
        metadata: metadata
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or_default(),
    })
}

pub(super) fn state_of(row: &TaskRow) -> JobState {
    match row.status.as_str() {
        "Running" => JobState::Running,
        "Done" => JobState::Succeeded,
        "Killed" => JobState::Dead,
        "Failed" if row.attempts >= row.max_attempts => JobState::Dead,
        "Failed" => JobState::Retrying,
        _ => JobState::Pending,
    }
}

/// The error text of apalis' stored result (`{"Err": "..."}`), if the last attempt failed.
fn last_error(result: Option<&str>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(result?).ok()?;
    let error = value.get("Err")?;
    let text = error
        .as_str()
        .map_or_else(|| error.to_string(), str::to_owned);
    // Permanent failures travel as apalis' `AbortError`, whose text starts with its name.
    Some(match text.strip_prefix("AbortError: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

fn record(row: &TaskRow) -> JobRecord {
    let state = state_of(row);
    let policy: Option<RetryPolicy> = row
        .metadata
        .get(meta::POLICY)
        .and_then(|p| serde_json::from_str(p).ok());
    JobRecord {
        id: job_id(&row.id).unwrap_or_else(|| JobId::from_uuid(uuid::Uuid::nil())),
        kind: row.metadata.get(meta::KIND).cloned().unwrap_or_default(),
        queue: Queue::parse(&row.queue).unwrap_or_default(),
        state,
        attempts: u32::try_from(row.attempts).unwrap_or_default(),
        max_attempts: policy.map_or_else(
            || u32::try_from(row.max_attempts).unwrap_or_default(),
            |p| p.max_attempts,
        ),
        last_error: if state == JobState::Succeeded {
            None
        } else {
            last_error(row.last_result.as_deref())
        },
        owner: row
            .metadata
            .get(meta::OWNER)
            .and_then(|o| o.parse().ok())
            .map(UserId::from_uuid),
        request_id: row.metadata.get(meta::REQUEST_ID).cloned(),
        created_at: created_at(&row.id),
        run_at: row.run_at.and_then(|s| Utc.timestamp_opt(s, 0).single()),
        finished_at: if state.is_finished() {
            row.done_at.and_then(|s| Utc.timestamp_opt(s, 0).single())
        } else {
            None
        },
    }
}

#[async_trait]
impl JobRepository for JobStore {
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, RepoError> {
        let key = task_id(id);
        if let Some(row) = self.fetch(&key).await? {
            return Ok(Some(record(&row)));
        }
        let filter = format!("WHERE id = {}", self.param(1));
        Ok(self
            .outbox(&filter, &[key.as_str().into()], None)
            .await?
            .into_iter()
            .next())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<JobRecord>, RepoError> {
        let selection = Selection::of(query);
        let limit = u64::from(query.limit);
        let offset = query.offset().unwrap_or(0);
        // Both sources are ordered by id (time-ordered): take enough of each to fill the page
        // and tell whether another follows, merge, then page.
        let window = (limit + offset + 1, selection.order());
        // The outbox first, then the queue: a job the relay moves in between is then read
        // twice (and kept once, as the queue has it), never missed.
        let mut total = 0;
        let mut outbox = Vec::new();
        if let (Some((counted, counted_binds)), Some((clause, binds))) = (
            self.outbox_filter(&selection, false),
            self.outbox_filter(&selection, true),
        ) {
            total += self.count(&counted, &counted_binds, "job_outbox").await?;
            outbox = self.outbox(&clause, &binds, Some(window)).await?;
        }
        let (queued_total, mut records) = match &self.redis {
            Some(redis) => self.redis_window(redis, &selection).await?,
            None => {
                let (counted, counted_binds) = self.queue_filter(&selection, false);
                let (clause, binds) = self.queue_filter(&selection, true);
                let total = self
                    .count(&counted, &counted_binds, self.jobs_table())
                    .await?;
                let records: Vec<JobRecord> = self
                    .select(&clause, &binds, Some(window))
                    .await?
                    .into_iter()
                    .map(|row| record(&row))
                    .collect();
                (total, records)
            }
        };
        total += queued_total;
        let queued: std::collections::HashSet<JobId> = records.iter().map(|r| r.id).collect();
        records.extend(outbox.into_iter().filter(|r| !queued.contains(&r.id)));
        if selection.descending {
            records.sort_by_key(|r| std::cmp::Reverse(r.id));
        } else {
            records.sort_by_key(|r| r.id);
        }
        let window: Vec<JobRecord> = records
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit + 1).unwrap_or(usize::MAX))
            .collect();
        Page::of_window(window, query, total, |last| {
            Ok::<_, RepoError>(cursor_values(last).to_vec())
        })
    }

    async fn retry(&self, id: JobId) -> Result<bool, RepoError> {
        if let Some(redis) = &self.redis {
            return redis.retry(&task_id(id)).await;
        }
        let now = Utc::now().timestamp();
        let sql = match self.pool {
            Pool::Sqlite(_) => "UPDATE Jobs SET status = 'Pending', attempts = 0, run_at = ?, \
                 done_at = NULL, lock_by = NULL, lock_at = NULL, last_result = NULL \
                 WHERE id = ? AND (status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))"
                .to_owned(),
            Pool::Postgres(_) => "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, \
                 run_at = to_timestamp($1), done_at = NULL, lock_by = NULL, lock_at = NULL, \
                 last_result = NULL WHERE id = $2 AND (status = 'Killed' OR \
                 (status = 'Failed' AND attempts >= max_attempts))"
                .to_owned(),
        };
        let binds = [Bind::Int(now), Bind::Text(task_id(id))];
        Ok(self.execute(&sql, &binds).await? == 1)
    }

    async fn delete(&self, id: JobId) -> Result<bool, RepoError> {
        if let Some(redis) = &self.redis {
            return redis.delete_one(&task_id(id)).await;
        }
        let sql = format!(
            "DELETE FROM {} WHERE id = {} AND {SQLITE_FINISHED}",
            self.jobs_table(),
            self.param(1)
        );
        Ok(self.execute(&sql, &[Bind::Text(task_id(id))]).await? == 1)
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        if let Some(redis) = &self.redis {
            return redis.purge_finished(before).await;
        }
        let sql = match self.pool {
            Pool::Sqlite(_) => format!("DELETE FROM Jobs WHERE {SQLITE_FINISHED} AND done_at < ?"),
            Pool::Postgres(_) => format!(
                "DELETE FROM apalis.jobs WHERE {SQLITE_FINISHED} AND done_at < to_timestamp($1)"
            ),
        };
        self.execute(&sql, &[Bind::Int(before.timestamp())]).await
    }
}
