//! Listen ports for the node processes that tests and benchmarks start, stop and start again.
//!
//! A port the kernel hands out for `bind(0)` comes from its ephemeral range, the range it also
//! takes outgoing connections' source ports from: while a node is down, a client's or a peer's
//! connection may take its port, and the node cannot listen there again ("address already in
//! use"). These ports come from below that range instead, checked free when picked, and never
//! handed out twice by one process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const FIRST: u32 = 10_000;

/// The first port of the kernel's ephemeral range (Linux: `ip_local_port_range`; 32768 when it
/// cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A free loopback port below the ephemeral range (a `bind(0)` port if that range leaves none).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let end = ephemeral_start().min(u16::MAX as u32 + 1);
    if end <= FIRST + 1_000 {
        return TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a free port").port();
    }
    let span = end - FIRST;
    // Processes start at different places (their ids), so concurrent ones rarely meet.
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id() * 7919 % span, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{end}");
}
