//! `squall gateway`: HTTP ingress, for callers without the Python client.
//!
//! - `POST /functions/{name}` with `{"args": [...], "kwargs": {...},
//!   "timeout": seconds, "version": n}` calls a function (its version n, if
//!   given; without it, the version the function's traffic split picks at
//!   the scheduler); `POST /dags/{name}` with
//!   `{"args": {"function": [...]}}` a DAG. A JSON argument `{"$ref":
//!   "key"}` is a `squall.Reference` (resolved on the executor), `{"$bytes":
//!   "<hex>"}` is `bytes`. The answer is `{"result": ...}`, the result as
//!   JSON (see `pickle::to_json`), or, asked with `Accept:
//!   application/x-python-pickle`, the result's pickle as it is.
//! - `GET /keys/{key}` answers `{"value": ...}` for a last-writer-wins
//!   value (a Python client's pickled object as JSON, other bytes as
//!   `{"$bytes": ...}`); `PUT /keys/{key}` with `{"value": ...}` stores the
//!   value pickled, as `client.put(key, value)` does.
//! - `GET /openapi.json` describes all this (`gateway_openapi.json`).
//!
//! Errors are HTTP statuses with `{"error": {"kind", "type", "message",
//! "traceback", "function"}}`: 400 bad JSON or arguments, 401 no or a
//! wrong key, 403 a right missing, 404 no such function, DAG or key, 409 a
//! key holding another lattice type, 413 too large, 500 the function
//! raised (its traceback in the body), 502 its executor died, 503
//! overloaded or no scheduler answering, 504 timeout.
//!
//! Callers authenticate with the Python client's keys: `Authorization:
//! Bearer NAME:KEY`, NAME and KEY the first two fields after the tag of
//! the client's key file (`STATE_DIR/keys/client.key`); the gateway holds
//! the member key and checks the client's key and its rights
//! (`[security.clients]`). A cluster started `--insecure` needs none.
//!
//! One thread accepts; each connection is served by a thread of its own
//! (at most `--connections`, beyond which the answer is 503), one request
//! per connection. Calls share one [`Calls`] (the Python client's: reply
//! thread, scheduler failover); KVS requests one [`Client`].

use crate::pickle;
use anna::client::ClientConfig;
use anna::lattice::{LatticeValue, Lww};
use anna::protocol::compute::{CallArgs, CallErrorKind, CallOutcome, Consistency};
use anna::protocol::seal::{Right, Rights};
use anna::protocol::{Address, Session};
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Map, Value};
use squall_transport::calls::{Calls, SendError};
use squall_transport::Client;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The OpenAPI description served at `/openapi.json`.
const OPENAPI: &str = include_str!("gateway_openapi.json");

/// The largest request body read (a call's arguments are bounded by the
/// cluster's `[limits] max_value_bytes` too).
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, PartialEq, Args, Serialize)]
pub struct GatewayArgs {
    /// Serve HTTP at this address (`HOST:PORT`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// A router of the cluster (repeat).
    #[arg(long = "router", required = true)]
    pub(crate) routers: Vec<String>,
    /// A scheduler to send calls to (repeat).
    #[arg(long = "scheduler")]
    pub(crate) schedulers: Vec<String>,
    /// Host the gateway's sockets for answers bind on.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind_host: String,
    /// Requests served at once; more are answered 503.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Seconds a call may take when its request gives no `timeout`.
    #[arg(long, default_value_t = 60)]
    pub(crate) call_timeout: u32,
}

impl GatewayArgs {
    /// The `squall gateway ...` arguments that parse to these (see
    /// [`crate::argv`]).
    pub(crate) fn to_args(&self) -> Result<Vec<String>> {
        crate::argv::render("gateway", self)
    }
}

/// What every request thread shares.
struct Gateway {
    kvs: Mutex<Client>,
    calls: Option<Calls>,
    call_timeout: u32,
    busy: AtomicUsize,
    limit: usize,
}

/// Runs the gateway until the process is stopped.
pub fn run_gateway(args: &GatewayArgs, client: &ClientConfig) -> Result<()> {
    let routers: Vec<Address> = args.routers.iter().map(|r| Address(r.clone())).collect();
    let bind = Address(format!("tcp://{}:*", args.bind_host));
    let kvs = Client::connect_from(&bind, routers, client.clone())
        .context("connecting to the cluster's routers")?;
    let schedulers: Vec<Address> = args.schedulers.iter().map(|s| Address(s.clone())).collect();
    let calls = if schedulers.is_empty() {
        None
    } else {
        let caller = kvs.writer().0;
        Some(Calls::start(caller, schedulers, &bind).map_err(anyhow::Error::msg)?)
    };
    let gateway = Arc::new(Gateway {
        kvs: Mutex::new(kvs),
        calls,
        call_timeout: args.call_timeout,
        busy: AtomicUsize::new(0),
        limit: args.connections.max(1),
    });
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("binding the gateway at {}", args.listen))?;
    tracing::info!(listen = %args.listen, "gateway serving HTTP");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if gateway.busy.fetch_add(1, Ordering::AcqRel) >= gateway.limit {
            gateway.busy.fetch_sub(1, Ordering::AcqRel);
            let _ = respond(
                stream,
                &error_reply(
                    503,
                    "Overloaded",
                    "the gateway is serving as many requests as it may",
                ),
            );
            continue;
        }
        let gateway = Arc::clone(&gateway);
        let spawned = std::thread::Builder::new()
            .name("gateway-request".into())
            .spawn(move || {
                if let Err(error) = serve(&gateway, stream) {
                    tracing::debug!(%error, "gateway request failed");
                }
                gateway.busy.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a request thread");
        }
    }
    Ok(())
}

/// One HTTP request, as much of it as the gateway reads.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    accept: Option<String>,
    body: Vec<u8>,
}

/// An answer: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json_reply(status: u16, value: &Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: value.to_string().into_bytes(),
    }
}

fn error_reply(status: u16, kind: &str, message: &str) -> Reply {
    json_reply(
        status,
        &json!({"error": {"kind": kind, "type": kind, "message": message, "traceback": "", "function": null}}),
    )
}

fn serve(gateway: &Gateway, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let reply = match read_request(&mut reader) {
        Ok(request) => route(gateway, &request),
        Err(message) => error_reply(400, "BadRequest", &message),
    };
    respond(stream, &reply)
}

fn read_request(reader: &mut impl BufRead) -> Result<Request, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err("not an HTTP request".into());
    };
    let (mut length, mut authorization, mut accept) = (0usize, None, None);
    loop {
        let mut header = String::new();
        reader
            .read_line(&mut header)
            .map_err(|e| format!("reading the headers: {e}"))?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?
            }
            "authorization" => authorization = Some(value),
            "accept" => accept = Some(value),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err(format!("a body of {length} bytes is over {MAX_BODY}"));
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Request {
        method: method.to_string(),
        path,
        authorization,
        accept,
        body,
    })
}

fn respond(mut stream: TcpStream, reply: &Reply) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&reply.body)?;
    stream.flush()
}

/// `%xx` escapes of a path segment decoded.
fn unescape(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn route(gateway: &Gateway, request: &Request) -> Reply {
    if request.method == "GET" && request.path == "/openapi.json" {
        return Reply {
            status: 200,
            content_type: "application/json",
            body: OPENAPI.as_bytes().to_vec(),
        };
    }
    let (kind, name) = match request.path.trim_start_matches('/').split_once('/') {
        Some((kind, rest)) if !rest.is_empty() => match unescape(rest) {
            Some(name) => (kind, name),
            None => return error_reply(400, "BadRequest", "a name that is not UTF-8"),
        },
        _ => return error_reply(404, "NotFound", "no such resource: see /openapi.json"),
    };
    let needed = match (request.method.as_str(), kind) {
        ("POST", "functions" | "dags") => Right::Call,
        ("GET", "keys") => Right::Read,
        ("PUT", "keys") => Right::Write,
        (_, "functions" | "dags" | "keys") => {
            return error_reply(405, "MethodNotAllowed", "see /openapi.json for the methods")
        }
        _ => return error_reply(404, "NotFound", "no such resource: see /openapi.json"),
    };
    if let Err(reply) = authorize(request, needed) {
        return reply;
    }
    let body = || -> Result<Map<String, Value>, Reply> {
        if request.body.is_empty() {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(error_reply(
                400,
                "BadRequest",
                "the body must be a JSON object",
            )),
            Err(e) => Err(error_reply(
                400,
                "BadRequest",
                &format!("the body is not JSON: {e}"),
            )),
        }
    };
    let result = match (request.method.as_str(), kind) {
        ("POST", _) => body().and_then(|b| call(gateway, kind == "dags", &name, &b, request)),
        ("GET", _) => get_key(gateway, &name),
        _ => body().and_then(|b| put_key(gateway, &name, &b)),
    };
    result.unwrap_or_else(|reply| reply)
}

/// Checks the caller's key and that its client has `needed`.
fn authorize(request: &Request, needed: Right) -> Result<(), Reply> {
    let security = squall_transport::security::security();
    if security.identity.is_none() {
        return Ok(());
    }
    let Some(token) = request
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
    else {
        return Err(error_reply(
            401,
            "Unauthorized",
            "no `Authorization: Bearer NAME:KEY` (a client's name and key, from its key file)",
        ));
    };
    let Some((name, key)) = token.trim().split_once(':') else {
        return Err(error_reply(
            401,
            "Unauthorized",
            "the bearer token is not NAME:KEY",
        ));
    };
    let rights: Rights = security
        .client_rights(name, key)
        .map_err(|why| error_reply(401, "Unauthorized", &why))?;
    if !rights.has(needed) {
        return Err(error_reply(
            403,
            "PermissionDenied",
            &format!("client `{name}` lacks the `{needed}` right ([security.clients])"),
        ));
    }
    Ok(())
}

/// A JSON argument list as `CallArgs`.
fn call_args(args: &[Value], kwargs: &Map<String, Value>) -> Result<CallArgs, Reply> {
    let (payload, refs) =
        pickle::call_payload(args, kwargs).map_err(|e| error_reply(400, "BadArguments", &e))?;
    Ok(CallArgs { payload, refs })
}

fn call(
    gateway: &Gateway,
    dag: bool,
    name: &str,
    body: &Map<String, Value>,
    request: &Request,
) -> Result<Reply, Reply> {
    let Some(calls) = &gateway.calls else {
        return Err(error_reply(
            503,
            "Unavailable",
            "the gateway knows no scheduler",
        ));
    };
    let timeout = match body.get("timeout") {
        None | Some(Value::Null) => gateway.call_timeout,
        Some(t) => match t.as_f64() {
            Some(s) if s > 0.0 => (s.min(86_400.0)).ceil() as u32,
            _ => {
                return Err(error_reply(
                    400,
                    "BadRequest",
                    "`timeout` is a positive number of seconds",
                ))
            }
        },
    };
    let timeout_ms = timeout.saturating_mul(1000);
    let empty = Vec::new();
    let sent = if dag {
        let mut wire = Vec::new();
        match body.get("args") {
            None | Some(Value::Null) => {}
            Some(Value::Object(per)) => {
                for (function, args) in per {
                    let Value::Array(args) = args else {
                        return Err(error_reply(
                            400,
                            "BadArguments",
                            &format!("the arguments of `{function}` must be an array"),
                        ));
                    };
                    wire.push((function.clone(), call_args(args, &Map::new())?));
                }
            }
            Some(_) => {
                return Err(error_reply(
                    400,
                    "BadArguments",
                    "`args` of a DAG call maps functions to arrays",
                ))
            }
        }
        calls.call_dag(
            name.to_string(),
            wire,
            timeout_ms,
            Session::default(),
            Consistency::Lww,
            false,
            false,
        )
    } else {
        let args = match body.get("args") {
            None | Some(Value::Null) => &empty,
            Some(Value::Array(a)) => a,
            Some(_) => return Err(error_reply(400, "BadArguments", "`args` must be an array")),
        };
        let kwargs = match body.get("kwargs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(k)) => k.clone(),
            Some(_) => {
                return Err(error_reply(
                    400,
                    "BadArguments",
                    "`kwargs` must be an object",
                ))
            }
        };
        let args = call_args(args, &kwargs)?;
        // `"version": N` calls version N (`NAME@N`, as the Python client's
        // `call(name, version=N)`); the plain name goes through the
        // function's traffic split at the scheduler.
        let name = match body.get("version") {
            None | Some(Value::Null) => name.to_string(),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => format!("{name}@{n}"),
                _ => {
                    return Err(error_reply(
                        400,
                        "BadRequest",
                        "`version` is a positive integer",
                    ))
                }
            },
        };
        calls.call(
            name,
            args,
            timeout_ms,
            Session::default(),
            Consistency::Lww,
            false,
            None,
            false,
        )
    };
    let seq = sent.map_err(|e| match e {
        SendError::Unavailable(m) => error_reply(503, "Unavailable", &m),
        SendError::Failed(m) => error_reply(503, "Unavailable", &m),
    })?;
    let wait = Duration::from_millis(u64::from(timeout_ms) + 2_000);
    let Some((outcome, _, _, _)) = calls.wait(seq, Some(wait)) else {
        calls.forget(seq);
        return Err(error_reply(
            504,
            "Timeout",
            "no answer before the call's deadline",
        ));
    };
    match outcome {
        CallOutcome::Value(bytes) => {
            let wants_pickle = request
                .accept
                .as_deref()
                .is_some_and(|a| a.contains("application/x-python-pickle"));
            if wants_pickle {
                return Ok(Reply {
                    status: 200,
                    content_type: "application/x-python-pickle",
                    body: bytes,
                });
            }
            match pickle::to_json(&bytes) {
                Some(result) => Ok(json_reply(200, &json!({ "result": result }))),
                None => Err(error_reply(
                    406,
                    "NotJson",
                    "the result is not a plain value JSON can carry; ask with \
                     `Accept: application/x-python-pickle` for its pickle",
                )),
            }
        }
        CallOutcome::Error(e) => {
            let status = match e.kind {
                CallErrorKind::Remote | CallErrorKind::BadFunction => 500,
                CallErrorKind::UnknownFunction | CallErrorKind::UnknownDag => 404,
                CallErrorKind::BadArguments => 400,
                CallErrorKind::Timeout => 504,
                CallErrorKind::ExecutorDied => 502,
                CallErrorKind::Overloaded | CallErrorKind::Unavailable => 503,
                CallErrorKind::TooLarge => 413,
                CallErrorKind::PermissionDenied => 403,
            };
            Err(json_reply(
                status,
                &json!({"error": {
                    "kind": format!("{:?}", e.kind),
                    "type": e.type_name,
                    "message": e.message,
                    "traceback": e.traceback,
                    "function": e.function,
                }}),
            ))
        }
    }
}

fn kvs_error(e: anna::client::ClientError) -> Reply {
    use anna::client::ClientError;
    let status = match &e {
        ClientError::TypeMismatch { .. } | ClientError::WrongKind { .. } => 409,
        ClientError::Refused { .. } => 413,
        ClientError::PermissionDenied { .. } => 403,
        ClientError::Timeout { .. } => 504,
        _ => 503,
    };
    error_reply(status, "KvsError", &e.to_string())
}

fn get_key(gateway: &Gateway, key: &str) -> Result<Reply, Reply> {
    let value = gateway
        .kvs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .map_err(kvs_error)?;
    match value {
        None => Err(error_reply(
            404,
            "NotFound",
            &format!("`{key}` holds no value"),
        )),
        Some(LatticeValue::Lww(lww)) => {
            let bytes = lww.value();
            let value = pickle::to_json(bytes).unwrap_or_else(|| {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                json!({ "$bytes": hex })
            });
            Ok(json_reply(200, &json!({ "value": value })))
        }
        Some(other) => Err(error_reply(
            409,
            "WrongKind",
            &format!(
                "`{key}` holds a {} value; the gateway serves last-writer-wins values",
                other.kind()
            ),
        )),
    }
}

fn put_key(gateway: &Gateway, key: &str, body: &Map<String, Value>) -> Result<Reply, Reply> {
    let Some(value) = body.get("value") else {
        return Err(error_reply(
            400,
            "BadRequest",
            "the body is {\"value\": ...}",
        ));
    };
    // The value pickled as the Python client pickles a plain object: the
    // second item of a one-item call payload's pickle.
    let bytes = pickle::value_pickle(value).map_err(|e| error_reply(400, "BadRequest", &e))?;
    let mut kvs = gateway.kvs.lock().unwrap_or_else(|e| e.into_inner());
    let at = kvs.timestamp();
    kvs.put(key, LatticeValue::Lww(Lww::new(at, bytes)))
        .map_err(kvs_error)?;
    Ok(json_reply(200, &json!({ "stored": key })))
}
