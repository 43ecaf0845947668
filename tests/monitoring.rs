//! The chart's monitoring, tested rather than only written: the PrometheusRule's alerts pass
//! `promtool check rules` and the unit tests in `tests/monitoring/alerts.test.yaml` (every alert
//! fires in one test and stays quiet in another), and every metric that an alert or a Grafana
//! panel names is one that a running operator exports on `/metrics`.
//!
//! promtool and helm come from `tests/cluster/build.sh` (via `$TESTENV_STATE/bin`); the operator
//! runs against the test control plane like the e2e tests. A missing tool or control plane
//! fails these tests; it never skips them.

// Test code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]
// The shared e2e harness has helpers these tests do not use.
#![allow(dead_code)]

#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use yaml_serde::Value;

use harness::*;

const CHART: &str = "charts/oneinbox-operator";
const DASHBOARD: &str = "charts/oneinbox-operator/files/grafana/oneinbox-operator.json";
const ALERT_TESTS: &str = "tests/monitoring/alerts.test.yaml";

/// A binary built by `tests/cluster/build.sh`; its absence is a failure, not a skip.
fn tool(name: &str) -> PathBuf {
    let path = state_dir().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make cluster-up` (or `make test`)",
        path.display()
    );
    path
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The PrometheusRule as the alert tests expect it: release "oneinbox-operator" in
/// "oneinbox-system", leader election on (so the no-leader alert exists), default thresholds.
fn rendered_rule() -> Value {
    let out = Command::new(tool("helm"))
        .args([
            "template",
            "oneinbox-operator",
            &repo().join(CHART).to_string_lossy(),
            "-n",
            "oneinbox-system",
            "--set",
            "prometheusRule.enabled=true,serviceMonitor.enabled=true",
            "--set",
            "leaderElection.enabled=true,replicas=2",
            "--show-only",
            "templates/prometheusrule.yaml",
        ])
        .output()
        .unwrap();
    let text = ok("helm template", out);
    let rule: Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    rule
}

/// Every alerting rule of the rendered groups: (name, expr).
fn alerts(rule: &Value) -> Vec<(String, String)> {
    rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| {
            Some((
                r["alert"].as_str()?.to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            ))
        })
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rule = rendered_rule();
    let dir = tempfile::tempdir().unwrap();
    let groups = yaml_serde::to_string(&yaml_serde::Mapping::from_iter([(
        Value::from("groups"),
        rule["spec"]["groups"].clone(),
    )]))
    .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), groups).unwrap();
    std::fs::copy(
        repo().join(ALERT_TESTS),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();

    let promtool = |args: &[&str]| {
        Command::new(tool("promtool"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let checked = ok(
        "promtool check rules",
        promtool(&["check", "rules", "rules.yaml"]),
    );
    let names = alerts(&rule);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{checked}"
    );
    ok(
        "promtool test rules",
        promtool(&["test", "rules", "--diff", "alerts.test.yaml"]),
    );

    // Every alert has a test in which it fires and one in which it stays quiet.
    #[derive(Deserialize)]
    struct Tests {
        tests: Vec<Group>,
    }
    #[derive(Deserialize)]
    struct Group {
        #[serde(default)]
        alert_rule_test: Vec<Case>,
    }
    #[derive(Deserialize)]
    struct Case {
        alertname: String,
        #[serde(default)]
        exp_alerts: Vec<yaml_serde::Value>,
    }
    let tests: Tests =
        yaml_serde::from_str(&std::fs::read_to_string(repo().join(ALERT_TESTS)).unwrap()).unwrap();
    let cases: Vec<&Case> = tests
        .tests
        .iter()
        .flat_map(|g| &g.alert_rule_test)
        .collect();
    let fires: BTreeSet<&str> = cases
        .iter()
        .filter(|c| !c.exp_alerts.is_empty())
        .map(|c| c.alertname.as_str())
        .collect();
    let quiet: BTreeSet<&str> = cases
        .iter()
        .filter(|c| c.exp_alerts.is_empty())
        .map(|c| c.alertname.as_str())
        .collect();
    let all: BTreeSet<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        all.len(),
        7,
        "update the alert tests when alerts change: {all:?}"
    );
    assert_eq!(fires, all, "alerts without a test in which they fire");
    assert_eq!(quiet, all, "alerts without a test in which they stay quiet");
}

// ---------------------------------------------------------------------------------------------
// Alert texts: runbook links and printer columns

/// The pages of the repository on GitHub, where the default `prometheusRule.runbookBaseURL` points.
const REPOSITORY_PAGES: &str = "https://github.com/oneinbox/oneinbox-operator/blob/main/";
const CRD: &str = "crds/phonenumbers.oneinbox.ai.yaml";

/// Every alerting rule of the rendered groups, whole.
fn alert_rules(rule: &Value) -> Vec<Value> {
    rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter(|r| r["alert"].as_str().is_some())
        .cloned()
        .collect()
}

/// The anchors GitHub gives a Markdown file's headings, with each heading's text: the text in
/// lower case, without punctuation (letters, digits, `-`, `_` and spaces stay), spaces turned
/// into `-`, and `-1`, `-2`, … after a repeated anchor. Fenced code blocks hold no headings.
fn github_anchors(markdown: &str) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut anchors = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let Some(text) = line.get(hashes..).and_then(|t| t.strip_prefix(' ')) else {
            continue;
        };
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let text = text.trim().to_owned();
        let base: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        *n += 1;
        anchors.push((anchor, text));
    }
    anchors
}

#[test]
fn github_anchors_follow_github() {
    let md = "# Running it\n## Runbook: replacing SIP credentials\n```sh\n# not a heading\n```\n\
              ### OneInboxAPIErrors\n## From `v1alpha1` to v1beta1\n## Alerts\n## Alerts\n#nope\n";
    let anchors: Vec<String> = github_anchors(md).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        anchors,
        [
            "running-it",
            "runbook-replacing-sip-credentials",
            "oneinboxapierrors",
            "from-v1alpha1-to-v1beta1",
            "alerts",
            "alerts-1",
        ]
    );
}

/// Every alert links to a section of docs/production.md that exists: its own `### <alert>`
/// under `## Alerts`, which has one section per alert and no other.
#[test]
fn every_alert_links_to_its_runbook_section() {
    let rule = rendered_rule();
    let rules = alert_rules(&rule);
    assert_eq!(rules.len(), 7, "leader election on: every alert");
    let mut linked = BTreeSet::new();
    for r in &rules {
        let alert = r["alert"].as_str().unwrap();
        let url = r["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert} has no runbook_url: {r:?}"));
        let (page, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{alert}: {url} has no anchor"));
        let file = page
            .strip_prefix(REPOSITORY_PAGES)
            .unwrap_or_else(|| panic!("{alert}: {url} is not a page of the repository"));
        assert_eq!(file, "docs/production.md", "{alert}: {url}");
        let markdown = std::fs::read_to_string(repo().join(file)).unwrap();
        let anchors = github_anchors(&markdown);
        let heading = anchors
            .iter()
            .find(|(a, _)| a == anchor)
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| {
                panic!("{alert}: no heading of {file} has the anchor #{anchor}: {anchors:?}")
            });
        assert_eq!(heading, alert, "{alert} links to another section: {url}");
        linked.insert(alert.to_owned());
    }

    let markdown = std::fs::read_to_string(repo().join("docs/production.md")).unwrap();
    let section = markdown
        .split("\n## Alerts\n")
        .nth(1)
        .expect("docs/production.md has a section ## Alerts");
    let section = section.split("\n## ").next().unwrap();
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_owned())
        .collect();
    assert_eq!(documented, linked, "## Alerts: one ### section per alert");

    // Another base (a tag, an own wiki) is the page of every link.
    let out = Command::new(tool("helm"))
        .args([
            "template",
            "oneinbox-operator",
            &repo().join(CHART).to_string_lossy(),
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.runbookBaseURL=https://wiki.example.com/oneinbox/alerts",
            "--show-only",
            "templates/prometheusrule.yaml",
        ])
        .output()
        .unwrap();
    let other: Value = yaml_serde::from_str(&ok("helm template", out)).unwrap();
    for r in alert_rules(&other) {
        let alert = r["alert"].as_str().unwrap().to_ascii_lowercase();
        assert_eq!(
            r["annotations"]["runbook_url"].as_str(),
            Some(&*format!(
                "https://wiki.example.com/oneinbox/alerts#{alert}"
            ))
        );
    }
}

/// The printer columns that a text names as "the X column" (X may be in backticks).
fn named_columns(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| {
            w[0].eq_ignore_ascii_case("the")
                && w[2]
                    .trim_end_matches(|c: char| !c.is_alphanumeric())
                    .eq_ignore_ascii_case("column")
        })
        .map(|w| w[1].trim_matches('`').to_owned())
        .collect()
}

#[test]
fn named_columns_finds_the_x_column() {
    assert_eq!(
        named_columns("The Stalled column of kubectl get pn names it; the `Reason` column, too"),
        ["Stalled", "Reason"]
    );
    assert!(named_columns("the columns of the table").is_empty());
}

/// Every printer column that an alert's text names exists on the PhoneNumber CRD, a text that
/// names a column shown only with `-o wide` says `-o wide`, and a column that shows a condition
/// shows the one the alert counts (the Stalled alert's cause is in `Stalled`, not in `Reason`,
/// which is the Ready condition's reason).
#[test]
fn alert_texts_name_existing_printer_columns() {
    let crd: Value =
        yaml_serde::from_str(&std::fs::read_to_string(repo().join(CRD)).unwrap()).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"].as_str(), Some("PhoneNumber"));
    // name -> (priority (0: shown by plain `kubectl get`), jsonPath), over every version.
    let mut columns = std::collections::BTreeMap::new();
    for version in crd["spec"]["versions"].as_sequence().unwrap() {
        for c in version["additionalPrinterColumns"].as_sequence().unwrap() {
            columns.insert(
                c["name"].as_str().unwrap().to_owned(),
                (
                    c["priority"].as_u64().unwrap_or(0),
                    c["jsonPath"].as_str().unwrap().to_owned(),
                ),
            );
        }
    }
    assert!(columns.contains_key("Stalled"), "{columns:?}");

    let rule = rendered_rule();
    let mut named = 0;
    for r in alert_rules(&rule) {
        let alert = r["alert"].as_str().unwrap();
        for (key, text) in r["annotations"].as_mapping().unwrap() {
            let (key, text) = (key.as_str().unwrap(), text.as_str().unwrap());
            for column in named_columns(text) {
                named += 1;
                let (priority, path) = columns.get(&column).unwrap_or_else(|| {
                    panic!(
                        "{alert} {key} names the column {column:?}, which {CRD} does not have \
                         (columns: {:?}): {text}",
                        columns.keys()
                    )
                });
                assert!(
                    *priority == 0 || text.contains("-o wide"),
                    "{alert} {key}: the {column} column shows only with -o wide: {text}"
                );
                // A column that shows a condition is the condition the alert counts.
                if let Some(condition) = path
                    .strip_prefix(".status.conditions[?(@.type==\"")
                    .and_then(|rest| rest.split('"').next())
                {
                    let expr = r["expr"].as_str().unwrap();
                    assert!(
                        expr.contains(&format!("condition=\"{condition}\"")),
                        "{alert} {key} names the {column} column, which shows the {condition} \
                         condition, but the alert counts another: {expr}\n{text}"
                    );
                }
            }
        }
    }
    assert!(
        named > 0,
        "no alert names a column: the test checks nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Metric names in PromQL

/// The metric names a PromQL expression selects: identifiers that are neither functions nor
/// keywords, outside label matchers, ranges, strings and grouping clauses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings go first, then `{…}` and `[…]` (nothing nests inside those once strings are gone).
    let mut bare = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            bare.push_str("\"\"");
        } else {
            bare.push(c);
        }
    }
    let mut text = String::new();
    let mut chars = bare.chars();
    while let Some(c) = chars.next() {
        if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            for d in chars.by_ref() {
                if d == close {
                    break;
                }
            }
            text.push(' ');
        } else {
            text.push(c);
        }
    }
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may take their grouping clause before the parenthesis: `sum by (x) (…)`.
    const KEYWORDS: &[&str] = &[
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let bytes: Vec<char> = text.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() || c == '.' {
            // A number or a duration (0.25, 10m, 1e3).
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
        {
            i += 1;
        }
        let word: String = bytes[start..i].iter().collect();
        let mut j = i;
        while j < bytes.len() && bytes[j].is_whitespace() {
            j += 1;
        }
        let called = j < bytes.len() && bytes[j] == '(';
        if GROUPING.contains(&word.to_ascii_lowercase().as_str()) {
            // Skip the label list of the clause.
            if called {
                while j < bytes.len() && bytes[j] != ')' {
                    j += 1;
                }
                i = j + 1;
            }
            continue;
        }
        if called || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            continue;
        }
        names.insert(word);
    }
    names
}

#[test]
fn metric_names_finds_selectors_only() {
    let expr = r#"sum by (op, le) (rate(a_total{op="x{y}",job=~"b|c"}[5m])) / on(job) group_left(version) max without (pod) (b_info) > bool 0.1
        or absent(c_seconds_bucket offset 1h) and histogram_quantile(0.99, d[10m:1m]) unless e"#;
    let want: BTreeSet<String> = ["a_total", "b_info", "c_seconds_bucket", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(metric_names(expr), want);
}

/// Every sample name the exposition can carry: OpenMetrics families with their suffixes
/// (`_total` of counters, `_bucket`/`_sum`/`_count` of histograms, `_info` of infos).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The PromQL of every panel target and the metrics that the dashboard's variables query.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push((
                format!("panel {:?}", panel["title"].as_str().unwrap()),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        let Some(query) = var["query"]["query"].as_str() else {
            continue;
        };
        // label_values(<selector>, <label>): the selector is the first argument.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(…)"));
        exprs.push((
            format!("variable {:?}", var["name"].as_str().unwrap()),
            inner.to_owned(),
        ));
    }
    assert!(exprs.len() > 10, "{exprs:?}");
    exprs
}

async fn scrape(op: &Operator) -> String {
    let (code, text) = op.admin("/metrics").await;
    assert_eq!(code, 200, "/metrics: {text}");
    text
}

/// Scrape until `/metrics` has this exact line (it may not answer yet at first).
async fn wait_for_line(op: &Operator, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, text) = op.admin("/metrics").await;
        if code == 200 && text.lines().any(|l| l == line) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no line {line:?} in /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running operator with a Ready object, a Stalled one and a blocked deletion exports every
/// metric that the dashboard and the alerts use, and its gauges say so.
#[tokio::test]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let w = World::start("monitoring").await;
    w.apply("ready", credential_spec(&number())).await;
    w.apply("stalled", sip_spec(&number(), "absent")).await;
    w.apply("blocked", credential_spec(&number())).await;
    w.wait_ready("ready").await;
    w.wait_ready("blocked").await;
    w.wait_reason("stalled", "Stalled", "SecretNotFound").await;
    w.mock
        .config(json!({"endpoints": {DELETE: {"error_rate": 1.0, "error_status": 503}}}))
        .await;
    w.delete("blocked").await;
    w.wait_reason("blocked", "Stalled", "DeletionBlocked").await;

    let text = wait_for_line(&w.operator, "oneinbox_operator_deletion_blocked_objects 1").await;
    for line in [
        "oneinbox_operator_watched_objects 3",
        "oneinbox_operator_objects{condition=\"Ready\"} 1",
        "oneinbox_operator_objects{condition=\"Stalled\"} 2",
        "oneinbox_operator_leader 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?}:\n{text}");
    }
    let exported = exported_names(&text);

    let mut used = Vec::new();
    for (alert, expr) in alerts(&rendered_rule()) {
        used.push((format!("alert {alert}"), expr));
    }
    used.extend(dashboard_exprs());
    let mut missing = Vec::new();
    for (what, expr) in &used {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what} selects no metric: {expr}");
        for name in names {
            if !exported.contains(&name) {
                missing.push(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the operator does not export:\n{}\n--- /metrics\n{text}",
        missing.join("\n")
    );
}

/// `run` refuses bad flags before it touches anything, naming the flag.
#[test]
fn run_refuses_invalid_flags_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--api-url", "http://127.0.0.1:9"],
            "--allow-insecure-http",
        ),
        (&["--concurrency", "0"], "--concurrency must be at least 1"),
        (
            &["--backoff-base", "2m", "--backoff-max", "1m"],
            "--backoff-base (120s) must not exceed --backoff-max (60s)",
        ),
        (
            &[
                "--leader-election",
                "--lease-duration",
                "10s",
                "--lease-grace",
                "10s",
            ],
            "--lease-grace (10s) must be shorter than --lease-duration (10s)",
        ),
        (&["--poll-interval", "10"], "missing unit"),
        (&["--worker-threads", "0"], "--worker-threads"),
    ];
    for (args, message) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_oneinbox-operator"))
            .arg("run")
            .args(*args)
            .env("ONEINBOX_API_KEY", API_KEY)
            .env("KUBECONFIG", Path::new("/nonexistent"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(message),
            "run {args:?} should fail with {message:?}: {}\n{stderr}",
            out.status
        );
        assert!(!stderr.contains(API_KEY), "the API key leaked: {stderr}");
    }
}

/// The leader gauge, end to end: 1 on the replica that holds the Lease, 0 on the standby, and
/// 1 on the standby once it has taken over (the input of the no-leader alert).
#[tokio::test]
async fn leader_gauge_follows_the_lease() {
    let mut w = World::start("leader-gauge").await;
    // Lease RBAC for the operator identity, in this namespace only.
    let rbac = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "oneinbox-operator-leases", "namespace": w.ns},
             "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "oneinbox-operator-leases", "namespace": w.ns},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "oneinbox-operator-leases"},
             "subjects": [{"kind": "ServiceAccount", "name": "oneinbox-operator", "namespace": "oneinbox-system"}]}
        ]
    });
    let file = std::env::temp_dir().join(format!("{}-lease-rbac.json", w.ns));
    std::fs::write(&file, rbac.to_string()).unwrap();
    kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    w.operator.kill();
    let args = [
        "--leader-election",
        "--lease-namespace",
        &w.ns,
        "--lease-duration",
        "4s",
        "--lease-grace",
        "2s",
    ];
    let mut a = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &args,
        &[("POD_NAME", "replica-a")],
        "-a",
    );
    wait_for_line(&a, "oneinbox_operator_leader 1").await;
    let b = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &args,
        &[("POD_NAME", "replica-b")],
        "-b",
    );
    let standby = wait_for_line(&b, "oneinbox_operator_leader 0").await;
    assert!(
        standby.contains("oneinbox_operator_build_info{"),
        "a standby is scraped like the leader:\n{standby}"
    );
    assert!(
        scrape(&a)
            .await
            .lines()
            .any(|l| l == "oneinbox_operator_leader 1"),
        "the leader still leads"
    );
    a.kill();
    wait_for_line(&b, "oneinbox_operator_leader 1").await;
}
