use std::time::{Duration, SystemTime};

use archon_core::context::Metadata;

use super::*;

fn sample() -> Envelope {
    let md = Metadata::new_root()
        .with_causation_id("cmd-1")
        .with_tenant_id("acme");
    let mut md2 = md;
    md2.tracestate = Some("congo=t61rcWkgMzE".to_owned());
    Envelope::builder("/orders/service", "com.example.order.created.v1")
        .subject("order-42")
        .data_schema("https://example.com/schemas/order.json")
        .partition_key("customer-7")
        .extension("sequence", "17")
        .header("x-origin", "checkout")
        .header("x-note", "héllo wörld \"quoted\" 100%")
        .metadata(&md2)
        .data("application/json", r#"{"order":42,"items":["a","b"]}"#)
        .build()
        .unwrap()
}

#[test]
fn binary_round_trips_for_every_binding() {
    let event = sample();
    for binding in [
        Binding::Http,
        Binding::Nats,
        Binding::Kafka,
        Binding::RabbitMq,
        Binding::Amqp10,
    ] {
        let wire = event.to_binary(binding);
        let prefix = binding.prefix();
        assert_eq!(
            wire.header(&format!("{prefix}specversion")),
            Some("1.0"),
            "{binding:?}"
        );
        assert_eq!(
            wire.header(&format!("{prefix}traceparent")).map(str::len),
            Some(55),
            "{binding:?}"
        );
        assert_eq!(wire.header("x-origin"), Some("checkout"));
        assert_eq!(
            wire.header("content-type").is_some(),
            binding.content_type_in_headers()
        );
        assert_eq!(wire.content_type.as_deref(), Some("application/json"));
        let back = Envelope::from_wire(binding, wire).unwrap();
        assert_eq!(back, event, "{binding:?}");
    }
}

#[test]
fn http_binding_percent_encodes_non_ascii_attribute_values() {
    let event = Envelope::builder("/a", "t.v1")
        .subject("café \"x\" 5%")
        .build()
        .unwrap();
    let wire = event.to_binary(Binding::Http);
    let subject = wire.header("ce-subject").unwrap();
    assert!(subject.is_ascii() && !subject.contains(' '), "{subject}");
    assert_eq!(
        Envelope::from_wire(Binding::Http, wire).unwrap().subject(),
        Some("café \"x\" 5%")
    );
}

#[test]
fn structured_round_trips_json_text_and_binary_payloads() {
    let json = sample();
    let text = Envelope::builder("/a", "t.v1")
        .data("text/plain", "plain words")
        .build()
        .unwrap();
    let binary = Envelope::builder("/a", "t.v1")
        .data("application/octet-stream", vec![0u8, 159, 255, 1])
        .build()
        .unwrap();
    for event in [json, text, binary] {
        let wire = event.to_structured(Binding::Kafka);
        assert_eq!(wire.header("content-type"), Some(STRUCTURED_JSON));
        let back = Envelope::from_wire(Binding::Kafka, wire).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn structured_json_matches_the_cloudevents_format() {
    let event = sample();
    let wire = event.to_structured(Binding::RabbitMq);
    assert!(
        wire.header("content-type").is_none(),
        "RabbitMQ uses the property"
    );
    let json: serde_json::Value = serde_json::from_slice(&wire.body).unwrap();
    assert_eq!(json["specversion"], "1.0");
    assert_eq!(json["type"], "com.example.order.created.v1");
    assert_eq!(json["partitionkey"], "customer-7");
    assert_eq!(
        json["correlationid"],
        event.metadata().correlation_id.unwrap()
    );
    assert_eq!(json["data"]["items"][1], "b");
    assert!(json.get("data_base64").is_none());
}

#[test]
fn reads_structured_events_written_by_other_sdks() {
    let body = r#"{"specversion":"1.0","id":"A234-1234-1234","source":"https://github.com/cloudevents",
        "type":"com.github.pull_request.opened","time":"2018-04-05T17:31:00+02:00",
        "comexampleextension1":"value","comexampleothervalue":5,"datacontenttype":"text/xml",
        "data":"<much wow=\"xml\"/>"}"#;
    let wire = WireMessage {
        content_type: Some("application/cloudevents+json; charset=utf-8".to_owned()),
        body: body.into(),
        ..WireMessage::default()
    };
    let event = Envelope::from_wire(Binding::Http, wire).unwrap();
    assert_eq!(event.id(), "A234-1234-1234");
    assert_eq!(event.extension("comexampleothervalue"), Some("5"));
    assert_eq!(&event.data()[..], br#"<much wow="xml"/>"#);
    let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_522_942_260);
    assert_eq!(event.time(), Some(expected));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let ok = sample().to_binary(Binding::Nats);
    let mut cases: Vec<WireMessage> = Vec::new();
    let mut drop_id = ok.clone();
    drop_id.headers.retain(|(k, _)| k != "ce-id");
    cases.push(drop_id);
    let mut spec = ok.clone();
    spec.headers[0].1 = "0.3".to_owned();
    cases.push(spec);
    let mut bad_time = ok.clone();
    bad_time
        .headers
        .push(("ce-time".to_owned(), "yesterday".to_owned()));
    cases.push(bad_time);
    let mut bad_ext = ok.clone();
    bad_ext
        .headers
        .push(("ce-Bad_Ext!".to_owned(), "x".to_owned()));
    cases.push(bad_ext);
    let mut bad_header = ok;
    bad_header
        .headers
        .push(("x-evil".to_owned(), "a\r\nb".to_owned()));
    cases.push(bad_header);
    for body in [
        "",
        "[]",
        "{",
        r#"{"specversion":"1.0"}"#,
        r#"{"specversion":"1.0","id":"1","source":"/","type":"t","data_base64":"!!"}"#,
        r#"{"specversion":"1.0","id":1,"source":"/","type":"t"}"#,
        r#"{"specversion":"1.0","id":"1","source":"/","type":"t","ext":{"nested":1}}"#,
    ] {
        cases.push(WireMessage {
            content_type: Some(STRUCTURED_JSON.to_owned()),
            body: body.into(),
            ..WireMessage::default()
        });
    }
    for wire in cases {
        assert!(
            Envelope::from_wire(Binding::Nats, wire.clone()).is_err(),
            "{wire:?}"
        );
    }
}

#[test]
fn invalid_names_and_values_are_rejected_by_the_builder() {
    for (name, value) in [
        ("bad name", "v"),
        ("ce-id", "v"),
        ("content-type", "v"),
        ("x-ok", "line\nbreak"),
    ] {
        assert!(
            Envelope::builder("/a", "t")
                .header(name, value)
                .build()
                .is_err(),
            "{name}"
        );
    }
    for name in ["UPPER", "id", "with-dash", ""] {
        assert!(
            Envelope::builder("/a", "t")
                .extension(name, "v")
                .build()
                .is_err(),
            "{name}"
        );
    }
    assert!(matches!(
        Envelope::builder("/a", "").build(),
        Err(EnvelopeError::MissingAttribute("type"))
    ));
}

#[test]
fn size_limit_is_a_typed_error() {
    let event = Envelope::builder("/a", "t.v1")
        .data(
            "application/octet-stream",
            vec![7u8; DEFAULT_MAX_EVENT_SIZE + 1],
        )
        .build()
        .unwrap();
    assert!(matches!(
        event.check_size(DEFAULT_MAX_EVENT_SIZE),
        Err(crate::Error::TooLarge { limit, .. }) if limit == DEFAULT_MAX_EVENT_SIZE
    ));
}

#[test]
fn metadata_round_trips_through_extensions() {
    let event = sample();
    let md = event.metadata();
    assert_eq!(md.tenant_id.as_deref(), Some("acme"));
    assert_eq!(md.causation_id.as_deref(), Some("cmd-1"));
    assert_eq!(md.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    assert_eq!(
        event.extension(extensions::TRACEPARENT),
        md.traceparent.map(|tp| tp.to_string()).as_deref()
    );
}

#[test]
fn ids_are_uuid_v7() {
    let event = Envelope::builder("/a", "t.v1").build().unwrap();
    let id = uuid::Uuid::parse_str(event.id()).unwrap();
    assert_eq!(id.get_version_num(), 7);
}

fn mutate(rng: &mut fastrand::Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..rng.usize(1..4) {
        let pos = rng.usize(0..=bytes.len());
        match rng.u8(0..4) {
            0 if pos < bytes.len() => bytes[pos] = rng.u8(..),
            1 => bytes.insert(
                pos,
                *rng.choice(b"\0\r\n%\"{}[]:,\\ \x7f\xc3\xff-_zZ9").unwrap(),
            ),
            2 if pos < bytes.len() => {
                bytes.remove(pos);
            }
            _ => bytes.truncate(pos),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A stable-toolchain stand-in for the fuzz target: thousands of mutated wire messages, every
/// binding and both modes. Decoding must never panic, and whatever decodes must re-encode to
/// the same event.
#[test]
fn mutated_wire_messages_never_panic_and_decoded_events_round_trip() {
    let mut rng = fastrand::Rng::with_seed(0x00a5_c0de);
    let bindings = [
        Binding::Http,
        Binding::Nats,
        Binding::Kafka,
        Binding::RabbitMq,
        Binding::Amqp10,
    ];
    let event = sample();
    let mut decoded = 0;
    let rounds = if std::env::var("ARCHON_FULL").is_ok_and(|v| v == "1") {
        200_000
    } else {
        4_000
    };
    for i in 0..rounds {
        let binding = bindings[i % bindings.len()];
        let mut wire = if i % 2 == 0 {
            event.to_binary(binding)
        } else {
            event.to_structured(binding)
        };
        match rng.u8(0..3) {
            0 if !wire.headers.is_empty() => {
                let h = rng.usize(0..wire.headers.len());
                wire.headers[h].0 = mutate(&mut rng, &wire.headers[h].0);
            }
            1 if !wire.headers.is_empty() => {
                let h = rng.usize(0..wire.headers.len());
                wire.headers[h].1 = mutate(&mut rng, &wire.headers[h].1);
            }
            _ => {
                let body = String::from_utf8_lossy(&wire.body).into_owned();
                wire.body = mutate(&mut rng, &body).into();
            }
        }
        if let Ok(got) = Envelope::from_wire(binding, wire) {
            decoded += 1;
            let again = Envelope::from_wire(binding, got.to_binary(binding)).unwrap();
            assert_eq!(again, got, "binary re-encoding of {got:?}");
            let again = Envelope::from_wire(binding, got.to_structured(binding)).unwrap();
            assert_eq!(again, got, "structured re-encoding of {got:?}");
        }
    }
    assert!(
        decoded > rounds / 20,
        "the mutations should leave many messages valid ({decoded})"
    );
}

/// Interoperability with the CloudEvents Python SDK, run by hand (it needs Python and the
/// `cloudevents` package): reads events the SDK wrote into `$ARCHON_INTEROP_DIR`, writes ours
/// for the SDK to read back. See the crate README.
#[test]
#[ignore = "needs ARCHON_INTEROP_DIR prepared by the Python CloudEvents SDK"]
fn interop_with_the_python_sdk() {
    let dir = std::path::PathBuf::from(std::env::var("ARCHON_INTEROP_DIR").unwrap());
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    let expected = read("py_expected.json");
    for name in ["py_binary.json", "py_structured.json"] {
        let msg = read(name);
        let headers: Vec<(String, String)> = msg["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let wire = WireMessage {
            content_type: None,
            headers,
            body: msg["body"].as_str().unwrap().to_owned().into(),
        };
        let event = Envelope::from_wire(Binding::Http, wire).unwrap();
        assert_eq!(event.id(), expected["id"].as_str().unwrap(), "{name}");
        assert_eq!(event.event_type(), "com.example.py.v1");
        assert_eq!(event.subject(), Some("s-1"));
        assert_eq!(event.metadata().correlation_id.as_deref(), Some("corr-9"));
        assert_eq!(
            event.metadata().trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let data: serde_json::Value = serde_json::from_slice(event.data()).unwrap();
        assert_eq!(data["hello"], "wörld", "{name}");
        assert!(event.time().is_some());
    }
    let ours = Envelope::builder("/rust", "com.example.rs.v1")
        .subject("order 42 é")
        .partition_key("customer-7")
        .metadata(&Metadata::new_root().with_correlation_id("c-1"))
        .data("application/json", r#"{"total":12}"#)
        .build()
        .unwrap();
    let write = |name: &str, wire: WireMessage| {
        let headers: serde_json::Map<String, serde_json::Value> = wire
            .headers
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        let json = serde_json::json!({
            "headers": headers,
            "content_type": wire.content_type,
            "body": String::from_utf8(wire.body.to_vec()).unwrap(),
        });
        std::fs::write(dir.join(name), json.to_string()).unwrap();
    };
    write("rs_binary.json", ours.to_binary(Binding::Http));
    write("rs_structured.json", ours.to_structured(Binding::Http));
    write("rs_kafka.json", ours.to_binary(Binding::Kafka));
    write("rs_rabbitmq.json", ours.to_binary(Binding::RabbitMq));
    write("rs_amqp.json", ours.to_binary(Binding::Amqp10));
}
