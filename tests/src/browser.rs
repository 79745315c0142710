//! A real headless Chromium driven through `chromedriver` with the W3C WebDriver protocol: a
//! few JSON requests over HTTP, so the browser tests need neither Node nor a driver crate.
//!
//! Chromium runs with a fresh profile, no network besides the page under test (no component
//! updates, no sync, no QUIC), and collects the console, so a test can assert that a page
//! logged no errors (a refused inline style or script shows there too).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::DEADLINE;

/// Where Debian installs the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser tests can run here; when they cannot, why, unless `CI=true`, where a
/// missing browser fails the test instead of skipping it.
pub fn unavailable() -> Option<String> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return None;
    }
    let reason = format!(
        "{} not installed (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the browser tests need {reason}"
    );
    Some(reason)
}

/// A WebDriver element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A browser session; dropping it closes the browser and stops the driver.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium whose viewport is `width` by `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let root = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while agent
            .get(&format!("{root}/status"))
            .call()
            .ok()
            .filter(|r| r.status() == 200)
            .is_none()
        {
            assert!(start.elapsed() < DEADLINE, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::Builder::new()
            .prefix("pacer-chromium-")
            .tempdir()
            .unwrap();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-color-profile=srgb".to_owned(),
            format!("--window-size={width},{height}"),
        ];
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            driver,
            base: String::new(),
            agent,
            _profile: profile,
        };
        let session = browser.call("POST", &format!("{root}/session"), Some(&capabilities));
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_owned();
        browser.base = format!("{root}/session/{id}");
        browser.viewport(width, height, false);
        browser
    }

    fn call(&self, method: &str, url: &str, body: Option<&Value>) -> Value {
        self.try_call(method, url, body)
            .unwrap_or_else(|(status, text)| {
                panic!("{method} {url} answered {status}: {text:.2000}")
            })
    }

    /// A WebDriver call; a refusal comes back as its HTTP status and body.
    fn try_call(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, (u16, String)> {
        let response = match (method, body) {
            ("GET", _) => self.agent.get(url).call(),
            ("DELETE", _) => self.agent.delete(url).call(),
            (_, body) => self
                .agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(&json!({})).to_string()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .unwrap();
        if response.status() != 200 {
            return Err((response.status().as_u16(), text));
        }
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(value["value"].clone())
    }

    fn session(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("{}{path}", self.base), body)
    }

    /// Sets the viewport (CSS pixels), as a phone when `mobile`.
    pub fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            &json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// A DevTools command, through the driver.
    pub fn cdp(&self, command: &str, params: &Value) -> Value {
        self.session(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({"cmd": command, "params": params})),
        )
    }

    /// Loads `url` and waits until it has loaded.
    pub fn goto(&self, url: &str) {
        self.session("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.session("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` in the page (as a function body; `arguments` holds `args`).
    pub fn script(&self, script: &str, args: &Value) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Every element matching the CSS `selector`.
    pub fn find_all(&self, selector: &str) -> Vec<Element> {
        let found = self.session(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": selector})),
        );
        found
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_object()?.values().next()?.as_str())
                    .map(|id| Element(id.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `selector`, waiting for it with the deadline.
    pub fn find(&self, selector: &str) -> Element {
        crate::wait_until(
            &format!("an element `{selector}` on {}", self.url()),
            || self.find_all(selector).into_iter().next(),
        )
    }

    /// Clicks the first element matching `selector` (scrolling it into view), finding it again if the page's live
    /// refresh replaced it between the finding and the click (as a user would click again).
    pub fn click_on(&self, selector: &str) {
        crate::wait_until(&format!("a click on `{selector}`"), || {
            let element = self.find(selector);
            let url = format!("{}/element/{}/click", self.base, element.0);
            match self.try_call("POST", &url, None) {
                Ok(_) => Some(()),
                Err((_, text)) if text.contains("stale element reference") => None,
                Err((status, text)) => panic!("POST {url} answered {status}: {text:.2000}"),
            }
        });
    }

    /// Types `text` into `element`.
    pub fn type_text(&self, element: &Element, text: &str) {
        self.session(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(&json!({ "text": text })),
        );
    }

    /// The rendered text of `element`.
    pub fn text(&self, element: &Element) -> String {
        self.session("GET", &format!("/element/{}/text", element.0), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// An attribute of `element`.
    pub fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.session(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .as_str()
        .map(str::to_owned)
    }

    /// The console entries logged since the last call (each with `level` and `message`).
    pub fn console(&self) -> Vec<Value> {
        self.session("POST", "/se/log", Some(&json!({"type": "browser"})))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Saves a picture of the whole page (up to 6,000 CSS pixels tall) at `path`, with the
    /// viewport `width` wide; the viewport is left at `width` by `height` afterwards.
    pub fn screenshot(&self, path: &Path, width: u32, height: u32, mobile: bool) {
        let full = self
            .script(
                "return Math.ceil(document.documentElement.scrollHeight);",
                &json!([]),
            )
            .as_u64()
            .unwrap_or(u64::from(height));
        let tall = u32::try_from(full.clamp(u64::from(height), 6_000)).unwrap_or(height);
        self.viewport(width, tall, mobile);
        let encoded = self.session("GET", "/screenshot", None);
        self.viewport(width, height, mobile);
        let bytes = decode_base64(encoded.as_str().unwrap_or_default());
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.base.is_empty() {
            let _ = self.agent.delete(&self.base).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where the browser tests save their screenshots: `target/web-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    crate::artifacts()
        .libraries
        .parent()
        .expect("target/<profile>")
        .join("web-screenshots")
}

/// Standard base64 (with padding) to bytes; what WebDriver sends screenshots in.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
