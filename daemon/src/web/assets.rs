//! The stylesheet, the script and the icon, built into the binary: the view works on a machine
//! with no internet, and nothing is fetched from elsewhere. Their links carry a hash of their
//! content, so a browser may keep them while they are unchanged and fetches them after an
//! upgrade.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{self, HeaderValue};

use super::server::Reply;

/// A file served under `/static/`.
#[derive(Debug)]
pub(crate) struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    hash: u64,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
        Asset {
            name,
            content_type,
            bytes,
            hash: fnv1a(bytes),
        }
    }

    /// The link to it, with its content hash.
    pub(crate) fn href(&self) -> String {
        format!("/static/{}?v={:016x}", self.name, self.hash)
    }

    fn reply(&self) -> Reply {
        let mut reply = Response::new(Full::new(Bytes::from_static(self.bytes)));
        let headers = reply.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=86400"),
        );
        reply
    }
}

/// The stylesheet.
pub(crate) const CSS: Asset = Asset::new(
    "app.css",
    "text/css; charset=utf-8",
    include_bytes!("assets/app.css"),
);
/// The script: live updates and the timeline's keyboard zoom.
pub(crate) const JS: Asset = Asset::new(
    "app.js",
    "text/javascript; charset=utf-8",
    include_bytes!("assets/app.js"),
);
/// The icon.
pub(crate) const ICON: Asset = Asset::new(
    "icon.svg",
    "image/svg+xml",
    include_bytes!("assets/icon.svg"),
);

/// `/static/NAME`, whatever its query (the hash only defeats caches).
pub(crate) fn serve(name: &str) -> Option<Reply> {
    [&CSS, &JS, &ICON]
        .into_iter()
        .find(|asset| asset.name == name)
        .map(Asset::reply)
}

/// `/favicon.ico`, which browsers ask for on their own: the icon.
pub(crate) fn favicon() -> Reply {
    ICON.reply()
}

/// FNV-1a, 64 bits: enough to tell versions of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}
