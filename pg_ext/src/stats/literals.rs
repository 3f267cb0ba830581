//! The literal values in an SQL text, in order: what distinguishes one execution of a statement
//! from another. The index advisor asks which of them are constants of the application (the
//! same in every execution: `status = 'AVAILABLE'` written into the SQL) and which are values
//! that change (a customer id); see `examples::Constancy`.
//!
//! A small scanner, not a parser: it knows PostgreSQL's lexical forms for literals — quoted
//! strings (with `''`, `E'\''` escapes, `B''`/`X''`/`U&''`/`N''` prefixes), dollar-quoted
//! strings, numbers — and skips comments, quoted identifiers and `$n` parameters. Pure.

/// The literals of `sql`, each as its value (a string's content with escapes undone as far as
/// quotes go; a number's text), in order of appearance.
pub fn values(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'\'' => {
                let backslash_escapes = i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !ident(b[i - 2]));
                let (value, end) = quoted(b, i + 1, backslash_escapes);
                out.push(value);
                i = end;
            }
            b'$' => {
                if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    // A parameter: $1.
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else if let Some((value, end)) = dollar_quoted(sql, i) {
                    out.push(value);
                    i = end;
                } else {
                    i += 1;
                }
            }
            b'0'..=b'9' | b'.' if (i == 0 || !ident(b[i - 1])) && starts_number(b, i) => {
                let start = i;
                i += 1;
                while i < b.len() {
                    let d = b[i];
                    let exponent_sign = matches!(d, b'+' | b'-') && matches!(b[i - 1], b'e' | b'E');
                    if d.is_ascii_alphanumeric() || d == b'.' || d == b'_' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push(sql[start..i].to_string());
            }
            _ if ident(c) => {
                while i < b.len() && (ident(b[i]) || b[i] == b'$') {
                    // A prefix such as E, B, X, U&, N right before a quote is handled by the
                    // quote; any other identifier is skipped whole.
                    if b.get(i + 1) == Some(&b'\'')
                        && matches!(b[i], b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N')
                    {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn starts_number(b: &[u8], i: usize) -> bool {
    b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
}

/// The content of a quoted string starting after its opening quote at `from`; returns it and
/// the index after the closing quote.
fn quoted(b: &[u8], from: usize, backslash_escapes: bool) -> (String, usize) {
    let mut value = Vec::new();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' if backslash_escapes && i + 1 < b.len() => {
                value.push(b[i + 1]);
                i += 2;
            }
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                value.push(b'\'');
                i += 2;
            }
            b'\'' => return (String::from_utf8_lossy(&value).into_owned(), i + 1),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    (String::from_utf8_lossy(&value).into_owned(), i)
}

/// A dollar-quoted string (`$tag$...$tag$`) starting at `at`.
fn dollar_quoted(sql: &str, at: usize) -> Option<(String, usize)> {
    let rest = &sql[at + 1..];
    let tag_len = rest.find('$')?;
    let tag = &rest[..tag_len];
    if !tag.chars().all(|c| c.is_alphanumeric() || c == '_') || tag.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let delimiter = format!("${tag}$");
    let body_start = at + delimiter.len();
    let body_len = sql[body_start..].find(&delimiter)?;
    Some((sql[body_start..body_start + body_len].to_string(), body_start + body_len + delimiter.len()))
}

/// FNV-1a: a stable 32-bit fingerprint of a value (kept in shared memory and on disk).
pub fn fingerprint(value: &str) -> u32 {
    let mut h = 0x811c_9dc5u32;
    for b in value.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_numbers_and_their_forms() {
        let sql = "SELECT a, 'it''s', E'x\\'y', 3.5e-2, .5, 42, B'101', $$dollar's$$, $t$tagged$t$ \
                   FROM \"t 'not' 1\" -- 'comment' 7\n WHERE x = $1 /* 'c' /* 9 */ */ AND y1 = 2";
        assert_eq!(values(sql), ["it's", "x'y", "3.5e-2", ".5", "42", "101", "dollar's", "tagged", "2"]);
    }

    #[test]
    fn identifiers_with_digits_and_casts_are_not_literals() {
        assert_eq!(values("SELECT col1, t2.x::int4 FROM t3 WHERE v = '7'::int"), ["7"]);
    }

    #[test]
    fn the_demo_statements() {
        let sql = r#"SELECT id FROM "VirtualNumber" WHERE owner_id = 64 AND status = 'ACTIVE' ORDER BY created_at DESC LIMIT 50"#;
        assert_eq!(values(sql), ["64", "ACTIVE", "50"]);
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for sql in ["'abc", "$tag$abc", "/* open", "\"open", "E'\\", "1e", "$", "x'"] {
            let _ = values(sql);
        }
    }
}
