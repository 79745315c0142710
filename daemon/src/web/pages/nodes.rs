//! `/nodes`: with `[cluster]`, every node of the cluster as the shared database knows it, with
//! the facts `pacer nodes` prints: state, last heartbeat, clock offset, runs in flight and the
//! jobs whose config differs from the one the cluster follows. One daemon has no such page.

use std::sync::Arc;

use super::{daemon_status, ok};
use crate::store::postgres::NodeInfo;
use crate::web::fmt::{self, esc, url};
use crate::web::page::{Nav, Page, PageError, w};
use crate::web::query::Query;
use crate::web::server::Reply;
use crate::web::site::Site;

pub(crate) async fn page(site: &Arc<Site>, query: Option<&str>) -> Result<Reply, PageError> {
    Query::parse(query, &[])?;
    if !site.is_cluster() {
        return Err(PageError::NotFound(
            "no nodes: this pacerd runs alone (its config has no [cluster] table)".to_owned(),
        ));
    }
    let (nodes, daemon) =
        tokio::join!(site.read(|history, _| history.nodes()), daemon_status(site));
    let nodes = nodes?.unwrap_or_default();
    let this = daemon.status().and_then(|status| status.node.clone());
    let mut body = String::from("<div class=\"title-row\"><h1>Nodes</h1>");
    let alive = nodes.iter().filter(|node| node.state == "alive").count();
    w!(
        body,
        "<div class=\"chips\" id=\"summary\" data-live><span class=\"chip\">{} nodes</span>\
         <span class=\"chip\">{alive} alive</span>",
        nodes.len()
    );
    if let Some(database) = daemon.status().and_then(|status| status.database.as_ref()) {
        w!(body, "<span class=\"chip\">{}</span>", esc(database));
    }
    body.push_str("</div></div><section class=\"panel\" id=\"nodes\" data-live>");
    if nodes.is_empty() {
        body.push_str("<p class=\"empty-note\">No node has joined the cluster yet.</p>");
    } else {
        table(&mut body, &nodes, this.as_deref(), site);
    }
    body.push_str(
        "<p class=\"hint\">Heartbeats are on the database's clock. A node whose heartbeat stops \
         for the lease is declared dead by its peers, and its runs are handed over. Drift: jobs \
         whose config on that node differs from the one the cluster follows (the node does not \
         run them).</p></section>",
    );
    ok(&Page {
        title: "Nodes".to_owned(),
        nav: Nav::Nodes,
        body,
        live: true,
        daemon,
        cluster: true,
    })
}

fn table(body: &mut String, nodes: &[NodeInfo], this: Option<&str>, site: &Site) {
    body.push_str(
        "<table class=\"nodes cards\"><thead><tr><th>Node</th><th>State</th><th>Host</th>\
         <th class=\"num\">PID</th><th>Last heartbeat</th><th class=\"num\">Clock offset</th>\
         <th class=\"num\">In flight</th><th>Config drift</th></tr></thead><tbody>",
    );
    for node in nodes {
        let class = match node.state.as_str() {
            "alive" => "st-succeeded",
            "stopping" => "st-abandoned",
            "dead" => "st-failed",
            _ => "st-skipped",
        };
        w!(
            body,
            "<tr id=\"node-{}\"><td data-label=\"Node\"><span class=\"node-name\">{}</span>{}</td>\
             <td data-label=\"State\"><span class=\"badge {class}\">{}</span></td>\
             <td data-label=\"Host\">{}</td><td class=\"num\" data-label=\"PID\">{}</td>\
             <td data-label=\"Last heartbeat\">{}<div class=\"sub\">{} ago</div></td>\
             <td class=\"num\" data-label=\"Clock offset\">{} ms</td>\
             <td class=\"num\" data-label=\"In flight\"><a href=\"/runs?status=running\">{}</a></td>\
             <td data-label=\"Config drift\">{}</td></tr>",
            esc(&url(&node.node)),
            esc(&node.node),
            if this == Some(node.node.as_str()) {
                " <span class=\"chip\">this node</span>"
            } else {
                ""
            },
            esc(&node.state),
            esc(&node.host),
            node.pid,
            fmt::short_when(node.last_heartbeat, &site.zone),
            fmt::duration(node.last_heartbeat_ago_ms.max(0)),
            node.clock_offset_ms,
            node.in_flight,
            drift(&node.drift)
        );
    }
    body.push_str("</tbody></table>");
}

/// The drifted jobs as links, `–` when none.
fn drift(jobs: &[String]) -> String {
    if jobs.is_empty() {
        return "<span class=\"muted\">–</span>".to_owned();
    }
    jobs.iter()
        .map(|job| format!("<a href=\"/jobs/{}\">{}</a>", url(job), esc(job)))
        .collect::<Vec<_>>()
        .join(", ")
}
