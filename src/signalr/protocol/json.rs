//! The JSON hub protocol: one JSON object per message, each followed by `0x1E`, several per
//! frame. Encoding writes properties in ASP.NET Core's order (`type` first) so the bytes match
//! what Azure SignalR sends; decoding ignores unknown properties and unknown message types.

use serde_json::{Map, Value};

use super::{CompletionResult, Headers, HubMessage, ProtocolError, RECORD_SEPARATOR};

/// Encode one message as a JSON record, `0x1E` included.
pub fn encode(message: &HubMessage) -> Result<Vec<u8>, ProtocolError> {
    let mut w = Writer::new(message.type_id());
    match message {
        HubMessage::Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            w.headers(headers)?;
            if let Some(id) = invocation_id {
                w.field("invocationId", id)?;
            }
            w.field("target", target)?;
            w.field("arguments", arguments)?;
            if !stream_ids.is_empty() {
                w.field("streamIds", stream_ids)?;
            }
        }
        HubMessage::StreamItem {
            headers,
            invocation_id,
            item,
        } => {
            w.headers(headers)?;
            w.field("invocationId", invocation_id)?;
            w.field("item", item)?;
        }
        HubMessage::Completion {
            headers,
            invocation_id,
            result,
        } => {
            w.headers(headers)?;
            w.field("invocationId", invocation_id)?;
            match result {
                CompletionResult::Void => {}
                CompletionResult::Value(v) => w.field("result", v)?,
                CompletionResult::Error(e) => w.field("error", e)?,
            }
        }
        HubMessage::StreamInvocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            w.headers(headers)?;
            w.field("invocationId", invocation_id)?;
            w.field("target", target)?;
            w.field("arguments", arguments)?;
            if !stream_ids.is_empty() {
                w.field("streamIds", stream_ids)?;
            }
        }
        HubMessage::CancelInvocation {
            headers,
            invocation_id,
        } => {
            w.headers(headers)?;
            w.field("invocationId", invocation_id)?;
        }
        HubMessage::Ping => {}
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            if let Some(e) = error {
                w.field("error", e)?;
            }
            if *allow_reconnect {
                w.field("allowReconnect", &true)?;
            }
        }
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            w.field("sequenceId", sequence_id)?;
        }
    }
    Ok(w.finish())
}

/// Writes `{"type":N,...}` + `0x1E` with properties in insertion order.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn new(type_id: u8) -> Self {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"type\":");
        out.extend_from_slice(type_id.to_string().as_bytes());
        Writer { out }
    }

    fn field<T: serde::Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<(), ProtocolError> {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        serde_json::to_writer(&mut self.out, value)
            .map_err(|e| ProtocolError::Encode(e.to_string()))
    }

    fn headers(&mut self, headers: &Headers) -> Result<(), ProtocolError> {
        if headers.is_empty() {
            Ok(())
        } else {
            self.field("headers", headers)
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out.push(RECORD_SEPARATOR);
        self.out
    }
}

/// Decode every record of one complete frame. The frame must end with `0x1E`; an empty frame
/// holds no messages. Records of unknown `type` are skipped, as ASP.NET Core does.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<HubMessage>, ProtocolError> {
    Ok(decode_frame_raw(frame)?
        .into_iter()
        .map(|raw| raw.message)
        .collect())
}

/// [`decode_frame`], each message with its record's bytes (without the `0x1E`).
pub fn decode_frame_raw(frame: &[u8]) -> Result<Vec<super::RawMessage<'_>>, ProtocolError> {
    if frame.is_empty() {
        return Ok(Vec::new());
    }
    if frame.last() != Some(&RECORD_SEPARATOR) {
        return Err(ProtocolError::Truncated);
    }
    let body = &frame[..frame.len() - 1];
    let mut messages = Vec::new();
    for record in body.split(|b| *b == RECORD_SEPARATOR) {
        if let Some(message) = decode_record(record)? {
            messages.push(super::RawMessage {
                message,
                bytes: record,
            });
        }
    }
    Ok(messages)
}

/// Decode one record (without its `0x1E`). `Ok(None)` for an unknown message type.
pub fn decode_record(record: &[u8]) -> Result<Option<HubMessage>, ProtocolError> {
    if record.iter().all(u8::is_ascii_whitespace) {
        return Err(ProtocolError::Empty);
    }
    let value: Value =
        serde_json::from_slice(record).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    let type_id = match object.get("type") {
        None => return Err(ProtocolError::Missing("type")),
        Some(v) => v.as_i64().ok_or(ProtocolError::WrongType {
            field: "type",
            expected: "an integer",
        })?,
    };
    let message = match type_id {
        1 => HubMessage::Invocation {
            headers: headers(&object)?,
            invocation_id: opt_string(&object, "invocationId")?,
            target: req_string(&object, "target")?,
            arguments: arguments(&object)?,
            stream_ids: stream_ids(&object)?,
        },
        2 => HubMessage::StreamItem {
            headers: headers(&object)?,
            invocation_id: req_string(&object, "invocationId")?,
            item: object.get("item").cloned().unwrap_or(Value::Null),
        },
        3 => {
            let error = opt_string(&object, "error")?;
            let result = match (object.get("result"), error) {
                (Some(_), Some(_)) => return Err(ProtocolError::ResultAndError),
                (Some(v), None) => CompletionResult::Value(v.clone()),
                (None, Some(e)) => CompletionResult::Error(e),
                (None, None) => CompletionResult::Void,
            };
            HubMessage::Completion {
                headers: headers(&object)?,
                invocation_id: req_string(&object, "invocationId")?,
                result,
            }
        }
        4 => HubMessage::StreamInvocation {
            headers: headers(&object)?,
            invocation_id: req_string(&object, "invocationId")?,
            target: req_string(&object, "target")?,
            arguments: arguments(&object)?,
            stream_ids: stream_ids(&object)?,
        },
        5 => HubMessage::CancelInvocation {
            headers: headers(&object)?,
            invocation_id: req_string(&object, "invocationId")?,
        },
        6 => HubMessage::Ping,
        7 => HubMessage::Close {
            error: opt_string(&object, "error")?,
            allow_reconnect: match object.get("allowReconnect") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ProtocolError::WrongType {
                        field: "allowReconnect",
                        expected: "a boolean",
                    });
                }
            },
        },
        8 => HubMessage::Ack {
            sequence_id: sequence_id(&object)?,
        },
        9 => HubMessage::Sequence {
            sequence_id: sequence_id(&object)?,
        },
        _ => return Ok(None),
    };
    Ok(Some(message))
}

fn req_string(object: &Map<String, Value>, field: &'static str) -> Result<String, ProtocolError> {
    opt_string(object, field)?.ok_or(ProtocolError::Missing(field))
}

fn opt_string(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ProtocolError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProtocolError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn arguments(object: &Map<String, Value>) -> Result<Vec<Value>, ProtocolError> {
    match object.get("arguments") {
        None => Err(ProtocolError::Missing("arguments")),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(_) => Err(ProtocolError::WrongType {
            field: "arguments",
            expected: "an array",
        }),
    }
}

fn stream_ids(object: &Map<String, Value>) -> Result<Vec<String>, ProtocolError> {
    let wrong = ProtocolError::WrongType {
        field: "streamIds",
        expected: "an array of strings",
    };
    match object.get("streamIds") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(wrong.clone()))
            .collect(),
        Some(_) => Err(wrong),
    }
}

fn headers(object: &Map<String, Value>) -> Result<Headers, ProtocolError> {
    let wrong = ProtocolError::WrongType {
        field: "headers",
        expected: "an object of strings",
    };
    match object.get("headers") {
        None | Some(Value::Null) => Ok(Headers::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or(wrong.clone())
            })
            .collect(),
        Some(_) => Err(wrong),
    }
}

fn sequence_id(object: &Map<String, Value>) -> Result<u64, ProtocolError> {
    match object.get("sequenceId") {
        None => Err(ProtocolError::Missing("sequenceId")),
        Some(v) => v.as_u64().ok_or(ProtocolError::WrongType {
            field: "sequenceId",
            expected: "a non-negative integer",
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn all_messages() -> Vec<HubMessage> {
        let mut headers = Headers::new();
        headers.insert("a".into(), "b".into());
        vec![
            HubMessage::invocation("newMessage", vec![json!("alice"), json!({"text": "hi"})]),
            HubMessage::Invocation {
                headers: headers.clone(),
                invocation_id: Some("1".into()),
                target: "Send".into(),
                arguments: vec![],
                stream_ids: vec!["s1".into()],
            },
            HubMessage::StreamItem {
                headers: Headers::new(),
                invocation_id: "7".into(),
                item: json!(42),
            },
            HubMessage::Completion {
                headers: Headers::new(),
                invocation_id: "7".into(),
                result: CompletionResult::Value(json!(null)),
            },
            HubMessage::Completion {
                headers: headers.clone(),
                invocation_id: "7".into(),
                result: CompletionResult::Void,
            },
            HubMessage::completion_error("8", "boom"),
            HubMessage::StreamInvocation {
                headers: Headers::new(),
                invocation_id: "8".into(),
                target: "Counter".into(),
                arguments: vec![json!(5)],
                stream_ids: vec![],
            },
            HubMessage::CancelInvocation {
                headers: Headers::new(),
                invocation_id: "8".into(),
            },
            HubMessage::Ping,
            HubMessage::Close {
                error: Some("Server shutting down".into()),
                allow_reconnect: true,
            },
            HubMessage::Close {
                error: None,
                allow_reconnect: false,
            },
            HubMessage::Ack { sequence_id: 1394 },
            HubMessage::Sequence { sequence_id: 1234 },
        ]
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(encode(&HubMessage::Ping).unwrap(), b"{\"type\":6}\x1e");
        assert_eq!(
            encode(&HubMessage::invocation(
                "newMessage",
                vec![json!("alice"), json!({"text": "hi"})]
            ))
            .unwrap(),
            b"{\"type\":1,\"target\":\"newMessage\",\"arguments\":[\"alice\",{\"text\":\"hi\"}]}\x1e"
                .to_vec()
        );
        assert_eq!(
            encode(&HubMessage::Close {
                error: Some("Server shutting down".into()),
                allow_reconnect: true
            })
            .unwrap(),
            b"{\"type\":7,\"error\":\"Server shutting down\",\"allowReconnect\":true}\x1e".to_vec()
        );
        assert_eq!(
            encode(&HubMessage::completion_error("7", "no")).unwrap(),
            b"{\"type\":3,\"invocationId\":\"7\",\"error\":\"no\"}\x1e".to_vec()
        );
    }

    #[test]
    fn round_trip_in_one_frame() {
        let messages = all_messages();
        let mut frame = Vec::new();
        for m in &messages {
            frame.extend(encode(m).unwrap());
        }
        assert_eq!(decode_frame(&frame).unwrap(), messages);
    }

    #[test]
    fn unknown_types_are_skipped() {
        let got = decode_frame(b"{\"type\":99,\"x\":1}\x1e{\"type\":6}\x1e").unwrap();
        assert_eq!(got, vec![HubMessage::Ping]);
        assert_eq!(decode_frame(b"").unwrap(), vec![]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[&[u8]] = &[
            b"{\"type\":6}",
            b"{\"type\":6}\x1e{\"type\":",
            b"\x1e",
            b"not json\x1e",
            b"[1,2,3]\x1e",
            b"{}\x1e",
            b"{\"type\":\"1\"}\x1e",
            b"{\"type\":1,\"arguments\":[]}\x1e",
            b"{\"type\":1,\"target\":\"x\"}\x1e",
            b"{\"type\":1,\"target\":\"x\",\"arguments\":{}}\x1e",
            b"{\"type\":1,\"target\":5,\"arguments\":[]}\x1e",
            b"{\"type\":1,\"target\":\"x\",\"arguments\":[],\"headers\":{\"a\":1}}\x1e",
            b"{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"e\"}\x1e",
            b"{\"type\":3}\x1e",
            b"{\"type\":7,\"allowReconnect\":\"yes\"}\x1e",
            b"{\"type\":8}\x1e",
            b"{\"type\":9,\"sequenceId\":-1}\x1e",
            b"\xff\xfe\x1e",
        ];
        for case in cases {
            assert!(
                decode_frame(case).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        // Deep nesting is refused by serde_json's recursion limit, not a stack overflow.
        let mut deep = Vec::new();
        deep.extend_from_slice(b"{\"type\":1,\"target\":\"x\",\"arguments\":");
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        deep.push(RECORD_SEPARATOR);
        assert!(decode_frame(&deep).is_err());
    }
}
