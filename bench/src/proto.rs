//! Client side of every protocol the harness speaks: SignalR (JSON and MessagePack, through
//! herald's negotiate redirect and the service's negotiate), Engine.IO v4 / Socket.IO, and raw
//! WebSocket text. Connects, and pulls `(seq, t)` out of each received frame.

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// SignalR's record separator.
const RS: u8 = 0x1e;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// SignalR JSON hub protocol (herald's negotiate URL given).
    SignalrJson,
    /// SignalR MessagePack hub protocol (herald's negotiate URL given).
    SignalrMsgpack,
    /// Engine.IO v4 + Socket.IO over WebSocket (ws URL given).
    Socketio,
    /// Raw WebSocket text frames, the message itself (ws URL given).
    Raw,
}

/// One open connection and what the service called it.
pub struct Conn {
    pub ws: Ws,
    pub connection_id: Option<String>,
}

#[derive(Deserialize)]
struct Redirect {
    url: String,
    #[serde(rename = "accessToken")]
    access_token: String,
}

#[derive(Deserialize)]
struct Negotiated {
    #[serde(rename = "connectionId")]
    connection_id: String,
    #[serde(rename = "connectionToken")]
    connection_token: Option<String>,
}

/// Opens one connection. `url` is herald's negotiate URL for SignalR, else the WebSocket URL.
/// A WebSocket with a small read buffer. tungstenite's default (128 KiB) is zeroed on every
/// read, which made the load tool, not the server, the bottleneck: 64% of its CPU was that
/// memset at 40k deliveries/s.
async fn open_ws(
    url: &str,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER);
    tokio_tungstenite::connect_async_with_config(url, Some(config), false).await
}

/// The load tool's per-connection read buffer: more than a batch of records from herald
/// (8 KiB), so that one read takes a whole message.
const READ_BUFFER: usize = 16 * 1024;

pub async fn connect(
    proto: Proto,
    url: &str,
    user: Option<&str>,
    http: &reqwest::Client,
) -> Result<Conn> {
    match proto {
        Proto::SignalrJson | Proto::SignalrMsgpack => signalr(proto, url, user, http).await,
        Proto::Socketio => socketio(url).await,
        Proto::Raw => {
            let (ws, _) = open_ws(url)
                .await
                .with_context(|| format!("WebSocket {url}"))?;
            Ok(Conn {
                ws,
                connection_id: None,
            })
        }
    }
}

async fn signalr(
    proto: Proto,
    url: &str,
    user: Option<&str>,
    http: &reqwest::Client,
) -> Result<Conn> {
    let mut req = http.post(url);
    if let Some(user) = user {
        req = req.header("x-bench-user", user);
    }
    let redirect: Redirect = req
        .send()
        .await
        .with_context(|| format!("negotiate {url}"))?
        .error_for_status()
        .with_context(|| format!("negotiate {url}"))?
        .json()
        .await
        .with_context(|| format!("negotiate {url}: body"))?;
    let (base, query) = redirect.url.split_once('?').unwrap_or((&redirect.url, ""));
    let slash = if base.ends_with('/') { "" } else { "/" };
    let negotiate = format!("{base}{slash}negotiate?{query}&negotiateVersion=1");
    let negotiated: Negotiated = http
        .post(&negotiate)
        .bearer_auth(&redirect.access_token)
        .send()
        .await
        .with_context(|| format!("service negotiate {negotiate}"))?
        .error_for_status()
        .with_context(|| format!("service negotiate {negotiate}"))?
        .json()
        .await
        .with_context(|| format!("service negotiate {negotiate}: body"))?;
    let id = negotiated
        .connection_token
        .as_deref()
        .unwrap_or(&negotiated.connection_id);
    let ws_base = base.replacen("http", "ws", 1);
    let ws_url = format!(
        "{ws_base}?{query}&id={id}&access_token={}",
        redirect.access_token
    );
    let (mut ws, _) = open_ws(&ws_url)
        .await
        .with_context(|| format!("WebSocket {ws_base}"))?;
    let name = if proto == Proto::SignalrJson {
        "json"
    } else {
        "messagepack"
    };
    ws.send(Message::text(format!(
        "{{\"protocol\":\"{name}\",\"version\":1}}\u{1e}"
    )))
    .await
    .context("sending the handshake")?;
    loop {
        let frame = ws
            .next()
            .await
            .context("closed before the handshake answer")?
            .context("reading the handshake answer")?;
        let data = frame.into_data();
        if data.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&data);
        if text.contains("error") {
            bail!("handshake refused: {text}");
        }
        break;
    }
    Ok(Conn {
        ws,
        connection_id: Some(negotiated.connection_id),
    })
}

async fn socketio(url: &str) -> Result<Conn> {
    let (mut ws, _) = open_ws(url)
        .await
        .with_context(|| format!("WebSocket {url}"))?;
    // Engine.IO open packet "0{...}", then the Socket.IO connect "40" and its answer "40{...}".
    let open = ws
        .next()
        .await
        .context("closed before the Engine.IO open packet")?
        .context("reading the Engine.IO open packet")?
        .into_data();
    if open.first() != Some(&b'0') {
        bail!(
            "expected an Engine.IO open packet, got {:?}",
            String::from_utf8_lossy(&open)
        );
    }
    ws.send(Message::text("40"))
        .await
        .context("sending the Socket.IO connect")?;
    loop {
        let data = ws
            .next()
            .await
            .context("closed before the Socket.IO connect answer")?
            .context("reading the Socket.IO connect answer")?
            .into_data();
        if data.starts_with(b"40") {
            break;
        }
        if data.starts_with(b"44") {
            bail!(
                "Socket.IO connect refused: {}",
                String::from_utf8_lossy(&data)
            );
        }
    }
    Ok(Conn {
        ws,
        connection_id: None,
    })
}

/// What one frame held.
#[derive(Default)]
pub struct Frame {
    /// `(seq, t)` of each delivery in the frame.
    pub deliveries: Vec<(u64, u64)>,
    /// An answer the client owes (Engine.IO pong).
    pub reply: Option<&'static str>,
    /// The server closed the session at the protocol level.
    pub closed: bool,
}

/// The keep-alive a client sends on its own, if the protocol wants one.
pub fn keepalive(proto: Proto) -> Option<Message> {
    match proto {
        Proto::SignalrJson => Some(Message::text("{\"type\":6}\u{1e}")),
        // length 2, then fixarray(1) [6]... as MessagePack: 0x91 0x06
        Proto::SignalrMsgpack => Some(Message::binary(vec![0x02, 0x91, 0x06])),
        Proto::Socketio | Proto::Raw => None,
    }
}

/// Decodes one received frame into `out`.
pub fn decode(proto: Proto, data: &[u8], out: &mut Frame) {
    match proto {
        Proto::SignalrJson => {
            for record in data.split(|b| *b == RS).filter(|r| !r.is_empty()) {
                if let Some(d) = scan(record) {
                    out.deliveries.push(d);
                } else if find(record, b"\"type\":7").is_some() {
                    out.closed = true;
                }
            }
        }
        Proto::SignalrMsgpack => decode_msgpack(data, out),
        Proto::Socketio => {
            if data == b"2" {
                out.reply = Some("3");
            } else if data.starts_with(b"42") {
                out.deliveries.extend(scan(data));
            } else if data.starts_with(b"41") || data == b"1" {
                out.closed = true;
            }
        }
        Proto::Raw => out.deliveries.extend(scan(data)),
    }
}

fn decode_msgpack(mut data: &[u8], out: &mut Frame) {
    while !data.is_empty() {
        // Varint length prefix: 7 bits a byte, least significant first, at most 5 bytes.
        let mut len = 0usize;
        let mut used = 0;
        for (i, b) in data.iter().take(5).enumerate() {
            len |= usize::from(b & 0x7f) << (7 * i);
            used = i + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(record) = data.get(used..used + len) else {
            return;
        };
        data = &data[used + len..];
        let Ok(value) = rmpv::decode::read_value(&mut &record[..]) else {
            continue;
        };
        let Some(items) = value.as_array() else {
            continue;
        };
        match items.first().and_then(|v| v.as_u64()) {
            Some(1) => {
                // [1, headers, invocationId, target, arguments, ...]
                let arg = items
                    .get(4)
                    .and_then(|a| a.as_array())
                    .and_then(|a| a.first())
                    .and_then(|a| a.as_map());
                if let Some(map) = arg {
                    let field = |k: &str| {
                        map.iter()
                            .find(|(key, _)| key.as_str() == Some(k))
                            .and_then(|(_, v)| v.as_u64())
                    };
                    if let (Some(seq), Some(t)) = (field("seq"), field("t")) {
                        out.deliveries.push((seq, t));
                    }
                }
            }
            Some(7) => out.closed = true,
            _ => {}
        }
    }
}

/// `(seq, t)` from a JSON text holding `"seq":N` and `"t":N` anywhere.
pub fn scan(text: &[u8]) -> Option<(u64, u64)> {
    Some((
        number_after(text, b"\"seq\":")?,
        number_after(text, b"\"t\":")?,
    ))
}

fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let mut n: u64 = 0;
    let mut any = false;
    for d in text[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
    {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_records() {
        let mut f = Frame::default();
        let frame = b"{\"type\":1,\"target\":\"m\",\"arguments\":[{\"p\":\"x\",\"seq\":7,\"t\":123}]}\x1e{\"type\":6}\x1e{\"type\":1,\"target\":\"m\",\"arguments\":[{\"seq\":8,\"t\":5}]}\x1e";
        decode(Proto::SignalrJson, frame, &mut f);
        assert_eq!(f.deliveries, vec![(7, 123), (8, 5)]);
        assert!(!f.closed);
        decode(
            Proto::SignalrJson,
            b"{\"type\":7,\"error\":\"x\"}\x1e",
            &mut f,
        );
        assert!(f.closed);
    }

    #[test]
    fn msgpack_records() {
        let mut buf = Vec::new();
        let value = rmpv::Value::Array(vec![
            1.into(),
            rmpv::Value::Map(vec![]),
            rmpv::Value::Nil,
            "m".into(),
            rmpv::Value::Array(vec![rmpv::Value::Map(vec![
                ("seq".into(), 9.into()),
                ("t".into(), 1_700_000_000_000_000u64.into()),
            ])]),
        ]);
        rmpv::encode::write_value(&mut buf, &value).expect("encode");
        let mut frame = vec![u8::try_from(buf.len()).expect("short record")];
        frame.extend(&buf);
        frame.extend([0x02, 0x91, 0x06]);
        let mut f = Frame::default();
        decode(Proto::SignalrMsgpack, &frame, &mut f);
        assert_eq!(f.deliveries, vec![(9, 1_700_000_000_000_000)]);
    }

    #[test]
    fn socketio_packets() {
        let mut f = Frame::default();
        decode(
            Proto::Socketio,
            b"42[\"m\",{\"seq\":3,\"t\":4,\"p\":\"\"}]",
            &mut f,
        );
        decode(Proto::Socketio, b"2", &mut f);
        assert_eq!(f.deliveries, vec![(3, 4)]);
        assert_eq!(f.reply, Some("3"));
    }
}
