//! A JSON Schema validator for the keywords `schema/alert.schema.json` uses, and no more:
//! a full JSON Schema crate would be a heavy dependency for one test. Keywords it does not
//! implement are reported as errors, so the schema cannot come to rely on one that would
//! be silently ignored here.
use serde_json::{Map, Value};

/// Keywords that only document; everything else must be checked below.
pub(super) const ANNOTATIONS: [&str; 4] = ["$schema", "$id", "title", "description"];
pub(super) const CHECKED: [&str; 12] = [
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "format",
];

/// Every error, each prefixed with a JSON pointer to the offending value.
pub(super) fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    errors
}

fn check(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        errors.push(format!("schema at {at:?} is not an object"));
        return;
    };
    for (keyword, arg) in schema {
        if ANNOTATIONS.contains(&keyword.as_str()) {
            continue;
        }
        if !CHECKED.contains(&keyword.as_str()) {
            errors.push(format!("{at}: schema keyword {keyword:?} is not supported"));
            continue;
        }
        check_keyword(schema, keyword, arg, value, at, errors);
    }
}

fn check_keyword(
    schema: &Map<String, Value>,
    keyword: &str,
    arg: &Value,
    value: &Value,
    at: &str,
    errors: &mut Vec<String>,
) {
    let mut fail = |what: String| errors.push(format!("{at}: {what}"));
    match keyword {
        "type" => {
            let types: Vec<&str> = match arg {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => return fail(format!("bad \"type\" {arg}")),
            };
            if !types.iter().any(|t| has_type(value, t)) {
                fail(format!("{value} is not of type {arg}"));
            }
        }
        "enum" => {
            if !arg.as_array().is_some_and(|a| a.contains(value)) {
                fail(format!("{value} is not one of {arg}"));
            }
        }
        "const" => {
            if arg != value {
                fail(format!("{value} is not {arg}"));
            }
        }
        "minimum" | "maximum" => {
            if value.is_number() && !within(value, arg, keyword == "minimum") {
                fail(format!("{value} is outside {keyword} {arg}"));
            }
        }
        "minLength" | "maxLength" => {
            if let (Some(s), Some(limit)) = (value.as_str(), arg.as_u64()) {
                let len = s.chars().count() as u64;
                if (keyword == "minLength" && len < limit)
                    || (keyword == "maxLength" && len > limit)
                {
                    fail(format!(
                        "{value} has {len} characters, {keyword} is {limit}"
                    ));
                }
            }
        }
        "format" => match (arg.as_str(), value.as_str()) {
            (Some("date-time"), Some(s)) if !is_rfc3339(s) => {
                fail(format!("{value} is not an RFC 3339 date-time"));
            }
            (Some("date-time"), _) => {}
            _ => fail(format!("format {arg} is not supported")),
        },
        "required" => {
            if let Some(object) = value.as_object() {
                for name in arg
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !object.contains_key(name) {
                        fail(format!("required property {name:?} is missing"));
                    }
                }
            }
        }
        "properties" => {
            if let (Some(object), Some(props)) = (value.as_object(), arg.as_object()) {
                for (name, sub) in props {
                    if let Some(v) = object.get(name) {
                        check(sub, v, &format!("{at}/{name}"), errors);
                    }
                }
            }
        }
        "additionalProperties" => {
            let Some(object) = value.as_object() else {
                return;
            };
            let declared = schema.get("properties").and_then(Value::as_object);
            for (name, v) in object {
                if declared.is_some_and(|d| d.contains_key(name)) {
                    continue;
                }
                match arg {
                    Value::Bool(false) => {
                        errors.push(format!("{at}: property {name:?} is not in the schema"));
                    }
                    Value::Bool(true) => {}
                    sub => check(sub, v, &format!("{at}/{name}"), errors),
                }
            }
        }
        "items" => {
            for (i, v) in value.as_array().into_iter().flatten().enumerate() {
                check(arg, v, &format!("{at}/{i}"), errors);
            }
        }
        _ => unreachable!("{keyword} is in CHECKED"),
    }
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        // JSON Schema integers are numbers without a fractional part, 1.0 included.
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// `value >= limit` (or `<=`), exact for integers, which all of the schema's limits are.
fn within(value: &Value, limit: &Value, minimum: bool) -> bool {
    let ordering = match (
        value.as_i64(),
        limit.as_i64(),
        value.as_u64(),
        limit.as_u64(),
    ) {
        (_, _, Some(v), Some(l)) => v.cmp(&l),
        (Some(v), Some(l), _, _) => v.cmp(&l),
        _ => match (value.as_f64(), limit.as_f64()) {
            (Some(v), Some(l)) => match v.partial_cmp(&l) {
                Some(o) => o,
                None => return false,
            },
            _ => return false,
        },
    };
    if minimum {
        ordering.is_ge()
    } else {
        ordering.is_le()
    }
}

/// RFC 3339 `date-time` (section 5.6), by hand: `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)`,
/// with real month lengths and a leap second allowed.
pub(super) fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = s.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0, 4),
        num(5, 7),
        num(8, 10),
        num(11, 13),
        num(14, 16),
        num(17, 19),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &frac[digits..];
    }
    if matches!(rest, "Z" | "z") {
        return true;
    }
    let r = rest.as_bytes();
    r.len() == 6
        && matches!(r[0], b'+' | b'-')
        && r[3] == b':'
        && num(s.len() - 5, s.len() - 3).is_some_and(|h| h <= 23)
        && num(s.len() - 2, s.len()).is_some_and(|m| m <= 59)
}
