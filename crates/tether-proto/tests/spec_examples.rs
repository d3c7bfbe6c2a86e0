//! docs/PROTOCOL.md §12 is checked against the code: every ```hex block must
//! decode and re-encode to the same bytes, every ```hex-invalid block must be
//! refused with the close code its preceding paragraph names, and every frame
//! type must have an example.

use std::collections::BTreeSet;

use tether_proto::frame::decode_stream;
use tether_proto::Frame;

struct Example {
    invalid: bool,
    label: String,
    bytes: Vec<u8>,
    context: String,
}

fn parse_hex(text: &str, label: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("example {label}: {b:?} is not a hex byte")))
        .collect()
}

fn examples() -> Vec<Example> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md must exist");
    let mut out = Vec::new();
    let mut lines = doc.lines();
    // The paragraph just before a block states what the example decodes to.
    let (mut current, mut last) = (String::new(), String::new());
    while let Some(line) = lines.next() {
        let info = line.trim_start().strip_prefix("```").filter(|h| h.starts_with("hex"));
        let Some(info) = info else {
            if line.trim().is_empty() {
                if !current.is_empty() {
                    last = std::mem::take(&mut current);
                }
            } else {
                current.push_str(line.trim());
                current.push(' ');
            }
            continue;
        };
        let mut words = info.split_whitespace();
        let kind = words.next().unwrap_or_default();
        let label = words.next().unwrap_or("unlabelled").to_owned();
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push(' ');
        }
        let context = if current.is_empty() { std::mem::take(&mut last) } else { std::mem::take(&mut current) };
        out.push(Example { invalid: kind == "hex-invalid", bytes: parse_hex(&body, &label), label, context });
    }
    out
}

#[test]
fn every_spec_example_decodes_and_re_encodes_exactly() {
    let max = tether_proto::frame::DEFAULT_MAX_FRAME;
    let mut kinds = BTreeSet::new();
    let mut valid = 0;
    for ex in examples().iter().filter(|e| !e.invalid) {
        let frame = if ex.label.starts_with("tcp-") {
            let (f, used) = decode_stream(&ex.bytes, max)
                .unwrap_or_else(|e| panic!("example {}: {e}", ex.label))
                .unwrap_or_else(|| panic!("example {}: incomplete", ex.label));
            assert_eq!(used, ex.bytes.len(), "example {}: trailing bytes", ex.label);
            let mut again = Vec::new();
            f.encode_length_prefixed(&mut again);
            assert_eq!(again, ex.bytes, "example {}: re-encoding differs", ex.label);
            f
        } else {
            let f = Frame::decode(&ex.bytes, max).unwrap_or_else(|e| panic!("example {}: {e}", ex.label));
            assert_eq!(f.to_vec(), ex.bytes, "example {}: re-encoding differs", ex.label);
            f
        };
        kinds.insert(frame.kind());
        valid += 1;
    }
    assert_eq!(kinds.len(), 8, "every frame type needs an example; found types {kinds:02x?} in {valid} examples");
}

#[test]
fn every_invalid_spec_example_is_refused_with_its_documented_close_code() {
    let max = tether_proto::frame::DEFAULT_MAX_FRAME;
    let invalid: Vec<_> = examples().into_iter().filter(|e| e.invalid).collect();
    assert!(invalid.len() >= 4, "the spec should show at least 4 invalid frames");
    for ex in invalid {
        let err = if ex.label.starts_with("tcp-") {
            decode_stream(&ex.bytes, max).expect_err(&ex.label)
        } else {
            Frame::decode(&ex.bytes, max).expect_err(&ex.label)
        };
        let code = err.close_code().to_u16().to_string();
        assert!(
            ex.context.contains(&code),
            "example {}: refused with {code} ({err}), but the spec says: {}",
            ex.label,
            ex.context
        );
    }
}
