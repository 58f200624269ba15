//! Fuzz target `arm_request`: a packet capture's PUT body as the controller
//! reads it, `parse_packet_capture` then `validate`. Any body is either a
//! capture or a 400 (a client's mistake: never a 500, never a panic), and a
//! valid capture's echo (`to_parameters`, what GET shows) parses and
//! validates back to the same capture.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netwatch_api::packet_capture::{PacketCapture, parse_packet_capture};

fuzz_target!(|data: &[u8]| {
    let validated = match parse_packet_capture(data).and_then(|capture| capture.validate()) {
        Ok(validated) => validated,
        Err(err) => {
            assert_eq!(err.status(), 400, "{err}");
            let body = err.to_response();
            assert!(serde_json::to_vec(&body).is_ok());
            return;
        }
    };
    let echo = PacketCapture {
        properties: validated.to_parameters(),
    };
    let json = serde_json::to_vec(&echo).expect("echo serializes");
    let again = parse_packet_capture(&json)
        .and_then(|capture| capture.validate())
        .unwrap_or_else(|err| panic!("echo {} refused: {err}", String::from_utf8_lossy(&json)));
    assert_eq!(again, validated, "echo {}", String::from_utf8_lossy(&json));
});
