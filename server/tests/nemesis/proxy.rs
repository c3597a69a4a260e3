//! A fault-injecting TCP proxy on loopback, and a [`Network`] of them standing for the links
//! between the nodes of a cluster, so that the suite can cut, black-hole and heal the traffic
//! between processes without any traffic leaving the machine.
//!
//! This module owns the byte forwarding (both directions, half-closes propagated, so that
//! HTTP/1.1 keep-alive and HTTP/2 streams work through it), the fault [`Mode`]s and their
//! transitions, the optional per-chunk delay, and the [`Counters`] the suite reports.
//!
//! A node reaches each peer through its own proxy: the link from A to B is a proxy in front of
//! B's address that only A is configured to use, so a partition is a choice of which links cut.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::AddAssign;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything (the healed state). Connections closed by an earlier fault stay closed.
    Pass,
    /// Close every open connection at once; accept new ones and close them immediately.
    Drop,
    /// Forward nothing, in either direction, on new and open connections: bytes are read and
    /// discarded, so the peers hang until their own timeouts. A connection that lost bytes is
    /// closed when the black hole ends (its stream could not be resumed intact); one that lost
    /// nothing resumes.
    Blackhole,
}

/// What a proxy (or a [`Network`], summed over its links) has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted and handled (not refused).
    pub accepted: u64,
    /// Connections accepted in [`Mode::Drop`] and closed at once.
    pub refused: u64,
    /// Open connections the proxy closed: cut by [`Mode::Drop`], or after losing bytes to a
    /// black hole.
    pub cut: u64,
    /// Connections closed because the target could not be reached.
    pub connect_failures: u64,
    /// Bytes forwarded, both directions.
    pub bytes_forwarded: u64,
    /// Bytes read and thrown away in [`Mode::Blackhole`].
    pub bytes_discarded: u64,
}

impl AddAssign for Counters {
    fn add_assign(&mut self, other: Counters) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.cut += other.cut;
        self.connect_failures += other.connect_failures;
        self.bytes_forwarded += other.bytes_forwarded;
        self.bytes_discarded += other.bytes_discarded;
    }
}

/// The live counters and settings the proxy's tasks share.
#[derive(Debug, Default)]
struct Shared {
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    connect_failures: AtomicU64,
    bytes_forwarded: AtomicU64,
    bytes_discarded: AtomicU64,
    delay_nanos: AtomicU64,
    /// How many times the proxy switched to [`Mode::Drop`]: a connection older than the latest
    /// switch is cut even if the mode changed again before it noticed.
    drops: AtomicU64,
}

impl Shared {
    fn count(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }
}

/// A TCP proxy listening on `127.0.0.1` in front of one target address.
///
/// Dropping it stops accepting and closes every connection it holds.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free loopback port, in [`Mode::Pass`].
    pub async fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, target, mode.subscribe(), shared.clone()));
        Ok(Proxy { addr, target, mode, shared, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and [`Proxy::addr`].
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address traffic is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Switches to `mode`. Open connections react at once (their tasks are woken), though the
    /// closing of a cut connection completes asynchronously.
    pub fn set_mode(&self, mode: Mode) {
        if mode == Mode::Drop {
            self.shared.drops.fetch_add(1, Ordering::SeqCst);
        }
        self.mode.send_if_modified(|current| std::mem::replace(current, mode) != mode);
    }

    /// Delays every chunk forwarded from now on by `delay` (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// What the proxy has done so far.
    pub fn counters(&self) -> Counters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let shared = &self.shared;
        Counters {
            accepted: get(&shared.accepted),
            refused: get(&shared.refused),
            cut: get(&shared.cut),
            connect_failures: get(&shared.connect_failures),
            bytes_forwarded: get(&shared.bytes_forwarded),
            bytes_discarded: get(&shared.bytes_discarded),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Dropping `mode` closes the watch channel, which every connection task takes as a cut.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<Mode>, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or the like: let it pass rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let born = shared.drops.load(Ordering::SeqCst);
        if *mode.borrow() == Mode::Drop {
            Shared::count(&shared.refused, 1);
            continue;
        }
        Shared::count(&shared.accepted, 1);
        tokio::spawn(connection(client, target, mode.clone(), shared.clone(), born));
    }
}

/// How one direction of a connection, or the wait of a connection accepted in a black hole,
/// ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The source closed its side, in order.
    Eof,
    /// The proxy cut it (a fault, or the proxy dropped).
    Cut,
    /// An I/O error on either side.
    Error,
}

/// One connection's view of the faults.
struct Conn<'a> {
    shared: &'a Shared,
    /// [`Shared::drops`] when it was accepted.
    born: u64,
    /// Whether it lost bytes (or a close) to a black hole.
    lost: AtomicBool,
}

impl Conn<'_> {
    /// Whether it must be cut in `mode`.
    fn must_cut(&self, mode: Mode) -> bool {
        mode == Mode::Drop
            || self.shared.drops.load(Ordering::SeqCst) != self.born
            || (mode == Mode::Pass && self.lost.load(Ordering::Relaxed))
    }

    /// Records `n` bytes thrown away.
    fn lose(&self, n: usize) {
        Shared::count(&self.shared.bytes_discarded, n);
        self.lost.store(true, Ordering::Relaxed);
    }

    /// Resolves when it must be cut (or the proxy is gone).
    async fn until_cut(&self, mut mode: watch::Receiver<Mode>) {
        while !self.must_cut(*mode.borrow_and_update()) {
            if mode.changed().await.is_err() {
                return;
            }
        }
    }
}

async fn connection(
    mut client: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    shared: Arc<Shared>,
    born: u64,
) {
    let conn = Conn { shared: &shared, born, lost: AtomicBool::new(false) };
    if forward(&mut client, target, &mut mode, &conn).await == End::Cut {
        Shared::count(&shared.cut, 1);
    }
}

async fn forward(client: &mut TcpStream, target: SocketAddr, mode: &mut watch::Receiver<Mode>, conn: &Conn<'_>) -> End {
    let _ = client.set_nodelay(true);
    if *mode.borrow_and_update() == Mode::Blackhole {
        // Accepted inside a black hole: nothing may reach the target, not even a connection.
        let (mut reader, _writer) = client.split();
        let end = swallow(&mut reader, mode, conn).await;
        if end != End::Eof {
            return end;
        }
    }
    let connect = async {
        let upstream = TcpStream::connect(target).await?;
        upstream.set_nodelay(true)?;
        Ok::<_, io::Error>(upstream)
    };
    let mut upstream = tokio::select! {
        upstream = connect => match upstream {
            Ok(upstream) => upstream,
            Err(_) => {
                Shared::count(&conn.shared.connect_failures, 1);
                return End::Error;
            }
        },
        () = conn.until_cut(mode.clone()) => return End::Cut,
    };
    let (mut client_reader, mut client_writer) = client.split();
    let (mut upstream_reader, mut upstream_writer) = upstream.split();
    let up = pump(&mut client_reader, &mut upstream_writer, mode.clone(), conn);
    let down = pump(&mut upstream_reader, &mut client_writer, mode.clone(), conn);
    tokio::pin!(up, down);
    // One side closing in order only half-closes: keep forwarding the other way.
    tokio::select! {
        end = &mut up => if end == End::Eof { down.await } else { end },
        end = &mut down => if end == End::Eof { up.await } else { end },
    }
}

/// Reads and discards what a connection accepted in a black hole sends, until the black hole
/// ends: [`End::Eof`] means "healed with nothing lost, go on", anything else closes it.
async fn swallow(reader: &mut (impl AsyncRead + Unpin), mode: &mut watch::Receiver<Mode>, conn: &Conn<'_>) -> End {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        if conn.must_cut(current) {
            return End::Cut;
        }
        if current == Mode::Pass {
            return End::Eof;
        }
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return End::Error,
                Ok(n) => conn.lose(n),
            },
            changed = mode.changed() => if changed.is_err() {
                return End::Cut;
            },
        }
    }
}

/// Forwards one direction of a connection until the source closes its side (then half-closes
/// the destination), an error, or a cut. In a black hole, data and closes are swallowed.
async fn pump(
    src: &mut (impl AsyncRead + Unpin),
    dst: &mut (impl AsyncWrite + Unpin),
    mut mode: watch::Receiver<Mode>,
    conn: &Conn<'_>,
) -> End {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = src.read(&mut buf) => read,
            changed = mode.changed() => {
                if changed.is_err() || conn.must_cut(*mode.borrow_and_update()) {
                    return End::Cut;
                }
                continue;
            }
        };
        let current = *mode.borrow();
        if conn.must_cut(current) {
            return End::Cut;
        }
        let n = match read {
            Ok(n) if n > 0 && current == Mode::Blackhole => {
                conn.lose(n);
                continue;
            }
            Ok(0) | Err(_) if current == Mode::Blackhole => {
                // The other side must not see this close (or reset) before the black hole ends.
                conn.lost.store(true, Ordering::Relaxed);
                conn.until_cut(mode).await;
                return End::Cut;
            }
            Ok(0) => return if dst.shutdown().await.is_ok() { End::Eof } else { End::Error },
            Ok(n) => n,
            Err(_) => return End::Error,
        };
        let delay = conn.shared.delay();
        let send = async {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            dst.write_all(&buf[..n]).await
        };
        tokio::pin!(send);
        // A chunk read while passing is delivered, unless the connection is cut meanwhile.
        loop {
            tokio::select! {
                sent = &mut send => {
                    if sent.is_err() {
                        return End::Error;
                    }
                    break;
                }
                changed = mode.changed() => if changed.is_err() || conn.must_cut(*mode.borrow_and_update()) {
                    return End::Cut;
                },
            }
        }
        Shared::count(&conn.shared.bytes_forwarded, n);
    }
}

/// One [`Proxy`] per directed link between the nodes of a cluster: the link from A to B is what
/// A uses to reach B (requests from A, and B's answers to them).
#[derive(Debug)]
pub struct Network {
    nodes: BTreeMap<u64, SocketAddr>,
    links: BTreeMap<(u64, u64), Proxy>,
}

impl Network {
    /// Starts a proxy for every ordered pair of distinct nodes, given each node's real address.
    pub async fn start(nodes: &BTreeMap<u64, SocketAddr>) -> io::Result<Network> {
        let mut links = BTreeMap::new();
        for &from in nodes.keys() {
            for (&to, &addr) in nodes {
                if from != to {
                    links.insert((from, to), Proxy::start(addr).await?);
                }
            }
        }
        Ok(Network { nodes: nodes.clone(), links })
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The proxy of the link from `from` to `to`. Panics if there is none.
    pub fn link(&self, from: u64, to: u64) -> &Proxy {
        self.links.get(&(from, to)).unwrap_or_else(|| panic!("no link from node {from} to node {to}"))
    }

    /// The URL `from` must use for its peer `to` (`http://127.0.0.1:port`).
    pub fn url(&self, from: u64, to: u64) -> String {
        self.link(from, to).url()
    }

    /// Cuts, by black-holing them, the links between nodes of different groups; links within a
    /// group pass. A node in no group is alone.
    pub fn partition(&self, groups: &[&[u64]]) {
        self.partition_with(groups, Mode::Blackhole);
    }

    /// As [`Network::partition`], cutting with `cut` ([`Mode::Drop`]: peers see connections
    /// close at once rather than hang). Panics if a node is unknown or in two groups.
    pub fn partition_with(&self, groups: &[&[u64]], cut: Mode) {
        let mut group_of = BTreeMap::new();
        for (index, group) in groups.iter().enumerate() {
            for node in group.iter() {
                assert!(self.nodes.contains_key(node), "unknown node {node}");
                assert!(group_of.insert(*node, index).is_none(), "node {node} is in two groups");
            }
        }
        for (&(from, to), proxy) in &self.links {
            let together = matches!((group_of.get(&from), group_of.get(&to)), (Some(a), Some(b)) if a == b);
            proxy.set_mode(if together { Mode::Pass } else { cut });
        }
    }

    /// Cuts `node` off from every other node; the others still reach each other.
    pub fn isolate(&self, node: u64) {
        let others: Vec<u64> = self.nodes.keys().copied().filter(|&n| n != node).collect();
        self.partition(&[&[node], &others]);
    }

    /// Lets every link pass again.
    pub fn heal(&self) {
        for proxy in self.links.values() {
            proxy.set_mode(Mode::Pass);
        }
    }

    /// Delays every chunk on every link by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        for proxy in self.links.values() {
            proxy.set_delay(delay);
        }
    }

    /// The counters summed over every link.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for proxy in self.links.values() {
            total += proxy.counters();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::time::timeout;

    const STALL: Duration = Duration::from_millis(200);
    const PROMPT: Duration = Duration::from_secs(5);

    /// An echo server on loopback.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        addr
    }

    /// Sends `message` and reads its echo, or fails within [`STALL`].
    async fn echo(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut back = vec![0; message.len()];
        timeout(STALL, stream.read_exact(&mut back)).await??;
        Ok(back)
    }

    /// Whether the peer closed `stream` (EOF or reset) within [`PROMPT`].
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0; 1];
        matches!(timeout(PROMPT, stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
    }

    async fn reachable(network: &Network, from: u64, to: u64) -> bool {
        let Ok(mut stream) = TcpStream::connect(network.link(from, to).addr()).await else { return false };
        matches!(echo(&mut stream, b"ping").await, Ok(back) if back == b"ping")
    }

    #[tokio::test]
    async fn pass_forwards_both_ways_on_one_connection() {
        let target = echo_server().await;
        let proxy = Proxy::start(target).await.unwrap();
        assert_eq!(proxy.target(), target);
        assert_eq!(proxy.url(), format!("http://{}", proxy.addr()));
        assert!(proxy.addr().ip().is_loopback());
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        for i in 0..10 {
            let message = format!("request {i}");
            assert_eq!(echo(&mut stream, message.as_bytes()).await.unwrap(), message.as_bytes());
        }

        // A large transfer both ways at once, as an HTTP/2 connection does.
        let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (mut reader, mut writer) = stream.into_split();
        let sent = payload.clone();
        let sender = tokio::spawn(async move { writer.write_all(&sent).await.map(|()| writer) });
        let mut back = vec![0; payload.len()];
        timeout(PROMPT, reader.read_exact(&mut back)).await.unwrap().unwrap();
        assert!(back == payload);
        let mut writer = sender.await.unwrap().unwrap();

        // A half-close reaches the server, whose close comes back.
        writer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        timeout(PROMPT, reader.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert!(rest.is_empty());

        let counters = proxy.counters();
        let echoed: u64 = (0..10).map(|i| format!("request {i}").len() as u64).sum::<u64>() + (1 << 20);
        assert_eq!(counters.bytes_forwarded, 2 * echoed);
        assert_eq!((counters.accepted, counters.refused, counters.cut), (1, 0, 0));
    }

    #[tokio::test]
    async fn drop_closes_open_connections_and_refuses_new_ones() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        echo(&mut open, b"hello").await.unwrap();

        proxy.set_mode(Mode::Drop);
        assert_eq!(proxy.mode(), Mode::Drop);
        assert!(closed(&mut open).await);
        for _ in 0..3 {
            let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
            assert!(closed(&mut refused).await);
        }
        let counters = proxy.counters();
        assert_eq!((counters.accepted, counters.refused, counters.cut), (1, 3, 1));

        // Healing serves new connections; the cut one stays closed.
        proxy.set_mode(Mode::Pass);
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut new, b"again").await.unwrap(), b"again");
        assert!(echo(&mut open, b"x").await.is_err());
    }

    #[tokio::test]
    async fn a_drop_healed_at_once_still_cuts_open_connections() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        echo(&mut open, b"hello").await.unwrap();
        proxy.set_mode(Mode::Drop);
        proxy.set_mode(Mode::Pass);
        assert!(closed(&mut open).await);
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut new, b"new").await.unwrap(), b"new");
    }

    #[tokio::test]
    async fn blackhole_swallows_closes_too() {
        // A server that reports when its client's side is closed.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let _ = stream.read_to_end(&mut Vec::new()).await;
                    let _ = closed_tx.send(());
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        proxy.set_mode(Mode::Blackhole);
        stream.shutdown().await.unwrap();
        assert!(timeout(STALL, closed_rx.recv()).await.is_err(), "the close crossed the black hole");
        proxy.set_mode(Mode::Pass);
        timeout(PROMPT, closed_rx.recv()).await.unwrap().unwrap();
        assert_eq!(proxy.counters().cut, 1);
    }

    #[tokio::test]
    async fn blackhole_stalls_and_heal_closes_what_lost_bytes() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        echo(&mut open, b"hello").await.unwrap();

        proxy.set_mode(Mode::Blackhole);
        let stalled = echo(&mut open, b"lost").await.unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut, "{stalled}");
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut new, b"lost too").await.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let mut quiet = TcpStream::connect(proxy.addr()).await.unwrap();
        let counters = proxy.counters();
        assert_eq!(counters.bytes_discarded, 12);
        assert_eq!(counters.bytes_forwarded, 10);

        proxy.set_mode(Mode::Pass);
        assert!(closed(&mut open).await, "a connection that lost bytes must not resume");
        assert!(closed(&mut new).await);
        assert_eq!(echo(&mut quiet, b"fine").await.unwrap(), b"fine");
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut after, b"healed").await.unwrap(), b"healed");
        assert_eq!(proxy.counters().cut, 2);
    }

    #[tokio::test]
    async fn blackhole_without_traffic_resumes_the_connection() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        echo(&mut open, b"before").await.unwrap();
        proxy.set_mode(Mode::Blackhole);
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.set_mode(Mode::Pass);
        assert_eq!(echo(&mut open, b"after").await.unwrap(), b"after");
        assert_eq!(proxy.counters().cut, 0);
    }

    #[tokio::test]
    async fn delay_adds_latency_per_chunk() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        proxy.set_delay(Duration::from_millis(60));
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = Instant::now();
        stream.write_all(b"slow").await.unwrap();
        let mut back = [0; 4];
        timeout(PROMPT, stream.read_exact(&mut back)).await.unwrap().unwrap();
        // Delayed on the way there and on the way back.
        assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
        proxy.set_delay(Duration::ZERO);
        assert_eq!(echo(&mut stream, b"fast").await.unwrap(), b"fast");
    }

    #[tokio::test]
    async fn unreachable_target_closes_the_connection() {
        let unused = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let target = unused.local_addr().unwrap();
        drop(unused);
        let proxy = Proxy::start(target).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(closed(&mut stream).await);
        assert_eq!(proxy.counters().connect_failures, 1);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        echo(&mut open, b"hello").await.unwrap();
        drop(proxy);
        assert!(closed(&mut open).await);
    }

    const ALL_LINKS: [(u64, u64); 6] = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)];

    /// The links of a three-node network that carry traffic.
    async fn connectivity(network: &Network) -> Vec<(u64, u64)> {
        let mut up = Vec::new();
        for (from, to) in ALL_LINKS {
            if reachable(network, from, to).await {
                up.push((from, to));
            }
        }
        up
    }

    #[tokio::test]
    async fn network_partitions_isolates_and_heals() {
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            nodes.insert(id, echo_server().await);
        }
        let network = Network::start(&nodes).await.unwrap();
        assert_eq!(network.nodes(), vec![1, 2, 3]);
        assert_ne!(network.url(1, 2), network.url(3, 2));
        let all_links = ALL_LINKS.to_vec();
        assert_eq!(connectivity(&network).await, all_links);

        network.partition(&[&[1], &[2, 3]]);
        assert_eq!(connectivity(&network).await, vec![(2, 3), (3, 2)]);
        network.heal();
        assert_eq!(connectivity(&network).await, all_links);

        network.isolate(3);
        assert_eq!(connectivity(&network).await, vec![(1, 2), (2, 1)]);
        network.heal();

        // Node 2 in no group is alone; dropped links refuse at once.
        network.partition_with(&[&[1, 3]], Mode::Drop);
        assert_eq!(network.link(1, 2).mode(), Mode::Drop);
        assert_eq!(connectivity(&network).await, vec![(1, 3), (3, 1)]);
        network.heal();
        assert_eq!(connectivity(&network).await, all_links);

        network.set_delay(Duration::from_millis(40));
        let started = Instant::now();
        assert!(reachable(&network, 1, 2).await);
        assert!(started.elapsed() >= Duration::from_millis(80), "{:?}", started.elapsed());
        network.set_delay(Duration::ZERO);

        let counters = network.counters();
        assert!(counters.refused >= 4, "{counters:?}");
        assert!(counters.bytes_discarded > 0 && counters.bytes_forwarded > 0, "{counters:?}");
    }

    #[tokio::test]
    #[should_panic(expected = "in two groups")]
    async fn a_node_in_two_groups_is_refused() {
        let mut nodes = BTreeMap::new();
        nodes.insert(1, echo_server().await);
        nodes.insert(2, echo_server().await);
        let network = Network::start(&nodes).await.unwrap();
        network.partition(&[&[1, 2], &[2]]);
    }
}
