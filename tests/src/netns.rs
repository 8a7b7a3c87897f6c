//! Network partitions between real validator processes: each validator in its own Linux
//! network namespace, joined to the test's root namespace by a veth pair whose host end is
//! a port of a bridge, and links cut with `ip link`. 127.0.0.1 cannot be partitioned; this
//! can. Building it needs root and iproute2 (`scripts/setup.sh` installs it); without them
//! [`Lab::new`] fails and says why, so a test that uses it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Namespaces are `stele-pt-<pid>-<i>`; links `spt<pid><kind><i>` (within IFNAMSIZ).
const NS_PREFIX: &str = "stele-pt-";
const LINK_PREFIX: &str = "spt";
/// Validators get 10.201.X.(i+1)/24, the root namespace 10.201.X.254; X is picked per run.
const NET: &str = "10.201";
const ROOT_HOST: u8 = 254;

/// Every namespace, bridge and veth of one test process, removed on drop (panics
/// included). Validator i is `10.201.X.(i+1)`; the root namespace reaches every address
/// that is not cut off, so the test sees every API during a split.
///
/// Topology: bridge `main` (holding the root's address) and bridge `side` (no address).
/// [`Lab::isolate`] sets a validator's host veth down. [`Lab::split`] moves one group's
/// host veths to `side` and routes their /32s there from the root namespace: the two
/// groups share no layer-2 segment, and the root namespace does not forward.
#[derive(Debug)]
pub struct Lab {
    ip: PathBuf,
    pid: u32,
    subnet: u8,
    n: usize,
    /// Namespaces made so far (dropped in reverse).
    made_ns: Vec<String>,
    /// Links made so far in the root namespace.
    made_links: Vec<String>,
    /// Validators whose host veth is on `side`.
    on_side: Vec<usize>,
}

impl Lab {
    /// n namespaces, veths and two bridges; removes what a crashed earlier run of this
    /// harness left behind first.
    pub fn new(n: usize) -> anyhow::Result<Lab> {
        assert!((1..ROOT_HOST as usize).contains(&n), "1 <= n < {ROOT_HOST}");
        let ip = find_ip()?;
        remove_leftovers(&ip);
        let pid = std::process::id();
        let subnet = free_subnet(&ip, pid)?;
        let mut lab = Lab {
            ip,
            pid,
            subnet,
            n,
            made_ns: Vec::new(),
            made_links: Vec::new(),
            on_side: Vec::new(),
        };
        lab.build().context(
            "building the network namespaces (needs root, or CAP_SYS_ADMIN and \
             CAP_NET_ADMIN, and iproute2)",
        )?;
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        for (bridge, kind) in [(self.main_bridge(), 'a'), (self.side_bridge(), 'b')] {
            self.ip(&["link", "add", &bridge, "type", "bridge"])?;
            self.made_links.push(bridge.clone());
            // A fixed address, so the bridge's MAC does not follow its ports around.
            let mac = format!(
                "02:53:{:02x}:{:02x}:{:02x}:0{kind}",
                (self.pid >> 16) & 0xff,
                (self.pid >> 8) & 0xff,
                self.pid & 0xff
            );
            self.ip(&["link", "set", &bridge, "address", &mac])?;
        }
        let cidr = format!("{}/24", self.root_addr());
        self.ip(&["addr", "add", &cidr, "dev", &self.main_bridge()])?;
        self.ip(&["link", "set", &self.main_bridge(), "up"])?;
        self.ip(&["link", "set", &self.side_bridge(), "up"])?;
        for i in 0..self.n {
            let ns = self.namespace(i);
            self.ip(&["netns", "add", &ns])?;
            self.made_ns.push(ns.clone());
            let (host, peer) = (self.host_veth(i), self.link('p', i));
            self.ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            self.made_links.push(host.clone());
            self.ip(&["link", "set", &peer, "netns", &ns])?;
            self.ip(&["link", "set", &host, "master", &self.main_bridge()])?;
            self.ip(&["link", "set", &host, "up"])?;
            let cidr = format!("{}/24", self.addr(i));
            self.ip(&["-n", &ns, "addr", "add", &cidr, "dev", &peer])?;
            self.ip(&["-n", &ns, "link", "set", &peer, "up"])?;
            self.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let lo = self.ip(&["-n", &ns, "-o", "link", "show", "lo"])?;
            if !lo.contains(",UP") {
                bail!("the loopback of namespace {ns} is not up after `ip link set lo up`: {lo}");
            }
        }
        Ok(())
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Validator i's address, inside its namespace.
    pub fn addr(&self, i: usize) -> String {
        assert!(i < self.n, "validator {i} of {}", self.n);
        format!("{NET}.{}.{}", self.subnet, i + 1)
    }

    /// The root namespace's address on the main bridge.
    pub fn root_addr(&self) -> String {
        format!("{NET}.{}.{ROOT_HOST}", self.subnet)
    }

    /// The top-level testnet config lines that put validator i at [`Lab::addr`]`(i)`.
    pub fn testnet_hosts(&self) -> String {
        let hosts: Vec<String> = (0..self.n)
            .map(|i| format!("\"{}\"", self.addr(i)))
            .collect();
        format!("hosts = [{}]\n", hosts.join(", "))
    }

    pub fn namespace(&self, i: usize) -> String {
        format!("{NS_PREFIX}{}-{i}", self.pid)
    }

    /// The words that run a program inside validator i's namespace (`ip netns exec` execs
    /// it, so the child's pid is the program's).
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            self.ip.display().to_string(),
            "netns".into(),
            "exec".into(),
            self.namespace(i),
        ]
    }

    /// Cuts validator i off from everyone (the others and the test): its host veth goes
    /// down, so its namespace sees no carrier.
    pub fn isolate(&mut self, i: usize) -> anyhow::Result<()> {
        self.ip(&["link", "set", &self.host_veth(i), "down"])?;
        Ok(())
    }

    /// Undoes [`Lab::isolate`].
    pub fn reconnect(&mut self, i: usize) -> anyhow::Result<()> {
        self.ip(&["link", "set", &self.host_veth(i), "up"])?;
        self.flush_neighbours()
    }

    /// Splits the validators into `group` and the rest: `group`'s host veths move to the
    /// side bridge, and the root namespace reaches them there by /32 routes.
    pub fn split(&mut self, group: &[usize]) -> anyhow::Result<()> {
        assert!(self.on_side.is_empty(), "already split: {:?}", self.on_side);
        for &i in group {
            self.ip(&[
                "link",
                "set",
                &self.host_veth(i),
                "master",
                &self.side_bridge(),
            ])?;
            self.on_side.push(i);
            let dst = format!("{}/32", self.addr(i));
            let src = self.root_addr();
            self.ip(&[
                "route",
                "add",
                &dst,
                "dev",
                &self.side_bridge(),
                "src",
                &src,
            ])?;
        }
        self.flush_neighbours()
    }

    /// Undoes [`Lab::split`].
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for i in std::mem::take(&mut self.on_side) {
            let dst = format!("{}/32", self.addr(i));
            self.ip(&["route", "del", &dst, "dev", &self.side_bridge()])?;
            self.ip(&[
                "link",
                "set",
                &self.host_veth(i),
                "master",
                &self.main_bridge(),
            ])?;
        }
        self.flush_neighbours()
    }

    /// After a topology change, forget cached MACs everywhere (a validator's entry for
    /// the root names the other bridge's MAC), so every host asks again at once.
    fn flush_neighbours(&self) -> anyhow::Result<()> {
        for i in 0..self.n {
            self.ip(&["-n", &self.namespace(i), "neigh", "flush", "all"])?;
        }
        for b in [self.main_bridge(), self.side_bridge()] {
            self.ip(&["neigh", "flush", "dev", &b])?;
        }
        Ok(())
    }

    fn link(&self, kind: char, i: usize) -> String {
        format!("{LINK_PREFIX}{}{kind}{i}", self.pid)
    }

    fn host_veth(&self, i: usize) -> String {
        assert!(i < self.n, "validator {i} of {}", self.n);
        self.link('h', i)
    }

    fn main_bridge(&self) -> String {
        format!("{LINK_PREFIX}{}a", self.pid)
    }

    fn side_bridge(&self) -> String {
        format!("{LINK_PREFIX}{}b", self.pid)
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run_ip(&self.ip, args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and so its pair; the
        // explicit link deletions catch what a half-built lab left.
        for ns in self.made_ns.iter().rev() {
            if let Err(e) = run_ip(&self.ip, &["netns", "del", ns]) {
                eprintln!("netns cleanup: {e:#}");
            }
        }
        for link in self.made_links.iter().rev() {
            if link_exists(&self.ip, link) {
                if let Err(e) = run_ip(&self.ip, &["link", "del", link]) {
                    eprintln!("netns cleanup: {e:#}");
                }
            }
        }
    }
}

/// `ip`, wherever iproute2 put it (root's PATH may lack /usr/sbin under cargo).
fn find_ip() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
        .context(
            "`ip` (iproute2) is not installed: the partition tests need it to build network \
             namespaces; run scripts/setup.sh (`make setup`) or `apt-get install iproute2`",
        )
}

fn run_ip(ip: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(ip)
        .args(args)
        .output()
        .with_context(|| format!("running {}", ip.display()))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn link_exists(ip: &Path, name: &str) -> bool {
    run_ip(ip, &["link", "show", name]).is_ok()
}

/// The pid in a name `<prefix><pid><rest>`, when it is one of ours.
fn owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let ours = if prefix == NS_PREFIX {
        tail.starts_with('-')
    } else {
        tail.starts_with(['a', 'b', 'h', 'p'])
    };
    if ours {
        digits.parse().ok()
    } else {
        None
    }
}

/// Whether namespaces and links named for `pid` are left over: the process is gone, or
/// it is us (a pid reused after a crash).
fn stale(pid: u32) -> bool {
    pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces and links of runs that died without cleaning up. Best effort:
/// what cannot be removed makes building fail later, with the reason.
fn remove_leftovers(ip: &Path) {
    let names = run_ip(ip, &["netns", "list"]).unwrap_or_default();
    for ns in names.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner(ns, NS_PREFIX).is_some_and(stale) {
            eprintln!("netns: removing namespace {ns} left by an earlier run");
            let _ = run_ip(ip, &["netns", "del", ns]);
        }
    }
    let links = run_ip(ip, &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "7: spt123h0@if6: <...>" or "5: spt123a: <...>"
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if owner(name, LINK_PREFIX).is_some_and(stale) && link_exists(ip, name) {
            eprintln!("netns: removing link {name} left by an earlier run");
            let _ = run_ip(ip, &["link", "del", name]);
        }
    }
}

/// A third octet for 10.201.X.0/24 that no address in the root namespace uses.
fn free_subnet(ip: &Path, pid: u32) -> anyhow::Result<u8> {
    let addrs = run_ip(ip, &["-o", "-4", "addr", "show"])?;
    (0..250u32)
        .map(|k| ((pid + k) % 250 + 1) as u8)
        .find(|x| !addrs.contains(&format!(" {NET}.{x}.")))
        .context("every 10.201.X.0/24 is in use in the root namespace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_this_harness_have_an_owner() {
        assert_eq!(owner("stele-pt-123-0", NS_PREFIX), Some(123));
        assert_eq!(owner("spt123h0", LINK_PREFIX), Some(123));
        assert_eq!(owner("spt123a", LINK_PREFIX), Some(123));
        assert_eq!(owner("sptx", LINK_PREFIX), None);
        assert_eq!(owner("spt12z", LINK_PREFIX), None);
        assert_eq!(owner("stele-pt-12x", NS_PREFIX), None);
        assert_eq!(owner("eth0", LINK_PREFIX), None);
    }
}
