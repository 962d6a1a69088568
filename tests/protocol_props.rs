//! Property tests for the hub protocols: no input, however malformed, makes a decoder panic,
//! and every Invocation survives an encode/decode round trip in both protocols (also when
//! several share one frame).

use herald::signalr::protocol::{HubMessage, Protocol, parse_handshake_request};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn invocation() -> impl Strategy<Value = HubMessage> {
    (
        "[A-Za-z][A-Za-z0-9_]{0,15}",
        prop::option::of("[0-9]{1,4}"),
        prop::collection::vec(json_value(), 0..4),
        prop::collection::btree_map("[a-z]{1,6}", ".{0,10}", 0..3),
    )
        .prop_map(
            |(target, invocation_id, arguments, headers)| HubMessage::Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids: Vec::new(),
            },
        )
}

proptest! {
    // A failing case is kept in `tests/protocol_props.proptest-regressions`, next to this file
    // (commit it: proptest replays it first on every later run).
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Protocol::Json.decode_frame(&bytes);
        let _ = Protocol::MessagePack.decode_frame(&bytes);
        let _ = parse_handshake_request(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_json_shaped_records(v in json_value(), kind in 0u8..12) {
        let mut record = serde_json::json!({"type": kind});
        if let (Value::Object(m), Value::Object(extra)) = (&mut record, v) {
            m.extend(extra);
        }
        let mut frame = serde_json::to_vec(&record).unwrap();
        frame.push(0x1e);
        let _ = Protocol::Json.decode_frame(&frame);
    }

    #[test]
    fn invocations_round_trip_in_both_protocols(messages in prop::collection::vec(invocation(), 1..4)) {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let mut frame = Vec::new();
            for m in &messages {
                frame.extend(protocol.encode(m).unwrap());
            }
            let decoded = protocol.decode_frame(&frame).unwrap();
            prop_assert_eq!(&decoded, &messages, "{:?}", protocol);
        }
    }
}
