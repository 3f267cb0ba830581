//! The literal values in an SQL text, in order: what distinguishes one execution of a statement
//! from another. The index advisor asks which of them are constants of the application (the
//! same in every execution: `status = 'AVAILABLE'` written into the SQL) and which are values
//! that change (a customer id); see `examples::Constancy`.
//!
//! A small scanner, not a parser: it knows PostgreSQL's lexical forms for literals — quoted
//! strings (with `''`, `E'\''` escapes, `B''`/`X''`/`U&''`/`N''` prefixes), dollar-quoted
//! strings, numbers — and skips comments, quoted identifiers and `$n` parameters. Pure.

/// How a literal was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `'...'`, with `''` for a quote (and, when `backslashes`, `E'...'` escapes).
    Quoted {
        backslashes: bool,
    },
    /// `$tag$...$tag$`: taken as is.
    Dollar,
    Number,
}

/// Bytes that continue an identifier.
const fn ident_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
        c += 1;
    }
    t
}
static IDENT: [bool; 256] = ident_table();

#[inline]
fn ident(c: u8) -> bool {
    IDENT[c as usize]
}

/// Walk the literals of `sql` in order, handing each one's raw text (between its quotes, escapes
/// as written) and form to `emit`.
fn scan(sql: &str, mut emit: impl FnMut(&[u8], Form)) {
    let b = sql.as_bytes();
    let mut i = 0;
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
                let backslashes = i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !ident(b[i - 2]));
                let start = i + 1;
                let end = quoted_end(b, start, backslashes);
                emit(&b[start..end.min(b.len())], Form::Quoted { backslashes });
                i = end + 1;
            }
            b'$' => {
                if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    // A parameter: $1.
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else if let Some((body, end)) = dollar_quoted(sql, i) {
                    emit(body.as_bytes(), Form::Dollar);
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
                emit(&b[start..i], Form::Number);
            }
            _ if ident(c) => {
                while i < b.len() && (ident(b[i]) || b[i] == b'$') {
                    // A prefix such as E, B, X, N right before a quote is left to the quote; any
                    // other identifier is skipped whole.
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
}

/// The literals of `sql`, each as its value (a string's content with its quote escapes undone;
/// a number's text), in order of appearance.
pub fn values(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    scan(sql, |raw, form| {
        out.push(match form {
            Form::Quoted { backslashes } => unescape(raw, backslashes),
            Form::Dollar | Form::Number => String::from_utf8_lossy(raw).into_owned(),
        })
    });
    out
}

/// Fingerprints of the literals of `sql` (of their text as written), in the order of
/// [`values`]: cheap, for telling whether a literal changed between two executions.
pub fn fingerprints(sql: &str) -> Vec<u32> {
    let mut out = Vec::with_capacity(8);
    scan(sql, |raw, _| out.push(fingerprint_bytes(raw)));
    out
}

fn starts_number(b: &[u8], i: usize) -> bool {
    b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
}

/// The index of the closing quote of a string whose content starts at `from` (or the end).
fn quoted_end(b: &[u8], from: usize, backslashes: bool) -> usize {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' if backslashes && i + 1 < b.len() => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i,
            _ => i += 1,
        }
    }
    b.len()
}

fn unescape(raw: &[u8], backslashes: bool) -> String {
    let mut value = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' if backslashes && i + 1 < raw.len() => {
                value.push(raw[i + 1]);
                i += 2;
            }
            b'\'' if raw.get(i + 1) == Some(&b'\'') => {
                value.push(b'\'');
                i += 2;
            }
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&value).into_owned()
}

/// A dollar-quoted string (`$tag$...$tag$`) starting at `at`: its body and the index after it.
fn dollar_quoted(sql: &str, at: usize) -> Option<(&str, usize)> {
    let rest = &sql[at + 1..];
    let tag_len = rest.find('$')?;
    let tag = &rest[..tag_len];
    if !tag.chars().all(|c| c.is_alphanumeric() || c == '_') || tag.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let delimiter = format!("${tag}$");
    let body_start = at + delimiter.len();
    let body_len = sql[body_start..].find(&delimiter)?;
    Some((&sql[body_start..body_start + body_len], body_start + body_len + delimiter.len()))
}

/// FNV-1a: a stable 32-bit fingerprint of a value (kept in shared memory and on disk).
pub fn fingerprint(value: &str) -> u32 {
    fingerprint_bytes(value.as_bytes())
}

fn fingerprint_bytes(value: &[u8]) -> u32 {
    let mut h = 0x811c_9dc5u32;
    for &b in value {
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
    fn fingerprints_follow_the_values_position_by_position() {
        let a = "SELECT 1 FROM t WHERE s = 'it''s' AND n = 42 AND d = $x$body$x$";
        let b = "SELECT 1 FROM t WHERE s = 'it''s' AND n = 43 AND d = $x$body$x$";
        assert_eq!(fingerprints(a).len(), values(a).len());
        let (fa, fb) = (fingerprints(a), fingerprints(b));
        assert_eq!((fa[0], fa[1], fa[3]), (fb[0], fb[1], fb[3]));
        assert_ne!(fa[2], fb[2]);
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for sql in ["'abc", "$tag$abc", "/* open", "\"open", "E'\\", "1e", "$", "x'"] {
            let _ = values(sql);
        }
    }
}
