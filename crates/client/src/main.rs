//! `stele`: the command line over stele-client.
//!
//! One function per subcommand, each printing a human answer or, with `--json`, one JSON
//! document on stdout. Exit status 0 means the thing asked for holds (a tx applied `ok`,
//! a proof verified); anything else is 1, with the reason on stderr. Network setup,
//! signing, quorums and proofs all live in the library, so tests and the benchmark use
//! exactly what the CLI uses.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use serde_json::json;
use stele_client::{
    testnet_account_key, testnet_genesis, verify_block, verify_certified, Client, ClientConfig,
    ClientError, Confirmed, Node, ReceiptChecker, ReceiptTally, TxId, Verdict,
};
use stele_crypto::{Digest, KeyPair, PublicKey};
use stele_types::api::{BlockResponse, TxResponse, TxStatus};
use stele_types::{Amount, Genesis, Height, Nonce, Op, Receipt, RecordKey, RecordValue, TxResult};

const EXAMPLES: &str = "\
Examples (against the testnet that `make testnet` writes to ./testnet and starts):

  stele status                                     every validator's height, view and health
  stele keygen --out alice.pem                     a new account key; prints its public key
  stele submit transfer --to <pubkey> --amount 50  from testnet/clients/account0.pem
  stele submit put --key greeting --value hello --key-file testnet/clients/account1.pem
  stele account <pubkey>                           balance and next nonce
  stele tx <hash> --receipts-out r.json            the outcome and the validators' signed receipts
  stele block 12 --out block12.json                a committed block with its commit certificate
  stele verify --genesis testnet/genesis.json --block block12.json --tx <hash> --receipts r.json
                                                   offline proof: included, and applied with f+1 receipts

Against other nodes: stele --nodes http://10.0.0.1:7200,http://10.0.0.2:7200 --genesis genesis.json status

A result is believed only when f+1 validators signed matching receipts, so a single
lying validator cannot fool the client. Exit status: 0 when the command's claim holds
(tx applied `ok`, tx outcome agreed by f+1, proof verified), 1 otherwise.";

#[derive(Debug, Parser)]
#[command(
    name = "stele",
    version,
    about = "Client for a Stele ledger: send transactions, query validators, verify proofs offline",
    long_about = "Client for a Stele ledger, a permissioned PBFT replicated ledger.\n\nIt signs \
                  transactions with your key, sends them to several validators, and reports a \
                  result only once f+1 validators have signed matching receipts. `verify` checks \
                  a block file and receipts with nothing but the genesis file.",
    after_long_help = EXAMPLES
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
struct Global {
    /// Testnet directory written by `stele-node testnet init`: its genesis.json names the
    /// validators and their API addresses, clients/account0.pem is the default sender key
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "./testnet",
        env = "STELE_TESTNET"
    )]
    testnet: PathBuf,

    /// Validator API URLs to use instead of the genesis file's addresses (needs --genesis)
    #[arg(
        long,
        global = true,
        value_name = "URL,...",
        value_delimiter = ',',
        env = "STELE_NODES"
    )]
    nodes: Vec<String>,

    /// Genesis file (chain id and validator keys) [default: DIR/genesis.json]
    #[arg(long, global = true, value_name = "FILE", env = "STELE_GENESIS")]
    genesis: Option<PathBuf>,

    /// Print one machine-readable JSON document on stdout instead of text
    #[arg(long, global = true)]
    json: bool,

    /// Give up waiting for receipts after this many seconds
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new account key (PKCS#8 PEM, mode 0600) and print its public key
    Keygen {
        /// Where to write the key; an existing file is never overwritten
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a transaction, send it, and wait for f+1 matching signed receipts
    #[command(subcommand)]
    Submit(SubmitOp),
    /// Show every validator: height, view, whether active, block hash, peers, sync, recovery
    Status,
    /// Show an account's balance and next nonce, as each validator sees it
    Account {
        /// The account's public key (64 hex digits)
        #[arg(value_name = "PUBKEY")]
        key: PublicKey,
    },
    /// Fetch a committed block with its commit certificate, checked against genesis
    Block {
        /// The height
        height: u64,
        /// Write the block (JSON, the input of `stele verify --block`) to this file
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Ask every validator about a transaction and check their signed receipts
    Tx {
        /// The tx hash (64 hex digits), as `stele submit` printed it
        #[arg(value_name = "HASH")]
        hash: Digest,
        /// Write the verified receipts (JSON, the input of `stele verify --receipts`)
        #[arg(long, value_name = "FILE")]
        receipts_out: Option<PathBuf>,
    },
    /// Verify offline that a block holds a tx, and with receipts that it was applied
    #[command(
        long_about = "Verify offline, with only the genesis file, that a block file (from `stele \
                      block H --out FILE`) is committed: its body matches its digest and q \
                      validators signed COMMIT for it. Then that the tx is in it (Merkle proof \
                      against the header's tx_root). This shows the tx was included. With \
                      --receipts (from `stele tx HASH --receipts-out FILE`), f+1 valid receipts \
                      agreeing on this block and position show it was applied, and how. No \
                      network is used."
    )]
    Verify {
        /// The block file (a `GET /blocks/{height}` answer)
        #[arg(long, value_name = "FILE")]
        block: PathBuf,
        /// The tx hash to look for
        #[arg(long, value_name = "HASH")]
        tx: Digest,
        /// A JSON array of signed receipts for the tx
        #[arg(long, value_name = "FILE")]
        receipts: Option<PathBuf>,
    },
    /// Load generator: pre-sign N transfers, send them open-loop, measure tx/s and latency
    #[command(long_about = BENCH_ABOUT, after_long_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
}

const BENCH_ABOUT: &str = "\
Load generator and benchmark.

It loads accounts K..K+M (K is --first-account, 0 by default) from DIR/clients/accountJ.pem \
(the testnet's funded accounts), asks the validators for each account's next nonce, and pre-signs N transfers of 1 between those \
accounts (round robin, contiguous nonces per account) with a progress bar. Then it measures \
the verify ceiling and sends the txs in batches of B (POST /txs?wait=true to f+1 validators, \
which relay to the rest): with --rate R open loop, batch k due k*B/R seconds after the start \
whatever came back, or without --rate as fast as the nodes take them (closed loop). At most \
about 60 txs per account are outstanding (the genesis nonce_window and \
max_pending_per_sender), so more accounts allow more load.

Each tx's latency runs from its *scheduled* send time to f+1 matching, verified, signed \
receipts, so time spent behind schedule counts (no coordinated omission). It prints offered \
and achieved (sent) rate, committed tx/s counting only `ok` results, p50/p90/p99/max latency \
(hdrhistogram), and the verify ceiling: this machine's ed25519 batch-verify rate (batches of \
64 real tx signatures on all cores, measured before the load) divided by n, the most tx/s \
possible when every validator verifies every tx once and all validators share this machine.

The run is INVALID (exit status 1) if any node's /status `sync` is off, or any node's \
stele_sig_verified_total grew by less than the txs committed during the run.

--sweep runs several rates (given, or by default 10%..80% of the ceiling) and writes \
DIR/bench.csv and DIR/bench.svg (latency versus committed throughput) under --out DIR.";

const BENCH_EXAMPLES: &str = "\
Examples:
  stele bench --txs 20000 --accounts 64               as fast as the nodes take them
  stele bench --txs 20000 --accounts 64 --rate 5000   open loop at 5,000 tx/s
  stele bench --txs 20000 --accounts 64 --json        one JSON object (throughput, ceiling, ...)
  stele bench --txs 20000 --rate 2000 --latency-log lat.csv
                                                      each tx's send time and latency, as CSV
  stele bench --txs 10000 --sweep 1000,2000,4000 --out docs/bench
                                                      docs/bench/bench.csv and bench.svg";

#[derive(Debug, Args)]
struct BenchArgs {
    /// Transactions to send (per rate with --sweep)
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    txs: usize,
    /// Funded accounts to send from (DIR/clients/account0.pem ..), at least 2
    #[arg(long, value_name = "M", default_value_t = 64)]
    accounts: usize,
    /// The first of the M accounts (DIR/clients/accountK.pem ..): leaves the ones before
    /// it to other load running beside the bench (their nonces would collide)
    #[arg(long, value_name = "K", default_value_t = 0)]
    first_account: usize,
    /// Offered load in tx/s, open loop; without it, as fast as the nodes take them
    #[arg(long, value_name = "R", conflicts_with = "sweep")]
    rate: Option<f64>,
    /// Transactions per POST /txs
    #[arg(long, value_name = "B", default_value_t = stele_client::bench::DEFAULT_BATCH)]
    batch: usize,
    /// Validators each batch goes to with ?wait=true [default: f+1, the least that
    /// returns f+1 receipts; the others get the txs by relay]
    #[arg(long, value_name = "K")]
    fanout: Option<usize>,
    /// Txs outstanding at most [default: what the per-sender limits allow]
    #[arg(long, value_name = "T")]
    in_flight: Option<usize>,
    /// Run each of these rates in turn (tx/s; bare: 10%..80% of the verify ceiling) and
    /// write bench.csv and bench.svg under --out
    #[arg(long, value_name = "R1,R2,...", value_delimiter = ',', num_args = 0..)]
    sweep: Option<Vec<f64>>,
    /// Where --sweep writes bench.csv and bench.svg
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Also write every confirmed tx's scheduled send time (seconds from its run's
    /// start) and latency (ms) to FILE as CSV: to see when the slow ones were sent
    #[arg(long, value_name = "FILE")]
    latency_log: Option<PathBuf>,
    /// Seconds spent measuring the verify ceiling before the load
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    ceiling_secs: f64,
    /// Each transfer creates a new account (the genesis's min_new_account to a fresh
    /// key) instead of paying the next sender: the state grows by one account per tx
    #[arg(long)]
    new_accounts: bool,
}

#[derive(Debug, Subcommand)]
enum SubmitOp {
    /// Move an amount to another account (creating it if the amount is at least the
    /// genesis minimum)
    Transfer {
        /// The recipient's public key (64 hex digits)
        #[arg(long, value_name = "PUBKEY")]
        to: PublicKey,
        /// How much
        #[arg(long, value_name = "N")]
        amount: u64,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Store a record under a key in the sender's namespace
    Put {
        /// The record key (text, at most 64 bytes; hex with --hex)
        #[arg(long, value_name = "K")]
        key: String,
        /// The value (text, at most 1024 bytes; hex with --hex)
        #[arg(long, value_name = "V")]
        value: String,
        /// Read --key and --value as hex
        #[arg(long)]
        hex: bool,
        #[command(flatten)]
        opts: SubmitOpts,
    },
}

#[derive(Debug, Args)]
struct SubmitOpts {
    /// The sender's private key file [default: DIR/clients/account0.pem]
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Use this nonce instead of asking the validators for the account's next one
    #[arg(long, value_name = "N")]
    nonce: Option<u64>,
    /// Send to this many validators [default: q = n - f]
    #[arg(long, value_name = "K")]
    fanout: Option<usize>,
}

/// Where answers go: text for people, one JSON document for scripts.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    fn emit(&self, value: &impl Serialize, human: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", human());
        }
        Ok(())
    }

    /// Progress for people; silent with --json so stdout stays one document.
    fn note(&self, msg: impl FnOnce() -> String) {
        if !self.json {
            eprintln!("{}", msg());
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    {
        // `target=level` directives from RUST_LOG (`warn,stele_client=debug`), else warn.
        use tracing_subscriber::filter::Targets;
        use tracing_subscriber::prelude::*;
        let targets = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse::<Targets>().ok())
            .unwrap_or_else(|| Targets::new().with_default(tracing::Level::WARN));
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .finish()
            .with(targets)
            .init();
    }
    let out = Out {
        json: cli.global.json,
    };
    match run(cli, out).await {
        Ok(code) => code,
        Err(e) => {
            let msg = render(&e);
            if out.json {
                println!("{}", json!({ "error": msg }));
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: some library errors already
/// print their source, and anyhow's `{:#}` would print it again.
fn render(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

async fn run(cli: Cli, out: Out) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Keygen { out: path } => keygen(&path, out),
        Command::Submit(op) => submit(g, op, out).await,
        Command::Status => status(&connect(g, None)?, out).await,
        Command::Account { key } => account(&connect(g, None)?, &key, out).await,
        Command::Block { height, out: file } => {
            block(&connect(g, None)?, Height(height), file.as_deref(), out).await
        }
        Command::Tx { hash, receipts_out } => {
            tx(&connect(g, None)?, &hash, receipts_out.as_deref(), out).await
        }
        Command::Verify {
            block,
            tx,
            receipts,
        } => verify(g, &block, &tx, receipts.as_deref(), out),
        Command::Bench(args) => bench(g, &args, out).await,
    }
}

fn genesis_path(g: &Global) -> PathBuf {
    g.genesis
        .clone()
        .unwrap_or_else(|| testnet_genesis(&g.testnet))
}

/// The client the global flags describe: --nodes with --genesis, or the genesis file's
/// own addresses (--genesis alone, or the testnet directory).
fn connect(g: &Global, fanout: Option<usize>) -> Result<Client> {
    let wait = Duration::from_secs(g.timeout.max(1));
    let config = ClientConfig {
        wait_timeout: wait,
        request_timeout: ClientConfig::default().request_timeout.min(wait),
        fanout,
        ..ClientConfig::default()
    };
    if !g.nodes.is_empty() {
        let Some(genesis) = &g.genesis else {
            bail!("--nodes needs --genesis FILE: the genesis file says which keys may sign receipts and blocks");
        };
        return Client::from_nodes(&g.nodes, genesis, config)
            .with_context(|| format!("setting up the client for {}", g.nodes.join(",")));
    }
    if let Some(genesis) = &g.genesis {
        let loaded = Genesis::load(genesis)?;
        let urls: Vec<String> = loaded
            .validators
            .iter()
            .map(|v| format!("http://{}", v.api_addr))
            .collect();
        return Ok(Client::new(loaded, &urls, config)?);
    }
    Ok(Client::from_testnet(&g.testnet, config)?)
}

fn keygen(path: &Path, out: Out) -> Result<ExitCode> {
    let key = KeyPair::generate();
    key.save(path)?;
    out.emit(
        &json!({ "public_key": key.public().to_hex(), "file": path.display().to_string() }),
        || {
            format!(
                "{}\n(wrote the private key to {}, mode 0600; the line above is the public key)",
                key.public(),
                path.display()
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn submit(g: &Global, op: SubmitOp, out: Out) -> Result<ExitCode> {
    let (op, opts) = match op {
        SubmitOp::Transfer { to, amount, opts } => (
            Op::Transfer {
                to,
                amount: Amount(amount),
            },
            opts,
        ),
        SubmitOp::Put {
            key,
            value,
            hex,
            opts,
        } => {
            let bytes = |s: &str, what: &str| -> Result<Vec<u8>> {
                if hex {
                    hex::decode(s).with_context(|| format!("--{what} is not hex: {s:?}"))
                } else {
                    Ok(s.as_bytes().to_vec())
                }
            };
            let key = RecordKey::new(bytes(&key, "key")?).context("--key is too long")?;
            let value = RecordValue::new(bytes(&value, "value")?).context("--value is too long")?;
            (Op::Put { key, value }, opts)
        }
    };
    let client = connect(g, opts.fanout)?;
    let key_file = opts
        .key_file
        .clone()
        .unwrap_or_else(|| testnet_account_key(&g.testnet, 0));
    let signer = KeyPair::load(&key_file).with_context(|| {
        format!(
            "loading the sender key (give one with --key-file FILE, or make one with `stele \
             keygen --out FILE`); tried {}",
            key_file.display()
        )
    })?;
    let sender = signer.public();
    let nonce = match opts.nonce {
        Some(n) => Nonce(n),
        None => client
            .next_nonce(&sender)
            .await
            .with_context(|| format!("finding the next nonce of {sender}"))?,
    };
    let tx = client.sign(&signer, nonce, op)?;
    let hash = stele_types::tx_hash(&tx);
    out.note(|| {
        format!(
            "tx {hash} (sender {sender}, nonce {nonce}): sending to {} validator(s), waiting \
             for {} matching signed receipts...",
            client.fanout(),
            client.receipts_needed()
        )
    });
    let c = client
        .submit_and_wait(&tx)
        .await
        .with_context(|| format!("submitting tx {hash}"))?;
    let doc = json!({
        "hash": hash,
        "sender": sender,
        "nonce": nonce,
        "height": c.height,
        "index": c.index,
        "block_digest": c.block_digest,
        "result": c.result,
        "receipts": c.receipts.len(),
        "needed": client.receipts_needed(),
    });
    out.emit(&doc, || {
        format!(
            "tx {hash}\n{}\n{} matching signed receipts (f+1 = {} needed)",
            describe_outcome(&c),
            c.receipts.len(),
            client.receipts_needed()
        )
    })?;
    Ok(if c.result == TxResult::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe_outcome(c: &Confirmed) -> String {
    if c.result == TxResult::StaleNonce {
        format!(
            "not applied: stale_nonce (its nonce was used by tx {} at height {}, index {}, \
             block {})",
            c.used_by
                .as_ref()
                .map_or_else(|| "?".to_owned(), |t| stele_types::tx_hash(t).to_string()),
            c.height,
            c.index,
            c.block_digest
        )
    } else {
        format!(
            "applied: {} at height {} (index {}), block {}",
            c.result.as_str(),
            c.height,
            c.index,
            c.block_digest
        )
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn validator_label(node: &Node) -> String {
    node.validator
        .map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// Left-aligned columns, widths from the content.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn status(client: &Client, out: Out) -> Result<ExitCode> {
    let answers = client.statuses().await;
    let vs = client.validators();
    let reachable = answers.iter().filter(|(_, r)| r.is_ok()).count();
    let doc = json!({
        "chain_id": client.chain_id(),
        "genesis": client.chain().genesis(),
        "n": vs.n(),
        "f": vs.f(),
        "quorum": vs.quorum(),
        "validators": answers.iter().map(|(node, r)| json!({
            "url": node.url,
            "validator": node.validator,
            "status": r.as_ref().ok(),
            "error": r.as_ref().err().map(|e| e.to_string()),
        })).collect::<Vec<_>>(),
    });
    out.emit(&doc, || {
        let mut rows = vec![[
            "ID",
            "HEIGHT",
            "VIEW",
            "ACTIVE",
            "BLOCK",
            "PEERS",
            "SYNC",
            "RECOVERING",
            "MEMPOOL",
            "STATE ROOT",
            "URL",
        ]
        .map(String::from)
        .to_vec()];
        let mut notes = Vec::new();
        for (node, r) in &answers {
            match r {
                Ok(s) => {
                    if node.validator.is_some_and(|v| v != s.validator) {
                        notes.push(format!(
                            "{node} says it is validator {}: check the genesis file",
                            s.validator
                        ));
                    }
                    if (&s.chain_id, &s.genesis) != (client.chain_id(), client.chain().genesis()) {
                        notes.push(format!(
                            "{node} runs chain {} with genesis {}, the genesis file given here \
                             is {}: it is another chain's, and nothing signed with it verifies \
                             there",
                            s.chain_id,
                            s.genesis,
                            client.chain()
                        ));
                    }
                    rows.push(vec![
                        s.validator.to_string(),
                        s.height.to_string(),
                        s.view.to_string(),
                        yes_no(s.active).to_owned(),
                        s.block_hash.to_hex()[..12].to_owned(),
                        s.peers_connected.to_string(),
                        if s.sync { "on" } else { "OFF" }.to_owned(),
                        yes_no(s.recovering).to_owned(),
                        s.mempool_txs.to_string(),
                        s.state_root.map_or_else(
                            || "-".to_owned(),
                            |r| format!("{}@{}", &r.root.to_hex()[..12], r.height),
                        ),
                        node.url.clone(),
                    ]);
                    if let Some(p) = &s.snapshot_sync {
                        notes.push(format!(
                            "validator {} is starting from a snapshot at height {}: {} of {} \
                             chunks, {} bytes, from {} validators{}",
                            s.validator,
                            p.height,
                            p.chunks_done,
                            p.chunks_done + p.chunks_left,
                            p.bytes,
                            p.peers,
                            p.eta_seconds
                                .map_or_else(String::new, |e| format!(", about {e} s left"))
                        ));
                    }
                }
                Err(e) => {
                    rows.push(vec![
                        validator_label(node),
                        "unreachable".to_owned(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        node.url.clone(),
                    ]);
                    notes.push(e.to_string());
                }
            }
        }
        let mut text = format!(
            "chain {}: {} validators, f = {}, quorum q = {}; {reachable} of {} answered\n{}",
            client.chain(),
            vs.n(),
            vs.f(),
            vs.quorum(),
            answers.len(),
            table(&rows)
        );
        for n in notes {
            text.push_str("\n  ");
            text.push_str(&n);
        }
        text
    })?;
    Ok(if reachable > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn account(client: &Client, key: &PublicKey, out: Out) -> Result<ExitCode> {
    let answers = client.accounts(key).await;
    let best = answers
        .iter()
        .filter_map(|(n, r)| match r {
            Ok(Some(a)) => Some((n, a)),
            _ => None,
        })
        .max_by_key(|(_, a)| a.height);
    let answered = answers.iter().filter(|(_, r)| r.is_ok()).count();
    let doc = json!({
        "key": key,
        "account": best.map(|(_, a)| a),
        "from": best.map(|(n, _)| n.url.clone()),
        "answers": answers.iter().map(|(node, r)| json!({
            "url": node.url,
            "validator": node.validator,
            "account": r.as_ref().ok().and_then(|a| a.as_ref()),
            "error": r.as_ref().err().map(|e| e.to_string()),
        })).collect::<Vec<_>>(),
    });
    if answered == 0 {
        let errors: Vec<String> = answers
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        bail!("no validator answered: {}", errors.join("; "));
    }
    out.emit(&doc, || {
        let mut text = match best {
            Some((node, a)) => format!(
                "account {key}\nbalance {}, next nonce {} (read at height {} from {node}; a \
                 plain query reads one validator and may lag)",
                a.balance, a.nonce, a.height
            ),
            None => format!(
                "account {key}: no account at any of the {answered} validators that answered"
            ),
        };
        let mut rows = vec![["ID", "HEIGHT", "BALANCE", "NONCE", "URL"]
            .map(String::from)
            .to_vec()];
        for (node, r) in &answers {
            let cells = match r {
                Ok(Some(a)) => [
                    a.height.to_string(),
                    a.balance.to_string(),
                    a.nonce.to_string(),
                ],
                Ok(None) => ["-".into(), "no account".into(), String::new()],
                Err(_) => ["unreachable".into(), String::new(), String::new()],
            };
            let mut row = vec![validator_label(node)];
            row.extend(cells);
            row.push(node.url.clone());
            rows.push(row);
        }
        text.push('\n');
        text.push_str(&table(&rows));
        text
    })?;
    Ok(if best.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The block at `height` from the first node that has it and whose certificate
/// verifies; a node that serves a bad block is reported and skipped.
async fn fetch_block(client: &Client, height: Height) -> Result<(Node, BlockResponse)> {
    let mut problems = Vec::new();
    for node in client.nodes() {
        match client.block(node, height).await {
            Ok(Some(b)) => match verify_certified(client.validators(), &b) {
                Ok(()) => return Ok((node.clone(), b)),
                Err(e) => problems.push(format!("{node} served a block that does not verify: {e}")),
            },
            Ok(None) => problems.push(format!("{node}: not committed there yet")),
            Err(ClientError::Api { api, .. }) if api.reason == "pruned" => problems.push(format!(
                "{node}: keeps blocks only from height {} (it started from a snapshot there)",
                api.horizon
                    .map_or_else(|| "?".to_owned(), |h| h.to_string())
            )),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Err(anyhow!(
        "no validator gave a verified block {height}: {}",
        problems.join("; ")
    ))
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Transfer { to, amount } => format!("transfer {amount} to {}", &to.to_hex()[..16]),
        Op::Put { key, value } => format!(
            "put {} ({} bytes)",
            String::from_utf8(key.as_slice().to_vec())
                .map_or_else(|_| hex::encode(key.as_slice()), |s| format!("{s:?}")),
            value.len()
        ),
    }
}

async fn block(client: &Client, height: Height, file: Option<&Path>, out: Out) -> Result<ExitCode> {
    let (node, b) = fetch_block(client, height).await?;
    if let Some(file) = file {
        let text = serde_json::to_string_pretty(&b)?;
        fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    out.emit(&b, || {
        const SHOWN: usize = 20;
        let mut text = format!(
            "block {} digest {}\nfrom {node}; commit certificate verified: {} of {} validators \
             signed COMMIT in view {}\ntimestamp_ms {}, {} txs, tx_root {}, state digest {}",
            b.height,
            b.digest,
            b.certificate.commits.len(),
            client.validators().n(),
            b.certificate.view,
            b.block.header.timestamp_ms,
            b.block.txs.len(),
            b.block.header.tx_root,
            b.state_digest,
        );
        if b.block.is_null() {
            text.push_str("\n(a null block: it fills a view-change gap)");
        }
        for (i, t) in b.block.txs.iter().take(SHOWN).enumerate() {
            text.push_str(&format!(
                "\n  {i:>4}  {}  from {} nonce {}  {}",
                stele_types::tx_hash(t),
                &t.sender.to_hex()[..16],
                t.nonce,
                describe_op(&t.op)
            ));
        }
        if b.block.txs.len() > SHOWN {
            text.push_str(&format!("\n  ... and {} more", b.block.txs.len() - SHOWN));
        }
        if let Some(file) = file {
            text.push_str(&format!(
                "\nwrote {} (check it offline with `stele verify --block {} --tx HASH`)",
                file.display(),
                file.display()
            ));
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}

fn describe_tx_answer(t: &TxResponse) -> String {
    let status = match t.status {
        TxStatus::Applied => "applied",
        TxStatus::StaleNonce => "stale_nonce (not applied)",
        TxStatus::Pending => "pending in the mempool",
        TxStatus::Gapped => "gapped (waits for earlier nonces)",
        TxStatus::Unknown => "unknown here",
    };
    let mut s = status.to_owned();
    if let (Some(h), Some(res)) = (t.height, t.result) {
        s.push_str(&format!(": {} at height {h}", res.as_str()));
        if let Some(i) = t.index {
            s.push_str(&format!(" (index {i})"));
        }
    }
    if t.status.is_final() && t.receipt.is_none() {
        s.push_str(", but no signed receipt");
    }
    if let Some(h) = t.horizon {
        s.push_str(&format!(
            " (this validator keeps history only from height {h}: it started from a snapshot \
             there, so a tx applied below it is unknown to it)"
        ));
    }
    s
}

async fn tx(
    client: &Client,
    hash: &Digest,
    receipts_out: Option<&Path>,
    out: Out,
) -> Result<ExitCode> {
    let q = client.query_tx(hash).await;
    let confirmed = q.confirmed();
    let need = client.receipts_needed();
    if q.answers.iter().all(|(_, r)| r.is_err()) {
        let errors: Vec<String> = q
            .answers
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        bail!("no validator answered: {}", errors.join("; "));
    }
    let to_write: Vec<Receipt> = match &confirmed {
        Some(c) => c.receipts.clone(),
        None => q.tally.receipts(),
    };
    if let Some(file) = receipts_out {
        let text = serde_json::to_string_pretty(&to_write)?;
        fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    let bad: Vec<String> = q
        .bad_receipts
        .iter()
        .map(|(n, e)| format!("{n}: {e}"))
        .collect();
    let doc = json!({
        "hash": hash,
        "outcome": confirmed.as_ref().map(|c| c.outcome()),
        "agreeing": confirmed.as_ref().map_or(q.tally.best(), |c| c.receipts.len()),
        "needed": need,
        "validators": q.answers.iter().map(|(node, r)| json!({
            "url": node.url,
            "validator": node.validator,
            "answer": r.as_ref().ok(),
            "error": r.as_ref().err().map(|e| e.to_string()),
        })).collect::<Vec<_>>(),
        "bad_receipts": bad,
    });
    out.emit(&doc, || {
        let mut text = format!("tx {hash}");
        for (node, r) in &q.answers {
            match r {
                Ok(t) => text.push_str(&format!("\n  {node}: {}", describe_tx_answer(t))),
                Err(e) => text.push_str(&format!("\n  {e}")),
            }
        }
        for b in &bad {
            text.push_str(&format!("\n  receipt does not count: {b}"));
        }
        match &confirmed {
            Some(c) => text.push_str(&format!(
                "\n{}\n{} signed receipts agree (f+1 = {need} needed)",
                describe_outcome(c),
                c.receipts.len()
            )),
            None => text.push_str(&format!(
                "\nno agreed outcome yet: at most {} signed receipts agree, f+1 = {need} needed",
                q.tally.best()
            )),
        }
        if let Some(file) = receipts_out {
            text.push_str(&format!(
                "\nwrote {} verified receipts to {}",
                to_write.len(),
                file.display()
            ));
            if let Some(c) = &confirmed {
                text.push_str(&format!(
                    "\nprove it offline: stele block {h} --out block{h}.json && stele verify \
                     --block block{h}.json --tx {hash} --receipts {}",
                    file.display(),
                    h = c.height
                ));
            }
        }
        text
    })?;
    Ok(if confirmed.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} {} is not valid", path.display()))
}

fn verify(
    g: &Global,
    block: &Path,
    tx: &Digest,
    receipts: Option<&Path>,
    out: Out,
) -> Result<ExitCode> {
    let genesis_file = genesis_path(g);
    let genesis = Genesis::load(&genesis_file).context(
        "verify needs the genesis file (--genesis FILE, or DIR/genesis.json of --testnet DIR)",
    )?;
    let b: BlockResponse = read_json(block, "block file")?;
    let receipts: Option<Vec<Receipt>> = receipts
        .map(|p| {
            read_json(
                p,
                "receipts file (a JSON array of receipts: signed block receipt and Merkle path)",
            )
        })
        .transpose()?;
    let vs = genesis.validator_set();
    let checker = ReceiptChecker::new(vs.clone());
    let mut ignored = Vec::new();
    if let Some(rs) = &receipts {
        let mut tally = ReceiptTally::new(TxId::hash(*tx), &checker);
        for r in rs {
            if let Err(e) = tally.offer(&checker, r.clone(), None) {
                ignored.push(e.to_string());
            }
        }
    }
    let verdict = verify_block(&genesis, &b, tx, receipts.as_deref()).with_context(|| {
        format!(
            "verification FAILED for tx {tx} in block file {} against {}",
            block.display(),
            genesis_file.display()
        )
    })?;
    let need = vs.f() + 1;
    // {"verdict": "included" | "applied", height, index, ...} plus what was checked.
    let mut doc = serde_json::to_value(&verdict)?;
    if let Some(map) = doc.as_object_mut() {
        map.insert("tx".into(), json!(tx));
        map.insert("block_digest".into(), json!(b.digest));
        map.insert("ignored_receipts".into(), json!(ignored));
    }
    out.emit(&doc, || {
        let basis = format!(
            "block {} (digest {}) is committed: {} of {} validators signed COMMIT for it, and the \
             tx's Merkle proof checks against its tx_root",
            b.height,
            b.digest,
            b.certificate.commits.len(),
            vs.n()
        );
        let mut text = match &verdict {
            Verdict::Applied {
                height,
                index,
                result,
                receipts,
            } => format!(
                "applied: {} at height {height} (index {index})\n{basis}; {receipts} valid signed \
                 receipts agree (f+1 = {need} needed)",
                result.as_str()
            ),
            Verdict::Included {
                height,
                index,
                matching_receipts,
            } => {
                let why = match &receipts {
                    None => "no receipts given: pass --receipts FILE (from `stele tx HASH \
                             --receipts-out FILE`) to show whether and how it was applied"
                        .to_owned(),
                    Some(_) => format!(
                        "{matching_receipts} valid receipt(s) agree on an applied result here, f+1 \
                         = {need} needed to say it was applied"
                    ),
                };
                format!("included at height {height} (index {index})\n{basis}\n{why}")
            }
        };
        for i in &ignored {
            text.push_str(&format!("\nreceipt ignored: {i}"));
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Progress for `stele bench`: notes and bars on stderr, nothing with --json.
#[derive(Debug)]
struct BenchUi(Out);

impl stele_client::bench::Ui for BenchUi {
    fn note(&self, msg: &str) {
        self.0.note(|| msg.to_owned());
    }

    fn bar(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if self.0.json {
            return indicatif::ProgressBar::hidden();
        }
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {pos}/{len} txs ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        indicatif::ProgressBar::new(len)
            .with_style(style)
            .with_message(what.to_owned())
    }
}

async fn bench(g: &Global, args: &BenchArgs, out: Out) -> Result<ExitCode> {
    use stele_client::bench::{self, Pace, Plan};
    if args.accounts < 2 {
        bail!("--accounts must be at least 2 (each transfer goes to another bench account)");
    }
    if args.txs == 0 {
        bail!("--txs must be at least 1");
    }
    if args.batch == 0 || args.batch > stele_types::api::MAX_SUBMIT_BATCH {
        bail!(
            "--batch must be 1..={}, found {}",
            stele_types::api::MAX_SUBMIT_BATCH,
            args.batch
        );
    }
    let rates: Vec<f64> = args
        .rate
        .into_iter()
        .chain(args.sweep.iter().flatten().copied())
        .collect();
    if let Some(r) = rates.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
        bail!("a rate is a positive number of tx/s, found {r}");
    }
    // The bench reads everything from the testnet directory; --nodes only overrides the
    // addresses, so its genesis defaults to DIR/genesis.json here.
    let client = if g.nodes.is_empty() {
        connect(g, None)?
    } else {
        let genesis = genesis_path(g);
        Client::from_nodes(&g.nodes, &genesis, ClientConfig::default()).with_context(|| {
            format!(
                "setting up the client for {} with {}",
                g.nodes.join(","),
                genesis.display()
            )
        })?
    };
    let timeout = Duration::from_secs(g.timeout.max(1));
    let client = client.with_config(ClientConfig {
        wait_timeout: timeout,
        request_timeout: ClientConfig::default().request_timeout.min(timeout),
        binary_batches: true,
        ..client.config().clone()
    });
    let f1 = client.receipts_needed();
    let fanout = args.fanout.unwrap_or(f1);
    if fanout < f1 || fanout > client.nodes().len() {
        bail!(
            "--fanout must be {f1}..={} (f+1 validators must each return a receipt)",
            client.nodes().len()
        );
    }
    let funded = client.genesis().accounts.len();
    let mut keys = Vec::with_capacity(args.accounts);
    for j in args.first_account..args.first_account.saturating_add(args.accounts) {
        let path = testnet_account_key(&g.testnet, j);
        let key = KeyPair::load(&path).with_context(|| {
            format!(
                "loading bench account {j} (accounts {}..{}) from {} (the testnet has \
                 {funded} funded accounts; use fewer with --accounts or a lower \
                 --first-account)",
                args.first_account,
                args.first_account.saturating_add(args.accounts),
                path.display()
            )
        })?;
        keys.push(key);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ui = BenchUi(out);
    let sweep = args.sweep.is_some();
    let paces: Vec<Pace> = match (&args.sweep, args.rate) {
        (Some(r), _) if !r.is_empty() => r.iter().map(|r| Pace::Rate(*r)).collect(),
        // A bare --sweep: fractions of the ceiling, filled in once it is measured.
        (Some(_), _) => Vec::new(),
        (None, Some(r)) => vec![Pace::Rate(r)],
        (None, None) => vec![Pace::Max],
    };
    let mut plan = Plan {
        txs: args.txs,
        paces,
        batch: args.batch,
        fanout,
        in_flight: args.in_flight,
        wait_timeout: timeout,
        ceiling_time: Duration::from_secs_f64(args.ceiling_secs.clamp(0.1, 60.0)),
        threads,
        new_accounts: args.new_accounts,
    };
    if plan.paces.is_empty() {
        // The same measurement run uses below, on this machine's idle cores, with real txs.
        let probe = KeyPair::generate();
        let sample = client.sign(
            &probe,
            Nonce(0),
            Op::Transfer {
                to: keys[0].public(),
                amount: Amount(1),
            },
        )?;
        let chain = client.chain().clone();
        let d = plan.ceiling_time;
        let sig = tokio::task::spawn_blocking(move || {
            bench::verify_ceiling(&chain, &[sample], d, threads)
        })
        .await?;
        let ceiling = sig / client.validators().n() as f64;
        plan.paces = bench::SWEEP_FRACTIONS
            .iter()
            .map(|f| Pace::Rate(((ceiling * f) / 100.0).round().max(1.0) * 100.0))
            .collect();
        ui.0.note(|| {
            format!(
                "sweep over {:?} tx/s ({:?} of a {ceiling:.0} tx/s ceiling)",
                plan.paces,
                bench::SWEEP_FRACTIONS
            )
        });
    }
    let reports = bench::run(&client, &keys, &plan, &ui).await?;
    if !out.json {
        for (i, r) in reports.iter().enumerate() {
            if reports.len() > 1 {
                println!("--- run {} of {}", i + 1, reports.len());
            }
            println!("{}", r.text());
        }
    }
    let mut files = Vec::new();
    if sweep {
        fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let csv = args.out.join("bench.csv");
        let svg = args.out.join("bench.svg");
        fs::write(&csv, bench::csv(&reports))
            .with_context(|| format!("writing {}", csv.display()))?;
        fs::write(&svg, bench::svg(&reports)?)
            .with_context(|| format!("writing {}", svg.display()))?;
        out.note(|| format!("wrote {} and {}", csv.display(), svg.display()));
        files = vec![csv.display().to_string(), svg.display().to_string()];
    }
    if let Some(path) = &args.latency_log {
        fs::write(path, bench::latency_csv(&reports))
            .with_context(|| format!("writing {}", path.display()))?;
        out.note(|| format!("wrote {}", path.display()));
        files.push(path.display().to_string());
    }
    let valid = reports.iter().all(|r| r.valid);
    if out.json {
        let doc = match reports.as_slice() {
            [one] if !sweep => serde_json::to_value(one)?,
            _ => json!({
                "valid": valid,
                "throughput": reports.iter().map(|r| r.throughput).fold(0.0, f64::max),
                "ceiling": reports.first().map_or(0.0, |r| r.ceiling),
                "files": files,
                "runs": reports,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
