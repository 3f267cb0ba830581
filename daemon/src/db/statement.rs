//! What a client's SQL statement is, found by parsing it with Postgres' own parser (pg_query).
//!
//! [`ReadStatement::parse`] accepts exactly one plain `SELECT` (or `VALUES`/`TABLE`, which parse as
//! one) and lists the relations and functions it names. This check exists for the client's sake —
//! a clear 422 instead of a Postgres error — and for the cache (the relations become tags). It is
//! not what keeps data safe: the statement still runs in a READ ONLY transaction, which refuses
//! writes this parse cannot see (a volatile function that writes, say).
//! Invariant: names are kept exactly as Postgres folded them (unquoted identifiers lower-cased),
//! so that quoting them again resolves the same relation.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::{NodeRef, ParseResult};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatementError {
    /// Postgres' parser rejected the text; the message is the parser's.
    #[error("{0}")]
    Syntax(String),
    #[error("no statement given")]
    Empty,
    #[error("only one statement is allowed, got {0}")]
    Multiple(usize),
    #[error("only read-only statements are allowed: {0}")]
    NotReadOnly(String),
}

/// A possibly schema-qualified name as written in the statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub schema: Option<String>,
    pub name: String,
}

impl QualifiedName {
    /// The name quoted for `to_regclass`/`to_regproc`, which then resolve it exactly as the
    /// statement would (search_path included when there is no schema).
    pub fn quoted(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }
}

/// A statement that passed the read-only pre-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStatement {
    /// The statement as the client wrote it, without a trailing `;`.
    pub text: String,
    /// Postgres' own rendering of the parse tree: whitespace, comments and keyword case do not
    /// change it, constants do. The cache key is made from it.
    pub normalized: String,
    /// Relations named (CTE names excluded), sorted, without duplicates.
    pub relations: Vec<QualifiedName>,
    /// Functions called, sorted, without duplicates.
    pub functions: Vec<QualifiedName>,
}

fn names(list: &[pg_query::protobuf::Node]) -> Vec<String> {
    list.iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

impl ReadStatement {
    pub fn parse(sql: &str) -> Result<Self, StatementError> {
        let parsed: ParseResult = pg_query::parse(sql, 0).map_err(|e| match e {
            pg_query::Error::Parse(message) => StatementError::Syntax(message),
            other => StatementError::Syntax(other.to_string()),
        })?;
        let stmts = &parsed.protobuf.stmts;
        let raw = match stmts.len() {
            0 => return Err(StatementError::Empty),
            1 => &stmts[0],
            n => return Err(StatementError::Multiple(n)),
        };
        match raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
            Some(NodeEnum::SelectStmt(_)) => {}
            Some(other) => {
                return Err(StatementError::NotReadOnly(format!(
                    "{} statements change data or state",
                    statement_keyword(other)
                )));
            }
            None => return Err(StatementError::Empty),
        }

        let mut relations = Vec::new();
        let mut functions = Vec::new();
        for (node, _depth, _context, _) in parsed.protobuf.nodes() {
            match node {
                NodeRef::SelectStmt(s) => {
                    if s.into_clause.is_some() {
                        return Err(StatementError::NotReadOnly("SELECT ... INTO creates a table".into()));
                    }
                    if !s.locking_clause.is_empty() {
                        return Err(StatementError::NotReadOnly("SELECT ... FOR UPDATE/SHARE takes row locks".into()));
                    }
                }
                NodeRef::InsertStmt(_) | NodeRef::UpdateStmt(_) | NodeRef::DeleteStmt(_) | NodeRef::MergeStmt(_) => {
                    return Err(StatementError::NotReadOnly("WITH contains a data-modifying statement".into()));
                }
                NodeRef::RangeVar(v) => {
                    let schema = (!v.schemaname.is_empty()).then(|| v.schemaname.clone());
                    if schema.is_none() && parsed.cte_names.contains(&v.relname) {
                        continue;
                    }
                    relations.push(QualifiedName { schema, name: v.relname.clone() });
                }
                NodeRef::FuncCall(f) => {
                    let mut parts = names(&f.funcname);
                    if let Some(name) = parts.pop() {
                        functions.push(QualifiedName { schema: parts.pop(), name });
                    }
                }
                _ => {}
            }
        }
        relations.sort();
        relations.dedup();
        functions.sort();
        functions.dedup();

        let text = statement_text(sql, raw.stmt_location, raw.stmt_len);
        let normalized = parsed.deparse(pg_query::DeparseOptions::default()).unwrap_or_else(|_| text.clone());
        Ok(Self { text, normalized, relations, functions })
    }
}

/// The bytes of the one statement (the parser reports byte offsets; 0 length = to the end).
fn statement_text(sql: &str, location: i32, len: i32) -> String {
    let start = usize::try_from(location).unwrap_or(0).min(sql.len());
    let end = match usize::try_from(len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(n) => (start + n).min(sql.len()),
    };
    let text = sql.get(start..end).unwrap_or(sql);
    text.trim().trim_end_matches(';').trim_end().to_owned()
}

fn statement_keyword(node: &NodeEnum) -> &'static str {
    match node {
        NodeEnum::InsertStmt(_) => "INSERT",
        NodeEnum::UpdateStmt(_) => "UPDATE",
        NodeEnum::DeleteStmt(_) => "DELETE",
        NodeEnum::MergeStmt(_) => "MERGE",
        NodeEnum::TruncateStmt(_) => "TRUNCATE",
        NodeEnum::CopyStmt(_) => "COPY",
        NodeEnum::TransactionStmt(_) => "transaction control",
        NodeEnum::VariableSetStmt(_) => "SET",
        NodeEnum::ExplainStmt(_) => "EXPLAIN",
        NodeEnum::CallStmt(_) => "CALL",
        NodeEnum::DoStmt(_) => "DO",
        NodeEnum::NotifyStmt(_) | NodeEnum::ListenStmt(_) => "LISTEN/NOTIFY",
        _ => "non-SELECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(schema: Option<&str>, name: &str) -> QualifiedName {
        QualifiedName { schema: schema.map(str::to_owned), name: name.to_owned() }
    }

    #[test]
    fn relations_of_joins_subqueries_unions_and_views_are_found_and_ctes_are_not() {
        let s = ReadStatement::parse(
            "WITH recent AS (SELECT * FROM usage_records WHERE ts > now() - interval '1 day')
             SELECT n.*, (SELECT count(*) FROM public.\"UsageRecord\" u WHERE u.id = n.id)
             FROM \"VirtualNumber\" n JOIN recent r ON r.number_id = n.id
             WHERE n.owner_id IN (SELECT id FROM Owners)
             UNION ALL SELECT * FROM archive.numbers",
        )
        .unwrap();
        assert_eq!(
            s.relations,
            vec![
                rel(None, "VirtualNumber"),
                rel(None, "owners"),
                rel(None, "usage_records"),
                rel(Some("archive"), "numbers"),
                rel(Some("public"), "UsageRecord"),
            ]
        );
        assert!(s.functions.contains(&rel(None, "count")));
        assert!(s.functions.contains(&rel(None, "now")));
    }

    #[test]
    fn writes_are_refused_with_the_reason() {
        for (sql, reason) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("UPDATE t SET a = 1 RETURNING *", "UPDATE"),
            ("DELETE FROM t", "DELETE"),
            ("TRUNCATE t", "TRUNCATE"),
            ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "data-modifying"),
            ("SELECT * INTO copy FROM t", "INTO"),
            ("SELECT * FROM t FOR UPDATE", "FOR UPDATE"),
            ("SET search_path = evil", "SET"),
        ] {
            match ReadStatement::parse(sql) {
                Err(StatementError::NotReadOnly(msg)) => assert!(msg.contains(reason), "{sql}: {msg}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn syntax_errors_carry_the_parsers_message() {
        let err = ReadStatement::parse("SELEC 1").unwrap_err();
        assert_eq!(err, StatementError::Syntax("syntax error at or near \"SELEC\"".into()));
        assert_eq!(ReadStatement::parse("  -- nothing\n"), Err(StatementError::Empty));
        assert_eq!(ReadStatement::parse("SELECT 1; SELECT 2"), Err(StatementError::Multiple(2)));
    }

    #[test]
    fn normalization_ignores_layout_but_not_constants() {
        let a = ReadStatement::parse("select *   from t where id = 1 -- one\n;").unwrap();
        let b = ReadStatement::parse("SELECT * FROM t\nWHERE id = 1").unwrap();
        let c = ReadStatement::parse("SELECT * FROM t WHERE id = 2").unwrap();
        assert_eq!(a.normalized, b.normalized);
        assert_ne!(a.normalized, c.normalized);
        assert_eq!(a.text, "select *   from t where id = 1 -- one");
    }

    #[test]
    fn quoted_names_resolve_exactly() {
        assert_eq!(rel(Some("public"), "VirtualNumber").quoted(), "\"public\".\"VirtualNumber\"");
        assert_eq!(rel(None, "we\"ird").quoted(), "\"we\"\"ird\"");
    }
}
