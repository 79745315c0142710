//! The frame every page shares (head, navigation, the daemon's load, footer), the pieces
//! pages have in common (status badges, the legend), and the error pages.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::assets;
use super::fmt::esc;
use super::server::Reply;
use crate::control::StatusInfo;
use crate::model::Status;

/// Appends formatted text to a `String` (which cannot fail).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = write!($out, $($arg)*);
    }};
}
pub(crate) use w;

/// Why a page could not be shown.
#[derive(Debug)]
pub(crate) enum PageError {
    /// A parameter is wrong; the text says which and what was expected.
    BadRequest(String),
    /// No such run, job or page.
    NotFound(String),
    /// The daemon did not answer (stopping, or too busy).
    Unavailable(String),
    /// The history could not be read.
    Internal(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error as a page.
    pub(crate) fn reply(&self) -> Reply {
        let (heading, reason) = match self {
            PageError::BadRequest(reason) => ("Bad request", reason),
            PageError::NotFound(reason) => ("Not found", reason),
            PageError::Unavailable(reason) => ("pacerd is busy", reason),
            PageError::Internal(reason) => ("The history could not be read", reason),
        };
        if let PageError::Internal(reason) = self {
            tracing::warn!("web view: {reason}");
        }
        let mut body = String::new();
        w!(
            body,
            "<section class=\"panel error-page\"><h1>{heading}</h1><p class=\"reason\">{}</p>\
             <p><a href=\"/\">Jobs</a> · <a href=\"/runs\">Runs</a> · \
             <a href=\"/timeline\">Timeline</a></p></section>",
            esc(reason)
        );
        let page = Page {
            title: heading.to_owned(),
            nav: Nav::None,
            body,
            live: false,
            daemon: DaemonLine::Unasked,
            cluster: false,
        };
        html(self.status(), page.render())
    }
}

/// The daemon's state in the header.
#[derive(Debug)]
pub(crate) enum DaemonLine {
    /// Its load, as it answered.
    Answered(StatusInfo),
    /// It was asked and did not answer.
    Silent,
    /// Not asked (an error page says nothing of it rather than something untrue).
    Unasked,
}

impl DaemonLine {
    /// Its status, when it answered.
    pub(crate) fn status(&self) -> Option<&StatusInfo> {
        match self {
            DaemonLine::Answered(status) => Some(status),
            DaemonLine::Silent | DaemonLine::Unasked => None,
        }
    }
}

/// Which navigation entry is the current page's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Jobs,
    Runs,
    Timeline,
    Nodes,
    None,
}

/// A page to render in the shared frame.
#[derive(Debug)]
pub(crate) struct Page {
    /// The `<title>`, before " · Pacer".
    pub(crate) title: String,
    /// The current navigation entry.
    pub(crate) nav: Nav,
    /// The `<main>` content.
    pub(crate) body: String,
    /// Whether the script refreshes the page's `data-live` parts while it is shown.
    pub(crate) live: bool,
    /// What the header says of the daemon.
    pub(crate) daemon: DaemonLine,
    /// Whether the daemon is a node of a cluster (the navigation then offers its nodes).
    pub(crate) cluster: bool,
}

impl Page {
    /// The whole document.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(self.body.len() + 2_048);
        w!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · Pacer</title>\
             <link rel=\"icon\" type=\"image/svg+xml\" href=\"{}\">\
             <link rel=\"stylesheet\" href=\"{}\"><script src=\"{}\" defer></script></head>",
            esc(&self.title),
            assets::ICON.href(),
            assets::CSS.href(),
            assets::JS.href()
        );
        w!(
            out,
            "<body{}><header class=\"top\"><a class=\"brand\" href=\"/\">\
             <img src=\"{}\" alt=\"\" width=\"22\" height=\"22\">Pacer</a><nav>",
            if self.live {
                " data-refresh=\"10\""
            } else {
                ""
            },
            assets::ICON.href()
        );
        let nodes = self.cluster.then_some((Nav::Nodes, "/nodes", "Nodes"));
        for (nav, href, label) in [
            (Nav::Jobs, "/", "Jobs"),
            (Nav::Runs, "/runs", "Runs"),
            (Nav::Timeline, "/timeline", "Timeline"),
        ]
        .into_iter()
        .chain(nodes)
        {
            let current = if nav == self.nav {
                " class=\"on\" aria-current=\"page\""
            } else {
                ""
            };
            w!(out, "<a href=\"{href}\"{current}>{label}</a>");
        }
        out.push_str("</nav><div class=\"daemon\" id=\"daemon\" data-live>");
        match &self.daemon {
            DaemonLine::Answered(status) => {
                let busy = if status.in_flight > 0 { " busy" } else { "" };
                w!(out, "<span class=\"dot{busy}\"></span>");
                if let Some(node) = &status.node {
                    w!(out, "node {} · ", esc(node));
                }
                w!(
                    out,
                    "{} running · {} queued",
                    status.in_flight,
                    status.queued
                );
                if let Some(reason) = &status.waiting_on {
                    w!(out, " · <span class=\"warn\">{}</span>", esc(reason));
                }
            }
            DaemonLine::Silent => {
                out.push_str("<span class=\"dot off\"></span>pacerd not answering");
            }
            DaemonLine::Unasked => {}
        }
        w!(
            out,
            "</div></header><main>{}</main><footer>pacerd {} · read-only view",
            self.body,
            env!("CARGO_PKG_VERSION")
        );
        if self.live {
            out.push_str(" · <span id=\"updated\">live</span>");
        }
        out.push_str("</footer></body></html>\n");
        out
    }
}

/// An HTML response.
pub(crate) fn html(status: StatusCode, document: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(document)));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

/// A status as a colored badge.
pub(crate) fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge st-{status}\">{}</span>",
        status.replace('_', " ")
    )
}

/// The statuses in the order a legend lists them: waiting, going, then how runs ended. A
/// run waiting for a slot is drawn in the `queued` colour whether or not it has a record yet.
pub(crate) fn legend_statuses() -> Vec<&'static str> {
    let mut names = vec!["queued"];
    names.extend(
        Status::ALL
            .iter()
            .map(|status| status.as_str())
            .filter(|name| *name != "queued"),
    );
    names
}

/// The colour key of charts.
pub(crate) fn legend() -> String {
    let mut out = String::from("<ul class=\"legend\">");
    for name in legend_statuses() {
        w!(
            out,
            "<li><span class=\"swatch st-{name}\"></span>{}</li>",
            name.replace('_', " ")
        );
    }
    out.push_str("</ul>");
    out
}
