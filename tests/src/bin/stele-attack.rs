//! A connection holder for the attack tests: a process of its own, so that the attacker's
//! sockets are not limited by the test process's descriptor limit.
//!
//! `stele-attack idle ADDR N SECONDS` opens up to N TCP connections to ADDR, sends
//! nothing, and holds each until the server closes it or SECONDS pass. It prints
//! `opened X` once connected, then `open Y` every second, and exits 0.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: stele-attack idle ADDR N SECONDS

Opens up to N TCP connections to ADDR (host:port), sends nothing, and holds each until
the server closes it or SECONDS pass. Prints `opened X` once connected, then `open Y`
every second. Used by tests/tests/attacks.rs; not part of the product.";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let [mode, addr, n, secs] = args.as_slice() else {
        usage()
    };
    if mode != "idle" {
        usage()
    }
    let (Ok(n), Ok(secs)) = (n.parse::<usize>(), secs.parse::<u64>()) else {
        usage()
    };
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) if s.set_nonblocking(true).is_ok() => socks.push(s),
            // Refused or out of descriptors: the server protected itself, or we did.
            _ => {}
        }
    }
    println!("opened {}", socks.len());
    let start = Instant::now();
    let mut buf = [0u8; 512];
    while start.elapsed() < Duration::from_secs(secs) && !socks.is_empty() {
        std::thread::sleep(Duration::from_secs(1));
        socks.retain_mut(
            |s| matches!(s.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock),
        );
        println!("open {}", socks.len());
    }
}
