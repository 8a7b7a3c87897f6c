//! The harness of the workspace-level tests: real `stele-node` processes on 127.0.0.1,
//! made with `stele-node testnet init` in a temporary directory and driven over HTTP as a
//! user would. Every wait is on a condition with a deadline, never a bare sleep.

pub mod beside;
pub mod chain;
pub mod lazyfs;
pub mod netns;
pub mod torsion;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stele_types::api::StatusResponse;
use stele_types::Genesis;

/// Where cargo put the workspace's binaries: beside the test binary's `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let deps = exe.parent().expect("in target/<profile>/deps");
    deps.parent().expect("in target/<profile>").to_path_buf()
}

/// A workspace binary, which `make test` builds before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p stele-node -p stele-client`, which `make test` does)",
        p.display()
    );
    p
}

/// Ports for one testnet: a block of 200 (QUIC on base + i, HTTP on base + 100 + i) whose
/// ports are free now, with the lock that holds the block for the testnet's life. Blocks
/// lie in 10,000..32,000, below Linux's ephemeral range (32,768 and up), so no outgoing
/// connection of this machine can hold one; the pid spreads concurrent test processes
/// over the range.
///
/// The lock is an advisory lock on `$TMPDIR/stele-test-ports/BASE.lock`, released when
/// the file closes (with the testnet, or with the process however it ends). A probe
/// alone left a window: nextest runs several test processes at once, and two whose pids
/// start them at the same block could both find it free before either bound a port.
fn reserve_ports() -> (u16, std::fs::File) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const BLOCKS: u16 = 110;
    let dir = std::env::temp_dir().join("stele-test-ports");
    std::fs::create_dir_all(&dir).expect("a directory for the port locks");
    let start = (std::process::id() % u32::from(BLOCKS)) as u16;
    for _ in 0..BLOCKS {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 10_000 + (start + slot) % BLOCKS * 200;
        let path = dir.join(format!("{base}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => panic!("locking {}: {e}", path.display()),
        }
        let free = (0..100u16).all(|i| {
            std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok()
        });
        if free {
            return (base, lock);
        }
    }
    panic!("no block of 200 free ports in 10,000..32,000 that no other test holds");
}

/// A testnet of real validator processes in a temporary directory.
#[derive(Debug)]
pub struct Testnet {
    pub dir: tempfile::TempDir,
    pub genesis: Genesis,
    pub base_port: u16,
    procs: Vec<Option<Child>>,
    /// Holds `base_port`'s block of ports against other test processes.
    _ports: std::fs::File,
}

impl Testnet {
    /// `testnet init` with n validators and `params` (TOML lines for the `[params]` table).
    pub fn init(n: usize, accounts: usize, params: &str) -> anyhow::Result<Testnet> {
        Self::init_with(n, accounts, params, "host = \"127.0.0.1\"\n")
    }

    /// [`Testnet::init`] with `top` (TOML lines for the top level of the testnet config,
    /// such as `hosts = [...]` and `listen_host`) in place of `host = "127.0.0.1"`.
    pub fn init_with(
        n: usize,
        accounts: usize,
        params: &str,
        top: &str,
    ) -> anyhow::Result<Testnet> {
        let dir = tempfile::tempdir()?;
        let (base_port, ports) = reserve_ports();
        let config = dir.path().join("testnet.toml");
        std::fs::write(
            &config,
            format!(
                "chain_id = \"stele-test\"\nvalidators = {n}\n{top}\
                 base_port = {base_port}\naccounts = {accounts}\nbalance = 1000000\n\
                 sync = true\n[params]\n{params}\n"
            ),
        )?;
        let out = dir.path().join("net");
        let st = Command::new(bin("stele-node"))
            .args(["testnet", "init", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("testnet init failed: {st}");
        }
        let genesis = Genesis::load(&out.join("genesis.json"))?;
        Ok(Testnet {
            dir,
            genesis,
            base_port,
            procs: (0..n).map(|_| None).collect(),
            _ports: ports,
        })
    }

    /// The testnet directory (`genesis.json`, `nodeI/`, `clients/`).
    pub fn net_dir(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.net_dir().join(format!("node{i}"))
    }

    pub fn n(&self) -> usize {
        self.procs.len()
    }

    /// Sets `key = value` (TOML) in validator i's node.toml, for its next start.
    pub fn configure(&self, i: usize, key: &str, value: &str) -> anyhow::Result<()> {
        let path = self.node_dir(i).join("node.toml");
        let text = std::fs::read_to_string(&path)?;
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.split('=').next().map(str::trim) != Some(key))
            .map(str::to_owned)
            .collect();
        // Top-level keys go before any table.
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .unwrap_or(lines.len());
        lines.insert(at, format!("{key} = {value}"));
        std::fs::write(&path, lines.join("\n") + "\n")?;
        Ok(())
    }

    /// The HTTP base URL of validator i.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.genesis.validators[i].api_addr)
    }

    pub fn urls(&self) -> Vec<String> {
        (0..self.n()).map(|i| self.url(i)).collect()
    }

    /// Starts validator i with extra arguments (`--recover`).
    pub fn start_with(&mut self, i: usize, extra: &[&str]) -> anyhow::Result<()> {
        self.start_wrapped(i, &[], &bin("stele-node"), extra)
    }

    /// Starts validator i from `program` with extra arguments, behind `wrapper` when it
    /// is not empty (`["ip", "netns", "exec", "ns0"]`): the wrapper's first word is run,
    /// with the rest of it, then the program and its arguments.
    pub fn start_wrapped(
        &mut self,
        i: usize,
        wrapper: &[&str],
        program: &Path,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.node_dir(i).join("node.log"))?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(self.node_dir(i).join("node.toml"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning stele-node")?;
        self.procs[i] = Some(child);
        Ok(())
    }

    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_with(i, &[])
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.n() {
            self.start(i)?;
        }
        Ok(())
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let mut c = self.procs[i].take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of validator i, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(|c| c.id())
    }

    /// Whether validator i's process has exited, and how.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.procs[i]
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The tail of validator i's log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.node_dir(i).join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("a reqwest client")
}

/// `GET /status` of one node, or the error.
pub async fn status(c: &reqwest::Client, url: &str) -> anyhow::Result<StatusResponse> {
    Ok(c.get(format!("{url}/status"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Polls `check` until it returns `Some`, or fails after `limit` with `what`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every listed node answers `/status` and has a quorum of peers.
pub async fn wait_connected(net: &Testnet, nodes: &[usize], limit: Duration) -> anyhow::Result<()> {
    let q = net.genesis.validator_set().quorum() as u32;
    wait_peers(net, nodes, q - 1, limit).await
}

/// Waits until each of `nodes` is connected to at least `peers` other validators.
pub async fn wait_peers(
    net: &Testnet,
    nodes: &[usize],
    peers: u32,
    limit: Duration,
) -> anyhow::Result<()> {
    let c = http();
    wait_for(limit, "nodes to connect", || {
        let c = c.clone();
        let urls: Vec<String> = nodes.iter().map(|i| net.url(*i)).collect();
        async move {
            for u in urls {
                match status(&c, &u).await {
                    Ok(s) if s.peers_connected >= peers => {}
                    _ => return None,
                }
            }
            Some(())
        }
    })
    .await
}

/// Reads a file as text, for tests that inspect what the node wrote.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
