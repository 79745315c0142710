//! The router and one module per page: `/` (jobs), `/jobs/NAME`, `/runs`, `/runs/ID`,
//! `/timeline`, `/nodes` (a cluster's), and the built-in assets under `/static/`.

mod job;
mod jobs;
mod nodes;
mod run;
mod runs;
mod timeline;

use std::sync::Arc;

use hyper::{StatusCode, Uri};

use super::assets;
use super::page::{DaemonLine, Page, PageError, html};
use super::server::Reply;
use super::site::Site;
use crate::control::{JobInfo, Request, Response};

/// The page for `uri`; every failure is a page too (400, 404, 503), never a dropped request.
pub(crate) async fn route(site: &Arc<Site>, uri: &Uri) -> Reply {
    let path = uri.path();
    let query = uri.query();
    let page = match path {
        "/" => jobs::page(site, query).await,
        "/runs" => runs::page(site, query).await,
        "/timeline" => timeline::page(site, query).await,
        "/nodes" => nodes::page(site, query).await,
        "/favicon.ico" => return assets::favicon(),
        _ => {
            if let Some(name) = path.strip_prefix("/static/") {
                return assets::serve(name)
                    .unwrap_or_else(|| PageError::NotFound(format!("no file {path}")).reply());
            } else if let Some(name) = path.strip_prefix("/jobs/") {
                match decode(name) {
                    Ok(name) => job::page(site, &name, query).await,
                    Err(e) => Err(e),
                }
            } else if let Some(id) = path.strip_prefix("/runs/") {
                // Decoded first, as every path is: `%33` is `3`.
                match decode(id) {
                    Ok(id) => match id.parse::<i64>() {
                        Ok(id) => run::page(site, id, query).await,
                        Err(_) => Err(PageError::NotFound(format!(
                            "no run `{id}`: run ids are whole numbers, as /runs lists them"
                        ))),
                    },
                    Err(e) => Err(e),
                }
            } else {
                decode(path).and_then(|path| {
                    Err(PageError::NotFound(format!(
                        "no page {path}: the pages are / (jobs), /runs, /timeline, /jobs/NAME, \
                         /runs/ID and, in a cluster, /nodes"
                    )))
                })
            }
        }
    };
    page.unwrap_or_else(|e| e.reply())
}

/// A path segment with its percent-escapes decoded (a `+` stays a `+`); bad escapes are a 400.
fn decode(segment: &str) -> Result<String, PageError> {
    super::query::decode(segment, false).map_err(|at| {
        PageError::BadRequest(format!(
            "the path is not valid percent-encoded UTF-8 at `{at}`"
        ))
    })
}

/// A page that rendered, as a 200.
fn ok(page: &Page) -> Result<Reply, PageError> {
    Ok(html(StatusCode::OK, page.render()))
}

/// The daemon's load for the header; `None` when it does not answer.
async fn daemon_status(site: &Site) -> DaemonLine {
    match site.ask(Request::Status).await {
        Ok(Response::Status(status)) => DaemonLine::Answered(status),
        _ => DaemonLine::Silent,
    }
}

/// Every job of the config in force, as `pacer jobs` lists them.
async fn jobs_in_force(site: &Site) -> Result<Vec<JobInfo>, PageError> {
    match site.ask(Request::Jobs).await? {
        Response::Jobs { jobs } => Ok(jobs),
        Response::Error { message } => Err(PageError::Unavailable(message)),
        other => Err(PageError::Internal(format!(
            "unexpected answer from the engine: {other:?}"
        ))),
    }
}

/// The current instant, Unix ms.
fn now_ms() -> i64 {
    crate::time::to_ms(jiff::Timestamp::now())
}
