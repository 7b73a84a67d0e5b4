//! The baseline: a `redis-server` started by the harness, and the fixed-window counter
//! most teams write (INCR the key of the current window; EXPIRE it when the INCR created
//! it; allow when the count is at most the limit), spoken in RESP over one TCP connection
//! per stream. RESP is small enough that a client crate would only add build time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How long a fresh `redis-server` gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The apt package that provides `redis-server`.
pub const APT_PACKAGE: &str = "redis-server";

/// `redis-server` on PATH, if any.
pub fn find_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// A `redis-server` process on 127.0.0.1, killed when dropped.
pub struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `bin` on a free port, without persistence, and waits until it answers PING.
    pub async fn start(bin: &Path) -> anyhow::Result<Server> {
        // redis needs an explicit port: take a free one from the OS and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let started = Instant::now();
        loop {
            if let Ok(mut c) = Conn::connect(server.addr).await
                && c.command(&[b"PING"]).await.is_ok()
            {
                return Ok(server);
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("redis-server did not answer PING within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP reply (the kinds the limiter needs).
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `:42`.
    Int(i64),
    /// `$n` bulk string; None for the null bulk string.
    Bulk(Option<Vec<u8>>),
}

/// One connection.
pub struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
    line: String,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: BufReader::new(r),
            writer: w,
            buf: Vec::with_capacity(128),
            line: String::new(),
        })
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.buf.clear();
        encode(&mut self.buf, args);
        self.writer.write_all(&self.buf).await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> anyhow::Result<Reply> {
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            bail!("redis closed the connection");
        }
        let line = self.line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Err(anyhow!("redis error: {rest}")),
            ":" => Ok(Reply::Int(rest.parse().context("bad integer reply")?)),
            "$" => {
                let n: i64 = rest.parse().context("bad bulk length")?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut data = vec![0u8; usize::try_from(n)? + 2];
                self.reader.read_exact(&mut data).await?;
                data.truncate(data.len() - 2);
                Ok(Reply::Bulk(Some(data)))
            }
            other => Err(anyhow!("unsupported RESP reply type {other:?}")),
        }
    }

    /// The fixed-window check: INCR `key`; EXPIRE it for `window_s` when this INCR
    /// created it; allowed when the new count is at most `limit`.
    pub async fn fixed_window(
        &mut self,
        key: &[u8],
        window_s: u64,
        limit: u64,
    ) -> anyhow::Result<bool> {
        let count = match self.command(&[b"INCR", key]).await? {
            Reply::Int(n) => n,
            other => bail!("INCR answered {other:?}"),
        };
        if count == 1 {
            self.command(&[b"EXPIRE", key, window_s.to_string().as_bytes()])
                .await?;
        }
        Ok(u64::try_from(count).is_ok_and(|c| c <= limit))
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}
