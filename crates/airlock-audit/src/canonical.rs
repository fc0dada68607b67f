//! Canonical JSON (RFC 8785, JCS) for the values audit records hold.
//!
//! Audit entries and receipts hold strings, integers, booleans, null, arrays and objects;
//! floating-point numbers are refused, so amounts travel as integers of a minor unit or as
//! strings. For that subset RFC 8785 is exactly: no whitespace, object members sorted by the
//! UTF-16 code units of their names, strings escaped minimally (`\"`, `\\`, the two-letter
//! escapes for `\b \f \n \r \t`, `\u00xx` in lowercase hex for other control characters,
//! everything else as UTF-8), integers in shortest decimal form. Written here, in a few
//! lines an auditor can check against the RFC, rather than pulled in with general
//! floating-point formatting the log never needs.

use serde_json::Value;

/// A value that has no canonical form here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot canonicalise a floating-point number (`{0}`); use an integer or a string")]
pub struct CanonicalError(String);

/// The RFC 8785 canonical serialisation of `value`.
pub fn to_canonical(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value)?;
    Ok(out)
}

pub(crate) fn write_value(out: &mut String, value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                return Err(CanonicalError(n.to_string()));
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(members) => write_object(out, members.iter())?,
    }
    Ok(())
}

/// Writes an object's members sorted by the UTF-16 code units of their names.
pub(crate) fn write_object<'a>(
    out: &mut String,
    members: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Result<(), CanonicalError> {
    let mut sorted: Vec<(&String, &Value)> = members.collect();
    sort_members(&mut sorted);
    out.push('{');
    for (i, (name, member)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        write_value(out, member)?;
    }
    out.push('}');
    Ok(())
}

/// Sorts members by the UTF-16 code units of their names (RFC 8785 §3.2.3). For names of
/// ASCII only, as almost all are, byte order is the same and cheaper.
pub(crate) fn sort_members<T>(members: &mut [(&String, T)]) {
    if members.iter().all(|(name, _)| name.is_ascii()) {
        members.sort_unstable_by_key(|(name, _)| *name);
    } else {
        members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    }
}

/// Writes a string with RFC 8785's minimal escaping, copying runs of characters that need
/// none in one go.
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_members_by_utf16_code_units() {
        // RFC 8785 §3.2.3: sorting is by UTF-16 code units, so U+1F600 (a surrogate pair
        // starting 0xD83D) sorts before U+FB33 but after U+00E9.
        let value = json!({"\u{fb33}": 1, "\u{1f600}": 2, "\u{e9}": 3, "a": 4, "10": 5, "1": 6});
        assert_eq!(
            to_canonical(&value).unwrap(),
            "{\"1\":6,\"10\":5,\"a\":4,\"\u{e9}\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn escapes_minimally() {
        let value = json!("quote\" backslash\\ nl\n tab\t bell\u{7} del\u{7f} é €");
        assert_eq!(
            to_canonical(&value).unwrap(),
            "\"quote\\\" backslash\\\\ nl\\n tab\\t bell\\u0007 del\u{7f} é €\""
        );
    }

    #[test]
    fn nests_without_whitespace_and_refuses_floats() {
        let value = json!({"b": [1, -2, true, null, {"z": "", "y": 18446744073709551615u64}], "a": {}});
        assert_eq!(
            to_canonical(&value).unwrap(),
            "{\"a\":{},\"b\":[1,-2,true,null,{\"y\":18446744073709551615,\"z\":\"\"}]}"
        );
        assert!(to_canonical(&json!({"x": 1.5})).is_err());
    }
}
