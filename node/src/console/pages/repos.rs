//! The repositories page: the repositories the visitor may pull (exactly what
//! `GET /v2/_catalog` lists for the same user), a page at a time, with an optional
//! substring filter. A page costs its own rows, whatever the registry holds: names are
//! read in order from where the previous page ended, and a filter reads at most
//! `SCAN_BUDGET` names per request before offering to continue.

use super::super::html::{self, Section};
use super::super::Console;
use crate::api::query::Query;
use crate::meta::summaries::RepoSummary;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use std::sync::Arc;

/// Repository names one request reads at most while filtering.
const SCAN_BUDGET: usize = 100_000;
/// Names read from the store at a time.
const BATCH: usize = 1000;
/// Rows a figure (tags, pushes) is counted up to.
const FIGURE_CAP: usize = 10_000;

/// One page of names, and where the next page starts.
struct Listing {
    rows: Vec<(String, RepoSummary)>,
    /// The name to continue after, when more may follow.
    next_after: Option<String>,
    /// The filter's budget ran out before the page filled.
    budget_spent: bool,
}

/// `GET /ui/repos[?q=…][&after=…]`.
pub async fn show(State(console): State<Arc<Console>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let Some(visitor) = console.visitor(&headers) else { return super::log_in_first("/ui/repos", raw.as_deref()) };
    let query = Query::parse(raw.as_deref());
    let filter = query.get("q").map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase);
    let after = query.get("after").filter(|a| !a.is_empty());
    let listing = match list(&console, &visitor.caller, filter.as_deref(), after, console.cfg.rows()) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "console: listing repositories failed");
            return super::message(StatusCode::SERVICE_UNAVAILABLE, "Repositories", "Cannot read the repositories right now.");
        }
    };
    let q_param = filter.as_deref().map(|q| format!("q={}&", html::query_value(q))).unwrap_or_default();
    let body = html! {
        h1 { "Repositories" }
        form.filter method="get" action="/ui/repos" {
            input #filter type="search" name="q" value=[filter.as_deref()] placeholder="Filter by name";
            button type="submit" { "Filter" }
        }
        @if listing.rows.is_empty() {
            p.muted #empty {
                @if listing.budget_spent { "No match among the names read so far." }
                @else if filter.is_some() || after.is_some() { "No repositories match." }
                @else { "No repositories yet. Push an image to see it here." }
            }
        } @else {
            table #repos {
                thead { tr { th { "Repository" } th.num { "Tags" } th.num { "Size" } th { "Last push" } } }
                tbody {
                    @for (name, s) in &listing.rows {
                        tr {
                            td.name { a href=(super::repo::tags_url(name)) { (name) } }
                            td.num.tags { (s.tags) @if s.tags_capped { "+" } }
                            td.num.size title=(s.bytes) { (html::bytes(s.bytes)) @if s.bytes_capped { "+" } }
                            td.pushed { @if let Some(t) = s.last_push_unix { (html::time(t)) } @else { "—" } }
                        }
                    }
                }
            }
        }
        div.pager {
            @if after.is_some() { a #first href={ "/ui/repos?" (q_param) } { "First page" } }
            @if let Some(next) = &listing.next_after {
                a #next href={ "/ui/repos?" (q_param) "after=" (html::query_value(next)) } {
                    @if listing.budget_spent { "Continue searching" } @else { "Next page" }
                }
            }
        }
    };
    super::render(&console, &visitor, "Repositories", Section::Repositories, body)
}

/// Up to `rows` repositories after `after` that `caller` may list and whose name
/// contains `filter` (lower-case), with their figures.
fn list(
    console: &Console,
    caller: &crate::auth::Caller,
    filter: Option<&str>,
    after: Option<&str>,
    rows: usize,
) -> Result<Listing, crate::meta::store::StoreError> {
    let mut names = Vec::with_capacity(rows);
    let mut cursor = after.map(str::to_string);
    let mut read = 0usize;
    let (mut more, mut budget_spent) = (false, false);
    'scan: loop {
        let batch = console.store.repositories(cursor.as_deref(), BATCH)?;
        let exhausted = batch.len() < BATCH;
        for name in batch {
            read += 1;
            cursor = Some(name.clone());
            let visible = console.auth.may_list(caller, &name);
            if visible && filter.is_none_or(|f| name.to_lowercase().contains(f)) {
                if names.len() == rows {
                    more = true;
                    break 'scan;
                }
                names.push(name);
            }
            // The budget ends a scan only at a name the visitor may see, so "continue
            // after" never reveals one it may not (users' roles cover every repository
            // today, so this costs nothing yet).
            if read >= SCAN_BUDGET && visible {
                budget_spent = names.len() < rows;
                more = true;
                break 'scan;
            }
        }
        if exhausted {
            break;
        }
    }
    let next_after = if more {
        if budget_spent {
            cursor
        } else {
            names.last().cloned()
        }
    } else {
        None
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let summary = console.store.repo_summary(&name, FIGURE_CAP)?;
        out.push((name, summary));
    }
    Ok(Listing { rows: out, next_after, budget_spent })
}
