//! Canonical JSON (RFC 8785, JCS) for the values audit records hold.
//!
//! RFC 8785 is exactly: no whitespace, object members sorted by the UTF-16 code units of
//! their names, strings escaped minimally (`\"`, `\\`, the two-letter escapes for
//! `\b \f \n \r \t`, `\u00xx` in lowercase hex for other control characters, everything
//! else as UTF-8), and numbers as ECMAScript writes them (integers in decimal; other values
//! in the shortest form that reads back to the same double, with an exponent outside
//! 1e-7..1e21). Written here, in lines an auditor can check against the RFC.

use serde_json::Value;

/// A value that has no canonical form (a number that is not finite).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot canonicalise the number `{0}`")]
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
                match n.as_f64() {
                    Some(f) if f.is_finite() => write_double(out, f),
                    _ => return Err(CanonicalError(n.to_string())),
                }
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

/// Writes a double as ECMAScript's `Number.prototype.toString` does (RFC 8785 §3.2.2.3):
/// the shortest digits that read back to the same value, placed by its decimal exponent.
fn write_double(out: &mut String, value: f64) {
    if value == 0.0 {
        out.push('0');
        return;
    }
    if value < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d.ddde±x`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    // ECMAScript's n: the value is 0.d1d2… × 10^n.
    let n = exponent.parse::<i64>().unwrap_or(0) + 1;
    let zeros = |count: i64| "0".repeat(usize::try_from(count).unwrap_or(0));
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.push_str(&zeros(n - k));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(usize::try_from(n).unwrap_or(0));
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&zeros(-n));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
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
    fn nests_without_whitespace() {
        let value = json!({"b": [1, -2, true, null, {"z": "", "y": 18446744073709551615u64}], "a": {}});
        assert_eq!(
            to_canonical(&value).unwrap(),
            "{\"a\":{},\"b\":[1,-2,true,null,{\"y\":18446744073709551615,\"z\":\"\"}]}"
        );
    }

    #[test]
    fn doubles_are_written_as_ecmascript_writes_them() {
        // RFC 8785 appendix B and ECMAScript's Number.prototype.toString.
        for (value, expected) in [
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (12.5, "12.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (4.5e-10, "4.5e-10"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1 + 0.2, "0.30000000000000004"),
            (333333333.3333333, "333333333.3333333"),
            (-1e-7, "-1e-7"),
            (2.0e-3, "0.002"),
        ] {
            let mut out = String::new();
            write_double(&mut out, value);
            assert_eq!(out, expected, "{value:e}");
        }
        assert_eq!(to_canonical(&json!({"price": 12.5, "n": 3.0})).unwrap(), "{\"n\":3,\"price\":12.5}");
    }
}
