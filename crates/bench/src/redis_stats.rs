//! Commands a Redis server has run, from `INFO commandstats`, for the cluster fan-out
//! figure "Redis round trips per published message". Raw RESP over TCP: the bench needs
//! no Redis client for one command.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Total calls of every command so far, and the calls per command.
pub async fn command_calls(addr: &str) -> Result<(u64, Vec<(String, u64)>)> {
    let text = tokio::time::timeout(Duration::from_secs(5), info(addr))
        .await
        .context("Redis INFO timed out")??;
    let mut per = Vec::new();
    for line in text.lines() {
        // cmdstat_evalsha:calls=10,usec=…
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        per.push((name.to_owned(), calls));
    }
    Ok((per.iter().map(|(_, n)| n).sum(), per))
}

async fn info(addr: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach Redis at {addr}"))?;
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .await?;
    // Bulk string reply: $<len>\r\n<payload>\r\n
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("Redis closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n") {
            let len: usize = head
                .strip_prefix('$')
                .and_then(|l| l.parse().ok())
                .context("unexpected reply to INFO")?;
            if body.len() >= len {
                return Ok(body[..len].to_owned());
            }
        }
    }
}

/// Calls of each command between two readings, largest first.
pub fn delta(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = after
        .iter()
        .map(|(name, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == name)
                .map_or(0, |(_, c)| *c);
            (name.clone(), n.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    out
}
