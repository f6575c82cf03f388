//! Envelope decoding from every binding's headers and from structured JSON must never panic,
//! and whatever decodes must survive re-encoding unchanged.
//!
//! Run with: `cd archon-events/fuzz && cargo +nightly fuzz run envelope_decode`
#![no_main]

use archon_events::envelope::{Binding, Envelope, WireMessage};
use libfuzzer_sys::fuzz_target;

const BINDINGS: [Binding; 5] = [
    Binding::Http,
    Binding::Nats,
    Binding::Kafka,
    Binding::RabbitMq,
    Binding::Amqp10,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let binding = BINDINGS[usize::from(selector) % BINDINGS.len()];
    // Input layout: lines "name: value" for headers, an empty line, then the body. A selector
    // with the high bit set marks the message as structured mode.
    let text = String::from_utf8_lossy(rest);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let headers = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim_start().to_owned()))
        .collect();
    let content_type = (selector & 0x80 != 0).then(|| "application/cloudevents+json".to_owned());
    let wire = WireMessage {
        content_type,
        headers,
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
    };
    if let Ok(event) = Envelope::from_wire(binding, wire) {
        let again = Envelope::from_wire(binding, event.to_binary(binding)).expect("binary re-decodes");
        assert_eq!(again, event);
        let again =
            Envelope::from_wire(binding, event.to_structured(binding)).expect("structured re-decodes");
        assert_eq!(again, event);
    }
});
