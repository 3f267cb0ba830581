//! Building the representative text of a statement: every ignorable constant (as located by
//! the core's query jumbling and measured by the server's own scanner) is replaced by `$n`,
//! exactly as pg_stat_statements does, so `WHERE id = 42` and `WHERE id = -7` share one text.

/// A constant's byte offset in the statement text and its length; `None` length marks a
/// duplicate location to skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConstantSpan {
    pub location: usize,
    pub length: Option<usize>,
}

/// Replace each span (sorted by location, inside `query`) with `$k`, numbering from
/// `first_param` (one past the highest `$n` the statement already uses).
pub fn normalize(query: &[u8], spans: &[ConstantSpan], first_param: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(query.len() + spans.len() * 10);
    let mut copied = 0usize;
    let mut n = first_param;
    for span in spans {
        let Some(len) = span.length else { continue };
        // Spans out of order or out of range would mean the scanner disagreed with the
        // parser; keep the original text rather than produce a wrong one.
        if span.location < copied || span.location + len > query.len() {
            continue;
        }
        out.extend_from_slice(&query[copied..span.location]);
        out.extend_from_slice(format!("${n}").as_bytes());
        n += 1;
        copied = span.location + len;
    }
    out.extend_from_slice(&query[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(location: usize, length: usize) -> ConstantSpan {
        ConstantSpan { location, length: Some(length) }
    }

    #[test]
    fn constants_become_numbered_parameters() {
        let q = b"SELECT * FROM t WHERE a = 42 AND b = 'x''y' LIMIT 10";
        let out = normalize(q, &[span(26, 2), span(37, 6), span(50, 2)], 1);
        assert_eq!(String::from_utf8(out).unwrap(), "SELECT * FROM t WHERE a = $1 AND b = $2 LIMIT $3");
    }

    #[test]
    fn numbering_continues_after_existing_parameters_and_duplicates_are_skipped() {
        let q = b"select $1, 5, 5";
        let out = normalize(q, &[span(11, 1), ConstantSpan { location: 11, length: None }, span(14, 1)], 2);
        assert_eq!(out, b"select $1, $2, $3");
    }

    #[test]
    fn inconsistent_spans_leave_text_intact() {
        assert_eq!(normalize(b"select 1", &[span(7, 50)], 1), b"select 1");
    }
}
