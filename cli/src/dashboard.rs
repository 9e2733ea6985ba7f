//! The monitor's HTTP endpoint: `GET /metrics` (the Prometheus text),
//! `GET /api/cluster` (the dashboard's JSON) and `GET /` (the dashboard,
//! `dashboard.html`, embedded in the binary, with the latest JSON inlined
//! so it shows figures before its first poll). One thread; the monitor
//! role sends both texts every period (`Message::Metrics`).

use anna::protocol::{Address, Message};
use anyhow::{Context, Result};
use squall_transport::Receiver;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The dashboard page; `/*SQUALL_DATA*/null` is replaced by the JSON.
const PAGE: &str = include_str!("dashboard.html");
const DATA_SLOT: &str = "/*SQUALL_DATA*/null";

/// The latest texts the monitor sent.
#[derive(Default)]
struct Latest {
    metrics: String,
    dashboard: String,
}

/// Serves the endpoint at `address` from a thread of its own, with the
/// latest texts the monitor sent to `page`.
pub fn serve(ctx: &zmq::Context, address: &str, page: &Address) -> Result<()> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("binding the metrics endpoint at {address}"))?;
    let mut texts = Receiver::bind(ctx, page).context("binding the metrics page socket")?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut latest = Latest::default();
            for stream in listener.incoming().flatten() {
                while let Ok(Some(msg)) = texts.recv(Some(Duration::ZERO)) {
                    if let Message::Metrics { text, dashboard } = msg {
                        latest = Latest {
                            metrics: text,
                            dashboard,
                        };
                    }
                }
                if let Err(error) = answer(stream, &latest) {
                    tracing::debug!(%error, "metrics request failed");
                }
            }
        })
        .context("spawning the metrics server")?;
    Ok(())
}

/// The JSON, or `null` before the monitor's first period, safe inside a
/// `<script>` (no `</` can close it).
fn json(latest: &Latest) -> String {
    if latest.dashboard.is_empty() {
        "null".to_string()
    } else {
        latest.dashboard.replace("</", "<\\/")
    }
}

/// Status, content type and body for a `GET` of `path`.
fn route(path: &str, latest: &Latest) -> (&'static str, &'static str, String) {
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            latest.metrics.clone(),
        ),
        "/api/cluster" => ("200 OK", "application/json", json(latest)),
        "/" | "/index.html" => (
            "200 OK",
            "text/html; charset=utf-8",
            PAGE.replacen(DATA_SLOT, &json(latest), 1),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "squall monitor: the dashboard is at GET /, its data at GET /api/cluster, \
             metrics at GET /metrics\n"
                .to_string(),
        ),
    }
}

fn answer(mut stream: TcpStream, latest: &Latest) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Read the headers through, so that closing does not reset the
    // connection under a browser still sending them.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = if method == "GET" {
        route(path, latest)
    } else {
        (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "squall monitor: GET only\n".to_string(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_the_latest_json_and_no_script_can_be_closed_by_it() {
        let latest = Latest {
            metrics: "m 1\n".into(),
            dashboard: r#"{"reason":"</script><b>"}"#.into(),
        };
        let (status, kind, page) = route("/", &latest);
        assert_eq!((status, kind), ("200 OK", "text/html; charset=utf-8"));
        assert!(page.contains(r#"const INITIAL = {"reason":"<\/script><b>"};"#));
        assert!(!page.contains(DATA_SLOT));
        assert_eq!(route("/metrics?x=1", &latest).2, "m 1\n");
        assert_eq!(route("/api/cluster", &latest).1, "application/json");
        assert_eq!(route("/api/cluster", &Latest::default()).2, "null");
        assert_eq!(route("/nope", &latest).0, "404 Not Found");
    }
}
