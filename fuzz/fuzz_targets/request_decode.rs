//! Decodes arbitrary bytes as a Kafka request frame body (after the length prefix), exactly as
//! the listener does (`KafkaApi::handle` in src/kafka_api/mod.rs): peek the API key, decode the
//! request header for its version, then the body with `RequestKind::decode`. Any panic is a
//! bug (in kafka-protocol or in how the server calls it); a decode error is fine, the server
//! closes the connection on it.

#![no_main]

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::decode_request_header_from_buffer;
use libfuzzer_sys::fuzz_target;

// As in the binary: kafka-protocol 0.18 sizes arrays from the count on the wire before reading
// them, so a few bytes can ask for 2^31 elements. The system allocator aborts on that; this one
// reserves the memory (src/alloc.rs), the decode then fails on the missing bytes.
#[global_allocator]
static ALLOC: tributary::alloc::Allocator = tributary::alloc::Allocator;

fuzz_target!(|data: &[u8]| {
    // The listener closes frames under 8 bytes before decoding anything.
    if data.len() < 8 {
        return;
    }
    let mut frame = Bytes::copy_from_slice(data);
    let Ok(api_key) = ApiKey::try_from(frame.clone().get_i16()) else {
        return;
    };
    let Ok(header) = decode_request_header_from_buffer(&mut frame) else {
        return;
    };
    // Every version, not only the offered ones: stricter than the server, which decodes only
    // versions it offers.
    let _ = RequestKind::decode(api_key, &mut frame, header.request_api_version);
});
