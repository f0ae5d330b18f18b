//! Runs a checked [`ListQuery`] against any sea-orm entity: filters, search, ordering, offset
//! or keyset pages, and the total count.
//!
//! The query language is parsed and checked against the resource's allow-list in the kernel;
//! here every value becomes a bound parameter and every field name is mapped to a column
//! through [`Listable::column`], never interpolated.

use keel_kernel::query::{
    Cursor, Direction, Filter, FilterOp, ListQuery, Position, SortKey, Value,
};
use keel_kernel::{Page, RepoError};
use sea_orm::sea_query::{IntoCondition, LikeExpr, NullOrdering, Order};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, ModelTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use crate::error::repo_err;

/// An entity whose rows can be listed with the query language.
pub trait Listable: EntityTrait {
    /// The column behind a public field name, including `id`.
    fn column(field: &str) -> Option<Self::Column>;

    /// Columns `q=` searches (case-insensitively, as a substring).
    fn search_columns() -> &'static [Self::Column];
}

/// Fetches one page of `select` (already restricted to the caller's scope) as `query` asks.
pub(crate) async fn fetch_page<E, C>(
    db: &C,
    select: Select<E>,
    query: &ListQuery,
) -> Result<Page<E::Model>, RepoError>
where
    E: Listable,
    E::Model: Sync,
    C: ConnectionTrait,
{
    let backend = db.get_database_backend();
    let mut filtered = select;
    for filter in &query.filters {
        filtered = filtered.filter(filter_condition::<E>(filter)?);
    }
    if let Some(search) = &query.search {
        filtered = filtered.filter(search_condition::<E>(backend, search));
    }

    let mut page = filtered.clone();
    for key in &query.sort {
        let column = column::<E>(key.field)?;
        let order = match key.direction {
            Direction::Asc => Order::Asc,
            Direction::Desc => Order::Desc,
        };
        page = if key.nullable {
            page.order_by_with_nulls(column, order, NullOrdering::Last)
        } else {
            page.order_by(column, order)
        };
    }
    match &query.position {
        Position::Offset(offset) => page = page.offset(*offset),
        Position::After(cursor) => page = page.filter(keyset_condition::<E>(&query.sort, cursor)?),
    }
    // One row more than asked tells whether another page exists.
    page = page.limit(u64::from(query.limit) + 1);

    let (rows, total) = tokio::try_join!(async { page.all(db).await.map_err(repo_err) }, async {
        filtered.count(db).await.map_err(repo_err)
    },)?;

    Page::of_window(rows, query, total, |last| {
        cursor_values::<E>(&query.sort, last)
    })
}

fn column<E: Listable>(field: &str) -> Result<E::Column, RepoError> {
    E::column(field).ok_or_else(|| {
        RepoError::Other(
            format!("list field `{field}` has no column (spec and entity disagree)").into(),
        )
    })
}

pub(crate) fn to_sea(value: &Value) -> sea_orm::Value {
    match value {
        Value::Text(s) => s.clone().into(),
        Value::Integer(i) => (*i).into(),
        Value::Boolean(b) => (*b).into(),
        Value::Timestamp(t) => (*t).into(),
        Value::Uuid(u) => (*u).into(),
        Value::Null => sea_orm::Value::String(None),
    }
}

fn from_sea(value: sea_orm::Value) -> Option<Value> {
    use sea_orm::Value as V;
    Some(match value {
        V::String(Some(s)) => Value::Text(s),
        V::BigInt(Some(i)) => Value::Integer(i),
        V::Int(Some(i)) => Value::Integer(i64::from(i)),
        V::SmallInt(Some(i)) => Value::Integer(i64::from(i)),
        V::Bool(Some(b)) => Value::Boolean(b),
        V::ChronoDateTimeUtc(Some(t)) => Value::Timestamp(t),
        V::Uuid(Some(u)) => Value::Uuid(u),
        V::String(None)
        | V::BigInt(None)
        | V::Int(None)
        | V::SmallInt(None)
        | V::Bool(None)
        | V::ChronoDateTimeUtc(None)
        | V::Uuid(None) => Value::Null,
        _ => return None,
    })
}

fn filter_condition<E: Listable>(filter: &Filter) -> Result<Condition, RepoError> {
    let column = column::<E>(filter.field)?;
    let expr = match &filter.op {
        FilterOp::Eq(value) => column.eq(to_sea(value)),
        FilterOp::In(values) => column.is_in(values.iter().map(to_sea)),
        FilterOp::Gte(value) => column.gte(to_sea(value)),
        FilterOp::Lte(value) => column.lte(to_sea(value)),
    };
    Ok(expr.into_condition())
}

/// `%`, `_` and the escape character itself are literals in a search.
fn like_pattern(search: &str) -> String {
    let mut escaped = String::with_capacity(search.len() + 2);
    escaped.push('%');
    for c in search.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

fn search_condition<E: Listable>(backend: DatabaseBackend, search: &str) -> Condition {
    let mut any = Condition::any();
    for column in E::search_columns() {
        // SQLite's LIKE is case-insensitive (for ASCII); PostgreSQL needs ILIKE. PostgreSQL's
        // default escape character is already the backslash, and sea-query renders
        // `ILIKE (… ESCAPE …)` with invalid parentheses, so the clause is SQLite-only.
        any = any.add(match backend {
            DatabaseBackend::Postgres => column.ilike(like_pattern(search)),
            _ => column.like(LikeExpr::new(like_pattern(search)).escape('\\')),
        });
    }
    any
}

/// Rows strictly after the cursor in the query's order, with NULLs last in both directions:
/// `OR` over keys i of (`AND` over earlier keys j of `k_j = v_j`) `AND` `k_i` after `v_i`.
fn keyset_condition<E: Listable>(
    sort: &[SortKey],
    cursor: &Cursor,
) -> Result<Condition, RepoError> {
    let mut any = Condition::any();
    for (i, (key, value)) in sort.iter().zip(&cursor.values).enumerate() {
        let mut all = Condition::all();
        for (earlier, earlier_value) in sort.iter().zip(&cursor.values).take(i) {
            let column = column::<E>(earlier.field)?;
            all = all.add(match earlier_value {
                Value::Null => column.is_null(),
                v => column.eq(to_sea(v)),
            });
        }
        let column = column::<E>(key.field)?;
        let after = match (value, key.direction) {
            // Nothing sorts after NULL in its own key: ties are broken by the later keys.
            (Value::Null, _) => continue,
            (v, Direction::Asc) => column.gt(to_sea(v)),
            (v, Direction::Desc) => column.lt(to_sea(v)),
        };
        let after = if key.nullable {
            Condition::any().add(after).add(column.is_null())
        } else {
            after.into_condition()
        };
        any = any.add(all.add(after));
    }
    Ok(any)
}

fn cursor_values<E: Listable>(sort: &[SortKey], row: &E::Model) -> Result<Vec<Value>, RepoError> {
    sort.iter()
        .map(|key| {
            let column = column::<E>(key.field)?;
            from_sea(row.get(column)).ok_or_else(|| {
                RepoError::Other(
                    format!("list field `{}` has an unsupported type", key.field).into(),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_pattern(r"50%_off\now"), r"%50\%\_off\\now%");
    }
}
