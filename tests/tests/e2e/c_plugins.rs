//! A plugin written in C against `pacer_plugin.h` alone runs like any other.

use pacer_tests::{Sandbox, compile_c_plugin, require_tool, text};

const HELLO_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include "pacer_plugin.h"

static void say(const pacer_host_api *api, pacer_host *h, int32_t level, const char *text) {
    api->log(h, level, text, strlen(text));
}

static int32_t validate(const pacer_host_api *api, pacer_host *h, const char *params, size_t len) {
    (void)len;
    if (strstr(params, "\"greeting\"") == NULL) {
        const char *why = "params need a `greeting`";
        api->set_message(h, why, strlen(why));
        return 1;
    }
    return 0;
}

static int32_t run(const pacer_host_api *api, pacer_host *h, const char *params, size_t len) {
    say(api, h, PACER_LOG_INFO, "hello from C");
    printf("params %.*s deadline %s cancelled %d\n", (int)len, params,
           api->deadline_ms(h) > 0 ? "set" : "none", (int)api->is_cancelled(h));
    if (strstr(params, "\"fail\"") != NULL) {
        const char *why = "the C plugin failed on request";
        api->set_message(h, why, strlen(why));
        return 2;
    }
    return 0;
}

static const pacer_plugin_v1 descriptor = {
    PACER_ABI_VERSION, "hello-c", "1.2.3", validate, run,
};

const pacer_plugin_v1 *pacer_plugin_entry_v1(void) { return &descriptor; }
"#;

#[test]
fn a_c_plugin_built_from_the_header_runs() {
    if !require_tool("gcc") {
        return;
    }
    let sandbox = Sandbox::new();
    let library = compile_c_plugin(HELLO_C, "hello_c", sandbox.path());
    sandbox.install_plugin(&library);
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "greet"
schedule = "* * * * * *"
plugin = "hello-c"
timeout = "1m"
params = { greeting = "hi" }

[[jobs]]
name = "refuse"
schedule = "* * * * * *"
plugin = "hello-c"
params = { greeting = "hi", mode = "fail" }
"#,
    );
    let check = sandbox.pacer(["check"]);
    assert_eq!(check.code, 0, "{check}");
    let _daemon = sandbox.start();

    let plugins = sandbox.pacer_json(&["plugins"]);
    let hello = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello-c")
        .expect("hello-c is listed");
    assert_eq!(hello["version"], "1.2.3");
    assert_eq!(hello["abi_version"], 1);
    assert_eq!(hello["state"], "ok");
    assert_eq!(hello["error"], serde_json::Value::Null);

    let ok = sandbox.wait_for_run(
        "a succeeded C run",
        &["--job", "greet", "--status", "succeeded"],
    );
    let detail = sandbox.pacer_json(&["show", &ok["id"].to_string()]);
    let output = text(&detail, "output");
    assert!(output.contains("[info] hello from C\n"), "{output}");
    assert!(
        output.contains(r#"params {"greeting":"hi"} deadline set cancelled 0"#),
        "{output}"
    );
    let failed = sandbox.wait_for_run("a failed C run", &["--job", "refuse", "--status", "failed"]);
    assert_eq!(failed["error"], "the C plugin failed on request");
}

#[test]
fn check_runs_the_c_validate() {
    if !require_tool("gcc") {
        return;
    }
    let sandbox = Sandbox::new();
    let library = compile_c_plugin(HELLO_C, "hello_c", sandbox.path());
    sandbox.install_plugin(&library);
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"bare\"\nplugin = \"hello-c\"\nparams = { other = 1 }\n",
    );
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    let verdict = &check.json()[0];
    assert_eq!(verdict["job"], "bare");
    assert!(
        text(verdict, "error") == "pacer.toml:9:10: params of `bare`: params need a `greeting`",
        "{verdict}"
    );
}
