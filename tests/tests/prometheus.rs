//! A real Prometheus scrapes a real four-validator testnet with the shipped scrape
//! config, and every PromQL expression of the shipped Grafana dashboard returns data.
//! Prometheus is a prerequisite `make test` installs; without it this test fails and
//! says why, it never skips.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use stele_tests::{http, wait_connected, wait_for, Testnet};

fn repo() -> PathBuf {
    // Read at run time: the shared target directory may hold a test binary built from
    // another clone of the same sources, and a compile-time path would point there.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

fn prometheus_binary() -> PathBuf {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if std::path::Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "prometheus is not installed: `make test` installs Debian's `prometheus` package \
         (scripts/setup.sh); run `make setup`"
    );
}

/// Every `expr` in the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let path = repo().join("deploy/grafana/dashboards/stele.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard ships with the repository");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in v["panels"].as_array().expect("a panels list") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_and_every_dashboard_query_has_data() {
    let prom = prometheus_binary();
    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 10,
        "the dashboard has {} queries",
        exprs.len()
    );

    let mut net = Testnet::init(4, 4, "").expect("testnet init");
    net.start_all().expect("start");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("the testnet connects");

    // The shipped scrape config, pointed at this testnet's ports.
    let shipped = std::fs::read_to_string(repo().join("deploy/prometheus.yml"))
        .expect("deploy/prometheus.yml ships with the repository");
    let mut config = shipped.clone();
    for (i, v) in net.genesis.validators.iter().enumerate() {
        let from = format!("127.0.0.1:{}", 7200 + i);
        assert!(
            config.contains(&from),
            "deploy/prometheus.yml scrapes {from}"
        );
        config = config.replace(&from, &v.api_addr);
    }
    let dir = net.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
    let web = format!("127.0.0.1:{}", net.base_port + 190);
    let mut child = Command::new(prom)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
        .spawn()
        .expect("prometheus starts");

    let c = http();
    let query = |q: String| {
        let c = c.clone();
        let web = web.clone();
        async move {
            let r = c
                .get(format!("http://{web}/api/v1/query"))
                .query(&[("query", q.as_str())])
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            (v["status"] == "success").then_some(v["data"]["result"].clone())
        }
    };
    // Every node is scraped, several times (rate() needs two samples in its window).
    let up = wait_for(Duration::from_secs(60), "4 targets up", || {
        let q = query("sum(up{job=\"stele\"})".into());
        async move {
            let r = q.await?;
            let v = r[0]["value"][1].as_str()?.parse::<f64>().ok()?;
            (v >= 4.0).then_some(v)
        }
    })
    .await;
    let scraped = match up {
        Ok(_) => {
            wait_for(Duration::from_secs(30), "5 scrapes of every node", || {
                let q = query("min(count_over_time(up{job=\"stele\"}[1m]))".into());
                async move {
                    let r = q.await?;
                    let v = r[0]["value"][1].as_str()?.parse::<f64>().ok()?;
                    (v >= 5.0).then_some(())
                }
            })
            .await
        }
        Err(e) => Err(e),
    };
    let mut empty = Vec::new();
    if scraped.is_ok() {
        // The four node labels the dashboard groups by.
        let nodes = query("count by (node) (stele_consensus_height)".into())
            .await
            .expect("query");
        assert_eq!(nodes.as_array().map(Vec::len), Some(4), "{nodes}");
        for e in &exprs {
            match query(e.clone()).await {
                Some(r) if r.as_array().is_some_and(|a| !a.is_empty()) => {}
                other => empty.push(format!("{e} -> {other:?}")),
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    scraped.unwrap_or_else(|e| {
        panic!(
            "{e}; prometheus log:\n{}",
            stele_tests::read(&dir.join("prometheus.log"))
        )
    });
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
}
