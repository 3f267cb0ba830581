//! JSON values as statement parameters.
//!
//! Every parameter is sent in Postgres' *text* format, typed by what the server inferred when it
//! prepared the statement: the server's own input function then parses it (`'2024-05-01'` for a
//! `timestamptz`, `'12.50'` for a `numeric`, a UUID string for a `uuid`), so any type with a text
//! form works without a Rust mapping per type. Arrays become array literals, objects and arrays
//! bound to `json`/`jsonb` (or text) become JSON text, `null` becomes SQL NULL.
//! Invariant: a value is never spliced into SQL text — it travels as a bound parameter.

use std::error::Error as StdError;

use bytes::BytesMut;
use serde_json::Value;
use tokio_postgres::types::{Format, IsNull, Kind, ToSql, Type, to_sql_checked};

/// One JSON value bound as a parameter.
#[derive(Debug)]
pub struct JsonParam<'a>(pub &'a Value);

impl ToSql for JsonParam<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        if self.0.is_null() {
            return Ok(IsNull::Yes);
        }
        out.extend_from_slice(text_form(self.0, ty).as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// The text Postgres' input function for `ty` should read.
pub fn text_form(value: &Value, ty: &Type) -> String {
    if matches!(*ty, Type::JSON | Type::JSONB) {
        return value.to_string();
    }
    match (value, ty.kind()) {
        (Value::Array(items), Kind::Array(element)) => array_literal(items, element),
        (Value::String(s), _) => s.clone(),
        (Value::Bool(b), _) => b.to_string(),
        (Value::Number(n), _) => n.to_string(),
        (other, _) => other.to_string(),
    }
}

/// `{"a","b c",NULL,{"1","2"}}`: every element quoted, so no element can break the literal.
fn array_literal(items: &[Value], element: &Type) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&array_literal(inner, element)),
            other => {
                out.push('"');
                for c in text_form(other, element).chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scalars_use_their_plain_text_form() {
        assert_eq!(text_form(&json!("2024-05-01"), &Type::TIMESTAMPTZ), "2024-05-01");
        assert_eq!(text_form(&json!(12.5), &Type::NUMERIC), "12.5");
        assert_eq!(text_form(&json!(true), &Type::BOOL), "true");
        assert_eq!(text_form(&json!(42), &Type::INT8), "42");
    }

    #[test]
    fn json_columns_get_json_text_even_for_strings() {
        assert_eq!(text_form(&json!("x"), &Type::JSONB), "\"x\"");
        assert_eq!(text_form(&json!({"a": [1]}), &Type::JSON), "{\"a\":[1]}");
    }

    #[test]
    fn arrays_become_quoted_array_literals() {
        assert_eq!(
            text_form(&json!(["a", "b \"c\"", null, "d\\e"]), &Type::TEXT_ARRAY),
            r#"{"a","b \"c\"",NULL,"d\\e"}"#
        );
        assert_eq!(text_form(&json!([[1, 2], [3, 4]]), &Type::INT4_ARRAY), r#"{{"1","2"},{"3","4"}}"#);
    }
}
