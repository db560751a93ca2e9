//! Hidden code that is hidden only by an encoding: a string literal in base64 or hex that a
//! hook decodes and runs (`exec(base64.b64decode('...'))`, as the LiteLLM payload did).
//! Decoding such a literal costs nothing and shows what the hook really runs, so its text
//! is scanned like the hook's own. Compression, encryption and code built at run time
//! stay hidden.

/// Shortest literal taken for an encoding: shorter ones are names and hashes, not code.
const MIN_ENCODED: usize = 24;
/// Most bytes decoded from one line (all literals together).
const MAX_DECODED: usize = 1 << 20;

/// The texts the string literals of `line` decode to (base64, URL-safe base64 or hex), when
/// they decode to text: valid UTF-8, almost all printable.
pub(crate) fn revealed(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut budget = MAX_DECODED;
    for literal in literals(line) {
        if literal.len() < MIN_ENCODED || literal.len() > budget * 2 {
            continue;
        }
        let Some(bytes) = from_hex(literal).or_else(|| from_base64(literal)) else {
            continue;
        };
        if let Some(text) = as_text(bytes) {
            budget = budget.saturating_sub(text.len());
            out.push(text);
        }
    }
    out
}

/// The contents of the quoted literals in `line` (no escapes inside: encoded text has none).
fn literals(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        loop {
            let start = rest.find(['\'', '"'])?;
            let quote = rest.as_bytes()[start] as char;
            let body = &rest[start + 1..];
            let Some(end) = body.find(quote) else {
                rest = "";
                return None;
            };
            rest = &body[end + 1..];
            let literal = &body[..end];
            if !literal.contains('\\') {
                return Some(literal);
            }
        }
    })
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// Standard or URL-safe base64, padded or not.
fn from_base64(s: &str) -> Option<Vec<u8>> {
    let digits = s.trim_end_matches('=');
    if s.len() - digits.len() > 2 || digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in digits.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Decoded bytes that read as program text.
fn as_text(bytes: Vec<u8>) -> Option<String> {
    let text = String::from_utf8(bytes).ok()?;
    let printable = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .count();
    (printable * 100 >= text.chars().count() * 95).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_literals_are_revealed() {
        // "import sys; sys.settrace(print)" in base64, URL-safe unpadded base64 and hex.
        let code = "import sys; sys.settrace(print)";
        let b64 = "aW1wb3J0IHN5czsgc3lzLnNldHRyYWNlKHByaW50KQ==";
        let line = format!("import base64; exec(base64.b64decode('{b64}'))");
        assert_eq!(revealed(&line), [code]);
        let unpadded = format!(
            "exec(base64.urlsafe_b64decode(\"{}\"))",
            b64.trim_end_matches('=')
        );
        assert_eq!(revealed(&unpadded), [code]);
        let hex: String = code.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(revealed(&format!("exec(bytes.fromhex('{hex}'))")), [code]);
    }

    #[test]
    fn names_paths_and_binary_stay_as_they_are() {
        // Short literals, paths, escaped strings and bytes that are not text.
        assert!(revealed("import os; os.environ.get('PTHW_SETTING', '1')").is_empty());
        assert!(revealed("import x; x.load('/usr/lib/python3/dist-packages/x.cfg')").is_empty());
        assert!(revealed("exec('import os\\nprint(1)')").is_empty());
        assert!(revealed("import z; z.run('////////////////////////////////')").is_empty());
        assert!(
            revealed("import z; z.run(\"0000000000000000000000000000000000000000\")").is_empty()
        );
        // An unterminated quote ends the search.
        assert!(revealed("import z; z.run('aW1wb3J0IHN5czsgc3lzLnNldHRyYWNl").is_empty());
    }
}
