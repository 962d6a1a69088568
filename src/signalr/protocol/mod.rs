//! SignalR hub protocol: `HubMessage`, the handshake and the record separator, with the JSON
//! (`json.rs`) and MessagePack (`msgpack.rs`) encodings → serde only.
//!
//! Pure functions over byte slices: nothing here spawns tasks or does I/O, and no input can
//! make these functions panic: every malformed input is a [`ProtocolError`].
//!
//! Wire format per ASP.NET Core's `HubProtocol.md`: the handshake is always JSON terminated by
//! `0x1E`; JSON messages are objects each followed by `0x1E` (several may share one frame);
//! MessagePack messages are `VarInt(length) + array`.

pub mod json;
pub mod msgpack;

use std::collections::BTreeMap;

use serde_json::Value;

/// Terminates every JSON record and the handshake (ASCII "record separator").
pub const RECORD_SEPARATOR: u8 = 0x1E;

/// The highest protocol version the service accepts for either protocol. The JS client 8+
/// sends version 2 (stateful reconnect era); older clients and the Python clients send 1.
pub const MAX_PROTOCOL_VERSION: u32 = 2;

/// The longest handshake request accepted, in bytes; a longer one is not a handshake.
pub const MAX_HANDSHAKE_LEN: usize = 4096;

/// Invocation headers (`headers{}`): string to string, unknown ones ignored.
pub type Headers = BTreeMap<String, String>;

/// A hub protocol, as named in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `json`: UTF-8 text frames, records ended by `0x1E`.
    Json,
    /// `messagepack`: binary frames, each message length-prefixed.
    MessagePack,
}

impl Protocol {
    /// The handshake name: `json` or `messagepack`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// Look a protocol up by its handshake name (case-insensitive, as ASP.NET does).
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("json") {
            Some(Protocol::Json)
        } else if name.eq_ignore_ascii_case("messagepack") {
            Some(Protocol::MessagePack)
        } else {
            None
        }
    }

    /// Whether the protocol needs a binary-capable transport (WebSocket Binary, long polling).
    pub fn is_binary(self) -> bool {
        matches!(self, Protocol::MessagePack)
    }

    /// Encode one message with its framing (`0x1E` for JSON, a VarInt prefix for MessagePack).
    pub fn encode(self, message: &HubMessage) -> Result<Vec<u8>, ProtocolError> {
        match self {
            Protocol::Json => json::encode(message),
            Protocol::MessagePack => msgpack::encode(message),
        }
    }

    /// Decode every message of one complete frame (a WebSocket message or a POST body).
    /// A partial trailing message is an error.
    pub fn decode_frame(self, frame: &[u8]) -> Result<Vec<HubMessage>, ProtocolError> {
        match self {
            Protocol::Json => json::decode_frame(frame),
            Protocol::MessagePack => msgpack::decode_frame(frame),
        }
    }

    /// Like [`Protocol::decode_frame`], each message with its bytes exactly as sent, without
    /// the framing (no `0x1E`, no VarInt prefix): what serverless upstream forwards.
    pub fn decode_frame_raw(self, frame: &[u8]) -> Result<Vec<RawMessage<'_>>, ProtocolError> {
        match self {
            Protocol::Json => json::decode_frame_raw(frame),
            Protocol::MessagePack => msgpack::decode_frame_raw(frame),
        }
    }
}

/// One decoded message and its unframed bytes (see [`Protocol::decode_frame_raw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage<'a> {
    pub message: HubMessage,
    pub bytes: &'a [u8],
}

/// How a `Completion` ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionResult {
    /// Neither `result` nor `error` (a void method).
    Void,
    /// `result` (may be JSON `null`).
    Value(Value),
    /// `error` with its message.
    Error(String),
}

/// One hub protocol message (`type` 1 to 9).
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1: call `target` with `arguments`; no `invocation_id` means fire-and-forget.
    Invocation {
        headers: Headers,
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Value>,
        stream_ids: Vec<String>,
    },
    /// Type 2: one item of a stream.
    StreamItem {
        headers: Headers,
        invocation_id: String,
        item: Value,
    },
    /// Type 3: the end of an invocation.
    Completion {
        headers: Headers,
        invocation_id: String,
        result: CompletionResult,
    },
    /// Type 4: call a streaming method.
    StreamInvocation {
        headers: Headers,
        invocation_id: String,
        target: String,
        arguments: Vec<Value>,
        stream_ids: Vec<String>,
    },
    /// Type 5: cancel a stream.
    CancelInvocation {
        headers: Headers,
        invocation_id: String,
    },
    /// Type 6: keep-alive; never carries headers.
    Ping,
    /// Type 7: the sender is closing the connection.
    Close {
        error: Option<String>,
        allow_reconnect: bool,
    },
    /// Type 8: highest trackable sequence id processed (stateful reconnect).
    Ack { sequence_id: u64 },
    /// Type 9: id of the next trackable message (stateful reconnect).
    Sequence { sequence_id: u64 },
}

impl HubMessage {
    /// A fire-and-forget invocation with no headers: what a server push looks like.
    pub fn invocation(target: impl Into<String>, arguments: Vec<Value>) -> Self {
        HubMessage::Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: target.into(),
            arguments,
            stream_ids: Vec::new(),
        }
    }

    /// A `Completion` carrying an error for `invocation_id`.
    pub fn completion_error(invocation_id: impl Into<String>, error: impl Into<String>) -> Self {
        HubMessage::Completion {
            headers: Headers::new(),
            invocation_id: invocation_id.into(),
            result: CompletionResult::Error(error.into()),
        }
    }

    /// Whether the message gets a sequence id under stateful reconnect (ASP.NET's
    /// `HubInvocationMessage`s: Invocation, StreamItem, Completion, StreamInvocation,
    /// CancelInvocation). Ping, Close, Ack and Sequence are not tracked.
    pub fn is_trackable(&self) -> bool {
        matches!(
            self,
            HubMessage::Invocation { .. }
                | HubMessage::StreamItem { .. }
                | HubMessage::Completion { .. }
                | HubMessage::StreamInvocation { .. }
                | HubMessage::CancelInvocation { .. }
        )
    }

    /// The numeric `type` of this message.
    pub fn type_id(&self) -> u8 {
        match self {
            HubMessage::Invocation { .. } => 1,
            HubMessage::StreamItem { .. } => 2,
            HubMessage::Completion { .. } => 3,
            HubMessage::StreamInvocation { .. } => 4,
            HubMessage::CancelInvocation { .. } => 5,
            HubMessage::Ping => 6,
            HubMessage::Close { .. } => 7,
            HubMessage::Ack { .. } => 8,
            HubMessage::Sequence { .. } => 9,
        }
    }
}

/// Why bytes could not be decoded (or, rarely, encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the frame ends with an incomplete message")]
    Truncated,
    #[error("empty message")]
    Empty,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid MessagePack: {0}")]
    MessagePack(String),
    #[error("message is not a JSON object")]
    NotAnObject,
    #[error("message is not a MessagePack array")]
    NotAnArray,
    #[error("missing required property `{0}`")]
    Missing(&'static str),
    #[error("property `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("a completion cannot carry both `result` and `error`")]
    ResultAndError,
    #[error("invalid completion result kind {0}")]
    ResultKind(u64),
    #[error("invalid length prefix")]
    LengthPrefix,
    #[error("{0} bytes of trailing data after the message")]
    TrailingData(usize),
    #[error("handshake is malformed: {0}")]
    Handshake(String),
    #[error("handshake request is longer than {MAX_HANDSHAKE_LEN} bytes")]
    HandshakeTooLong,
    #[error("could not encode message: {0}")]
    Encode(String),
}

/// The client's first message: `{"protocol":"json","version":1}` + `0x1E`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The protocol name as sent (see [`Protocol::from_name`]).
    pub protocol: String,
    /// The protocol version the client speaks.
    pub version: u32,
}

impl HandshakeRequest {
    /// The request bytes, terminator included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::json!({"protocol": self.protocol, "version": self.version})
            .to_string()
            .into_bytes();
        out.push(RECORD_SEPARATOR);
        out
    }
}

/// Parse a handshake request from the start of `buf`.
///
/// `Ok(None)`: no `0x1E` yet (accumulate more input, up to [`MAX_HANDSHAKE_LEN`]).
/// `Ok(Some((request, consumed)))`: `consumed` bytes (terminator included) were the
/// handshake; anything after them is hub messages that arrived in the same frame.
pub fn parse_handshake_request(
    buf: &[u8],
) -> Result<Option<(HandshakeRequest, usize)>, ProtocolError> {
    let Some(end) = buf.iter().position(|b| *b == RECORD_SEPARATOR) else {
        return if buf.len() > MAX_HANDSHAKE_LEN {
            Err(ProtocolError::HandshakeTooLong)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HANDSHAKE_LEN {
        return Err(ProtocolError::HandshakeTooLong);
    }
    let value: Value =
        serde_json::from_slice(&buf[..end]).map_err(|e| ProtocolError::Handshake(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| ProtocolError::Handshake("not a JSON object".into()))?;
    let protocol = object
        .get("protocol")
        .and_then(Value::as_str)
        .ok_or_else(|| ProtocolError::Handshake("missing string `protocol`".into()))?;
    let version = object
        .get("version")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ProtocolError::Handshake("missing integer `version`".into()))?;
    Ok(Some((
        HandshakeRequest {
            protocol: protocol.to_string(),
            version,
        },
        end + 1,
    )))
}

/// The handshake response: `{}` + `0x1E` on success, `{"error":"…"}` + `0x1E` otherwise.
pub fn encode_handshake_response(error: Option<&str>) -> Vec<u8> {
    let mut out = match error {
        None => b"{}".to_vec(),
        Some(e) => serde_json::json!({ "error": e }).to_string().into_bytes(),
    };
    out.push(RECORD_SEPARATOR);
    out
}

/// Parse a handshake response from the start of `buf` (clients and tests).
///
/// `Ok(None)`: no `0x1E` yet. `Ok(Some((error, consumed)))`: `error` is the server's
/// `error` text if it refused, `consumed` the bytes used (terminator included).
pub fn parse_handshake_response(
    buf: &[u8],
) -> Result<Option<(Option<String>, usize)>, ProtocolError> {
    let Some(end) = buf.iter().position(|b| *b == RECORD_SEPARATOR) else {
        return Ok(None);
    };
    let value: Value =
        serde_json::from_slice(&buf[..end]).map_err(|e| ProtocolError::Handshake(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| ProtocolError::Handshake("not a JSON object".into()))?;
    let error = match object.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ProtocolError::Handshake("`error` is not a string".into())),
    };
    Ok(Some((error, end + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_request_parses_with_trailing_data() {
        let buf = b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":6}\x1e";
        let (req, used) = parse_handshake_request(buf).unwrap().unwrap();
        assert_eq!(req.protocol, "json");
        assert_eq!(req.version, 1);
        assert_eq!(&buf[used..], b"{\"type\":6}\x1e");
        assert_eq!(
            HandshakeRequest {
                protocol: "messagepack".into(),
                version: 1
            }
            .encode(),
            b"{\"protocol\":\"messagepack\",\"version\":1}\x1e"
        );
    }

    #[test]
    fn handshake_request_incomplete_and_malformed() {
        assert_eq!(parse_handshake_request(b"{\"protocol\":").unwrap(), None);
        assert!(parse_handshake_request(b"{\"type\":6}\x1e").is_err());
        assert!(parse_handshake_request(b"[1,2]\x1e").is_err());
        assert!(parse_handshake_request(b"\xff\xfe\x1e").is_err());
        assert!(parse_handshake_request(b"{\"protocol\":\"json\",\"version\":-1}\x1e").is_err());
        assert_eq!(
            parse_handshake_request(&vec![b' '; MAX_HANDSHAKE_LEN + 1]),
            Err(ProtocolError::HandshakeTooLong)
        );
    }

    #[test]
    fn handshake_responses() {
        assert_eq!(encode_handshake_response(None), b"{}\x1e");
        assert_eq!(
            encode_handshake_response(Some("Requested protocol 'x' is not available.")),
            b"{\"error\":\"Requested protocol 'x' is not available.\"}\x1e".to_vec()
        );
        let (err, used) = parse_handshake_response(b"{}\x1e{\"type\":6}\x1e")
            .unwrap()
            .unwrap();
        assert_eq!((err, used), (None, 3));
        let (err, _) = parse_handshake_response(b"{\"error\":\"no\"}\x1e")
            .unwrap()
            .unwrap();
        assert_eq!(err.as_deref(), Some("no"));
    }

    #[test]
    fn ack_and_sequence_bytes_and_trackability() {
        let ack = HubMessage::Ack { sequence_id: 1394 };
        let sequence = HubMessage::Sequence { sequence_id: 1234 };
        assert_eq!(
            Protocol::Json.encode(&ack).unwrap(),
            b"{\"type\":8,\"sequenceId\":1394}\x1e"
        );
        assert_eq!(
            Protocol::Json.encode(&sequence).unwrap(),
            b"{\"type\":9,\"sequenceId\":1234}\x1e"
        );
        // [8, 5] and [9, 300] with their length prefixes.
        assert_eq!(
            Protocol::MessagePack
                .encode(&HubMessage::Ack { sequence_id: 5 })
                .unwrap(),
            vec![3, 0x92, 8, 5]
        );
        assert_eq!(
            Protocol::MessagePack
                .encode(&HubMessage::Sequence { sequence_id: 300 })
                .unwrap(),
            vec![5, 0x92, 9, 0xcd, 0x01, 0x2c]
        );
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            for message in [&ack, &sequence] {
                let bytes = protocol.encode(message).unwrap();
                assert_eq!(
                    protocol.decode_frame(&bytes).unwrap(),
                    vec![message.clone()]
                );
            }
        }
        assert!(HubMessage::invocation("t", vec![]).is_trackable());
        assert!(HubMessage::completion_error("1", "e").is_trackable());
        for untracked in [
            HubMessage::Ping,
            ack,
            sequence,
            HubMessage::Close {
                error: None,
                allow_reconnect: true,
            },
        ] {
            assert!(!untracked.is_trackable(), "{untracked:?}");
        }
    }

    #[test]
    fn raw_messages_are_the_bytes_as_sent_without_framing() {
        let json =
            b"{\"type\":1,\"target\":\"a\",\"arguments\":[]}\x1e{\"type\":6}\x1e{\"type\":99}\x1e";
        let raw = Protocol::Json.decode_frame_raw(json).unwrap();
        assert_eq!(raw.len(), 2, "the unknown type is skipped");
        assert_eq!(
            raw[0].bytes,
            b"{\"type\":1,\"target\":\"a\",\"arguments\":[]}"
        );
        assert_eq!(raw[0].message, HubMessage::invocation("a", vec![]));
        assert_eq!(raw[1].bytes, b"{\"type\":6}");
        assert_eq!(raw[1].message, HubMessage::Ping);
        let mut frame = Protocol::MessagePack
            .encode(&HubMessage::invocation("b", vec![serde_json::json!(1)]))
            .unwrap();
        let first_len = frame.len();
        frame.extend(Protocol::MessagePack.encode(&HubMessage::Ping).unwrap());
        let raw = Protocol::MessagePack.decode_frame_raw(&frame).unwrap();
        assert_eq!(raw.len(), 2);
        assert_eq!(
            raw[0].bytes,
            &frame[1..first_len],
            "without the VarInt prefix"
        );
        assert_eq!(raw[1].message, HubMessage::Ping);
        assert!(Protocol::Json.decode_frame_raw(b"{\"type\":6}").is_err());
        assert!(Protocol::MessagePack.decode_frame_raw(&frame[..3]).is_err());
    }

    #[test]
    fn protocol_names() {
        assert_eq!(Protocol::from_name("JSON"), Some(Protocol::Json));
        assert_eq!(
            Protocol::from_name("messagepack"),
            Some(Protocol::MessagePack)
        );
        assert_eq!(Protocol::from_name("blazorpack"), None);
    }
}
