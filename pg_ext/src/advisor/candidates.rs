//! Index candidates from what the workload's statements ask of each table — the restrictions,
//! join keys and sort orders the planner itself derived — plus the table's statistics. Pure:
//! the rules are general (no table or column is special), and the planner decides later which
//! candidates actually pay off.
//!
//! Rules, per statement and table:
//! - btree on the equality columns (`=`, `IN`, `= ANY`), most selective first, and also with the
//!   columns other statements compare too first (so that one index's prefix serves them all);
//! - the same followed by one range or prefix-pattern column, or by the ORDER BY columns with
//!   their directions (an index in sort order lets a LIMIT stop early);
//! - btree on a range, pattern or join-key column alone;
//! - GIN for containment (`@>`, `?`, `&&`) on jsonb (`jsonb_path_ops` when only `@>` is used)
//!   and arrays;
//! - partial variants: a constant equality on a low-cardinality column becomes the predicate
//!   (`WHERE status = 'AVAILABLE'`) instead of a key; a mostly-NULL leading column gets
//!   `WHERE col IS NOT NULL` — both index fewer rows for the same statements.
//!
//! Candidates an existing index already provides (same method, same leading keys, same or no
//! predicate) are dropped.

use super::model::{
    Atom, Candidate, Column, ExistingIndex, KeySpec, Method, SortKey, Statement, TableInfo, TableUse, TypeClass,
};
use crate::stats::quals::Kind;
use std::collections::{HashMap, HashSet};

/// Keys beyond this add size faster than they add selectivity.
pub const MAX_KEYS: usize = 4;
/// A column with at most this many distinct values is "low cardinality": a constant equality
/// on it can be a partial-index predicate.
pub const PARTIAL_MAX_DISTINCT: f64 = 32.0;
/// A leading column with at least this fraction of NULLs gets an `IS NOT NULL` variant.
pub const NOT_NULL_MIN_NULL_FRAC: f64 = 0.2;

pub fn generate(statements: &[Statement], tables: &[TableInfo], limit: usize) -> Vec<Candidate> {
    let statements = constants_only(statements);
    let shared = shared_equalities(&statements);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in &statements {
        for u in &s.tables {
            let Some(t) = tables.iter().find(|t| t.relid == u.relid) else { continue };
            for c in for_table_use(u, t, &shared) {
                if out.len() >= limit {
                    return out;
                }
                if !covered(&c, &t.indexes) && seen.insert(c.clone()) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// The statements with only the literals that are constants of the application kept: a value
/// that changes from one execution to the next is a parameter, and an index whose predicate
/// names one of its values serves only that value (every other value then scans the table).
/// A literal counts as a constant when every example of its statement repeats it and the
/// statement's constancy record (all its captured executions, not only the kept examples) has
/// never seen it change. Guessing wrong costs sequential scans; guessing conservatively costs
/// only a slightly larger index.
pub fn constants_only(statements: &[Statement]) -> Vec<Statement> {
    let mut out = statements.to_vec();
    for s in &mut out {
        let queryid = s.queryid;
        let constants = s.constants.clone();
        for u in &mut s.tables {
            let relid = u.relid;
            for atom in &mut u.atoms {
                if atom.literal.is_none() {
                    continue;
                }
                let varies = statements.iter().filter(|o| o.queryid == queryid).any(|o| {
                    o.tables.iter().filter(|t| t.relid == relid).any(|t| {
                        t.atoms.iter().any(|b| {
                            b.column == atom.column && b.operator == atom.operator && b.literal != atom.literal
                        })
                    })
                });
                let recorded = atom.literal.as_deref().and_then(unquote).is_some_and(|v| constants.contains(&v));
                if varies || !recorded {
                    atom.literal = None;
                }
            }
        }
    }
    out
}

/// The value of an SQL string literal as `quote_literal` writes it (`'it''s'`, `E'a\\b'`).
pub fn unquote(literal: &str) -> Option<String> {
    let (escaped, body) = match literal.strip_prefix('E') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let inner = body.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = inner.replace("''", "'");
    if escaped {
        out = out.replace("\\\\", "\\");
    }
    Some(out)
}

fn is_btree_key(t: &TableInfo, c: &Column) -> bool {
    match c.attnum().and_then(|a| t.column(a)) {
        Some(info) => !matches!(info.type_class, TypeClass::Jsonb | TypeClass::Array),
        None => matches!(c, Column::Expr { .. }),
    }
}

/// Selectivity order: more distinct values first; unknown (expressions) count as very selective.
fn distinct_of(t: &TableInfo, c: &Column) -> f64 {
    c.attnum().and_then(|a| t.distinct(a)).unwrap_or(f64::MAX / 2.0)
}

/// The btree key for a range or pattern atom (patterns need `text_pattern_ops` unless the
/// column's collation is C).
fn range_key(t: &TableInfo, a: &Atom) -> Option<KeySpec> {
    match a.kind {
        Kind::Range => Some(KeySpec::plain(a.column.clone())),
        Kind::Pattern if a.prefix_pattern && a.operator == "~~" => {
            let class = a.column.attnum().and_then(|n| t.column(n)).map(|c| c.type_class);
            match class {
                Some(TypeClass::Text { c_collation: true, .. }) => Some(KeySpec::plain(a.column.clone())),
                Some(TypeClass::Text { varchar, .. }) => Some(KeySpec {
                    column: a.column.clone(),
                    opclass: Some(if varchar { "varchar_pattern_ops" } else { "text_pattern_ops" }.into()),
                    descending: false,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// For each (table, column): how many statements compare it for equality. A column many
/// statements share is worth putting first: one index's prefix then serves them all.
type Shared = HashMap<(u32, Column), usize>;

fn shared_equalities(statements: &[Statement]) -> Shared {
    let mut seen: HashSet<(u64, u32, Column)> = HashSet::new();
    for s in statements {
        for u in &s.tables {
            for a in u.atoms.iter().filter(|a| matches!(a.kind, Kind::Equality | Kind::InList)) {
                seen.insert((s.queryid, u.relid, a.column.clone()));
            }
        }
    }
    let mut out = Shared::new();
    for (_, relid, column) in seen {
        *out.entry((relid, column)).or_default() += 1;
    }
    out
}

fn for_table_use(u: &TableUse, t: &TableInfo, shared: &Shared) -> Vec<Candidate> {
    let btree = |keys: Vec<KeySpec>, predicate: Option<String>| Candidate {
        relid: t.relid,
        method: Method::Btree,
        keys: keys.into_iter().take(MAX_KEYS).collect(),
        predicate,
        predicate_columns: Vec::new(),
    };

    // Equality columns, deduplicated, most selective first.
    let mut eq: Vec<&Atom> = Vec::new();
    for a in u.atoms.iter().filter(|a| matches!(a.kind, Kind::Equality | Kind::InList) && is_btree_key(t, &a.column)) {
        if !eq.iter().any(|e| e.column == a.column) {
            eq.push(a);
        }
    }
    eq.sort_by(|a, b| distinct_of(t, &b.column).total_cmp(&distinct_of(t, &a.column)).then(a.column.cmp(&b.column)));
    let by_selectivity: Vec<KeySpec> = eq.iter().map(|a| KeySpec::plain(a.column.clone())).collect();
    // The same columns with those other statements also compare first (stable: ties keep the
    // selectivity order).
    let uses = |a: &&Atom| shared.get(&(u.relid, a.column.clone())).copied().unwrap_or(0);
    let mut by_sharing = eq.clone();
    by_sharing.sort_by_key(|a| std::cmp::Reverse(uses(a)));
    let by_sharing: Vec<KeySpec> = by_sharing.iter().map(|a| KeySpec::plain(a.column.clone())).collect();
    let mut orders = vec![by_selectivity.clone()];
    if by_sharing != by_selectivity {
        orders.push(by_sharing);
    }
    let eq_keys = by_selectivity;
    let ranges: Vec<KeySpec> = u.atoms.iter().filter_map(|a| range_key(t, a)).take(2).collect();
    let sort_keys: Vec<KeySpec> = sort_keys(&u.sort, t);

    let mut key_sets: Vec<Vec<KeySpec>> = Vec::new();
    for eq_keys in &orders {
        if !eq_keys.is_empty() {
            key_sets.push(eq_keys.clone());
        }
        for r in &ranges {
            let mut keys = eq_keys.clone();
            let mut r = r.clone();
            // A range on the leading sort column takes the sort's direction: one index serves
            // both.
            if let Some(s) = sort_keys.first().filter(|s| s.column == r.column) {
                r.descending = s.descending;
            }
            keys.push(r);
            key_sets.push(keys);
        }
        if !sort_keys.is_empty() && (u.limited || !eq_keys.is_empty()) {
            let mut keys: Vec<KeySpec> =
                eq_keys.iter().filter(|k| !sort_keys.iter().any(|s| s.column == k.column)).cloned().collect();
            keys.extend(sort_keys.iter().cloned());
            key_sets.push(keys);
        }
    }
    for j in u.join_keys.iter().filter(|j| is_btree_key(t, j)) {
        key_sets.push(vec![KeySpec::plain(j.clone())]);
    }
    if eq_keys.is_empty() {
        for r in &ranges {
            key_sets.push(vec![r.clone()]);
        }
    }

    let mut out: Vec<Candidate> = key_sets.iter().map(|k| btree(k.clone(), None)).collect();
    out.extend(gin_candidates(u, t));

    // Partial variants: a constant equality on a low-cardinality column as the predicate.
    let partial_atoms: Vec<&&Atom> = eq
        .iter()
        .filter(|a| {
            a.kind == Kind::Equality
                && a.literal.is_some()
                && a.column.attnum().and_then(|n| t.distinct(n)).is_some_and(|d| d <= PARTIAL_MAX_DISTINCT)
        })
        .collect();
    let mut variants = Vec::new();
    for a in &partial_atoms {
        let predicate = format!("{} = {}", a.column.index_sql(), a.literal.as_deref().unwrap_or_default());
        for c in &out {
            if c.predicate.is_some() {
                continue;
            }
            let keys: Vec<KeySpec> = c.keys.iter().filter(|k| k.column != a.column).cloned().collect();
            if keys.is_empty() {
                continue;
            }
            let predicate_columns = a.column.attnum().into_iter().collect();
            variants.push(Candidate { predicate: Some(predicate.clone()), predicate_columns, keys, ..c.clone() });
        }
    }
    // A mostly-NULL leading column: index only the rows that have a value.
    for c in &out {
        let Some(lead) = c.keys.first().and_then(|k| k.column.attnum()) else { continue };
        let strict_use = u.atoms.iter().any(|a| a.column.attnum() == Some(lead) && !matches!(a.kind, Kind::IsNull));
        if c.method == Method::Btree
            && c.predicate.is_none()
            && strict_use
            && t.column(lead).is_some_and(|i| i.null_frac >= NOT_NULL_MIN_NULL_FRAC)
        {
            let name = &c.keys[0].column;
            variants.push(Candidate {
                predicate: Some(format!("{} IS NOT NULL", name.index_sql())),
                predicate_columns: vec![lead],
                ..c.clone()
            });
        }
    }
    out.extend(variants);
    out
}

fn sort_keys(sort: &[SortKey], t: &TableInfo) -> Vec<KeySpec> {
    if sort.is_empty() || !sort.iter().all(|s| is_btree_key(t, &s.column)) {
        return Vec::new();
    }
    sort.iter().map(|s| KeySpec { column: s.column.clone(), opclass: None, descending: s.descending }).collect()
}

fn gin_candidates(u: &TableUse, t: &TableInfo) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut columns: Vec<&Column> = Vec::new();
    for a in u.atoms.iter().filter(|a| a.kind == Kind::Containment) {
        if !columns.contains(&&a.column) {
            columns.push(&a.column);
        }
    }
    for c in columns {
        let class = c.attnum().and_then(|n| t.column(n)).map(|i| i.type_class);
        let opclass = match class {
            Some(TypeClass::Jsonb) => {
                let only_contains = u.atoms.iter().filter(|a| &a.column == c).all(|a| a.operator == "@>");
                only_contains.then(|| "jsonb_path_ops".to_string())
            }
            Some(TypeClass::Array) => None,
            _ => continue,
        };
        out.push(Candidate {
            relid: t.relid,
            method: Method::Gin,
            keys: vec![KeySpec { column: c.clone(), opclass, descending: false }],
            predicate: None,
            predicate_columns: Vec::new(),
        });
    }
    out
}

/// Whether an existing index already provides `c`.
pub fn covered(c: &Candidate, existing: &[ExistingIndex]) -> bool {
    let keys: Vec<String> = c.keys.iter().map(KeySpec::sql).collect();
    existing.iter().any(|e| {
        e.method == c.method.sql()
            && (e.predicate.is_none() || e.predicate == c.predicate)
            && match c.method {
                Method::Btree => e.keys.len() >= keys.len() && e.keys[..keys.len()] == keys[..],
                Method::Gin => e.keys == keys,
            }
    })
}

/// The `CREATE INDEX` text of a candidate (without CONCURRENTLY and name when `name` is None,
/// as the advisor evaluates it).
pub fn ddl(c: &Candidate, t: &TableInfo, name: Option<&str>) -> String {
    let keys: Vec<String> = c.keys.iter().map(KeySpec::sql).collect();
    let mut s = match name {
        Some(n) => {
            format!("CREATE INDEX CONCURRENTLY {n} ON {} USING {} ({})", t.name, c.method.sql(), keys.join(", "))
        }
        None => format!("CREATE INDEX ON {} USING {} ({})", t.name, c.method.sql(), keys.join(", ")),
    };
    if let Some(p) = &c.predicate {
        s.push_str(" WHERE ");
        s.push_str(p);
    }
    s
}

/// A deterministic name: table, columns and a hash of the whole definition, within
/// PostgreSQL's 63-byte identifier limit.
pub fn index_name(c: &Candidate, t: &TableInfo) -> String {
    let definition = ddl(c, t, None);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in definition.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let table: String =
        t.bare_name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let cols: Vec<String> = c.keys.iter().map(|k| k.column.slug()).collect();
    let suffix = format!("_{:06x}", h & 0xff_ffff);
    let mut base = format!("vx_{table}_{}", cols.join("_"));
    base.truncate(63 - suffix.len());
    while base.ends_with('_') {
        base.pop();
    }
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::model::ColumnInfo;

    fn col(attnum: i16, name: &str) -> Column {
        Column::Attr { attnum, name: name.into() }
    }

    fn table() -> TableInfo {
        let info = |attnum, name: &str, type_class, n_distinct, null_frac| ColumnInfo {
            attnum,
            name: name.into(),
            type_class,
            n_distinct,
            null_frac,
            avg_width: 8.0,
            rarest_common: None,
        };
        let text = TypeClass::Text { c_collation: false, varchar: false };
        TableInfo {
            relid: 1,
            name: "public.t".into(),
            bare_name: "t".into(),
            rows: 100_000.0,
            row_width: 100.0,
            columns: vec![
                info(1, "id", TypeClass::Other, -1.0, 0.0),
                info(2, "status", text, 4.0, 0.0),
                info(3, "country", text, 50.0, 0.0),
                info(4, "owner", TypeClass::Other, -0.1, 0.6),
                info(5, "created", TypeClass::Other, -1.0, 0.0),
                info(6, "doc", TypeClass::Jsonb, -1.0, 0.0),
                info(7, "name", text, -1.0, 0.0),
            ],
            indexes: vec![ExistingIndex {
                name: "t_pkey".into(),
                method: "btree".into(),
                keys: vec!["id".into()],
                predicate: None,
            }],
            hot_update_fraction: 0.0,
        }
    }

    fn atom(column: Column, kind: Kind, op: &str, literal: Option<&str>) -> Atom {
        Atom { column, kind, operator: op.into(), literal: literal.map(Into::into), prefix_pattern: true }
    }

    fn statement(u: TableUse) -> Statement {
        // Every literal of a test statement is a recorded constant unless a test says otherwise.
        let constants = u.atoms.iter().filter_map(|a| a.literal.as_deref().and_then(unquote)).collect();
        Statement { queryid: 1, calls: 10.0, mean_ms: 1.0, rows_per_call: 1.0, tables: vec![u], constants }
    }

    fn ddls(u: TableUse) -> Vec<String> {
        let t = table();
        generate(&[statement(u)], std::slice::from_ref(&t), 100).iter().map(|c| ddl(c, &t, None)).collect()
    }

    #[test]
    fn equalities_come_most_selective_first_and_a_low_cardinality_constant_becomes_a_predicate() {
        let search = statement(TableUse {
            relid: 1,
            atoms: vec![
                atom(col(2, "status"), Kind::Equality, "=", Some("'AVAILABLE'")),
                atom(col(3, "country"), Kind::Equality, "=", Some("'US'")),
            ],
            ..Default::default()
        });
        // Another statement of the application compares status with the same value.
        let mut other = statement(TableUse {
            relid: 1,
            atoms: vec![atom(col(2, "status"), Kind::Equality, "=", Some("'AVAILABLE'"))],
            ..Default::default()
        });
        other.queryid = 2;
        let t = table();
        let got: Vec<String> =
            generate(&[search, other], std::slice::from_ref(&t), 100).iter().map(|c| ddl(c, &t, None)).collect();
        assert!(got.contains(&"CREATE INDEX ON public.t USING btree (country, status)".to_string()), "{got:?}");
        assert!(
            got.contains(&"CREATE INDEX ON public.t USING btree (country) WHERE status = 'AVAILABLE'".to_string()),
            "{got:?}"
        );
    }

    #[test]
    fn a_value_that_differs_between_examples_of_a_statement_is_no_predicate() {
        // Examples of one statement: status (4 values, low cardinality) is a parameter.
        let example = |queryid: u64, status: &str| {
            let mut s = statement(TableUse {
                relid: 1,
                atoms: vec![
                    atom(col(2, "status"), Kind::Equality, "=", Some(status)),
                    atom(col(3, "country"), Kind::Equality, "=", Some("'US'")),
                ],
                ..Default::default()
            });
            s.queryid = queryid;
            s
        };
        let t = table();
        let run = |statements: &[Statement]| -> Vec<String> {
            generate(statements, std::slice::from_ref(&t), 100).iter().map(|c| ddl(c, &t, None)).collect()
        };
        let varying = run(&[example(1, "'AVAILABLE'"), example(1, "'ACTIVE'")]);
        assert!(!varying.iter().any(|d| d.contains("WHERE status")), "{varying:?}");
        assert!(varying.contains(&"CREATE INDEX ON public.t USING btree (country, status)".to_string()), "{varying:?}");
        // Examples that agree are not enough: the statement's record of all its executions must
        // not have seen the value change either.
        let mut seen_to_change = example(2, "'ACTIVE'");
        seen_to_change.constants.retain(|v| v != "ACTIVE");
        let constant = run(&[example(1, "'AVAILABLE'"), seen_to_change]);
        assert!(
            constant.contains(&"CREATE INDEX ON public.t USING btree (country) WHERE status = 'AVAILABLE'".to_string())
        );
        assert!(!constant.iter().any(|d| d.contains("'ACTIVE'")), "{constant:?}");
    }

    #[test]
    fn literals_unquote_as_quote_literal_wrote_them() {
        assert_eq!(unquote("'AVAILABLE'").as_deref(), Some("AVAILABLE"));
        assert_eq!(unquote("'it''s'").as_deref(), Some("it's"));
        assert_eq!(unquote("E'a\\\\b'").as_deref(), Some("a\\b"));
        assert_eq!(unquote("42"), None);
    }

    #[test]
    fn a_column_other_statements_compare_too_can_lead() {
        let eq = |queryid: u64, cols: &[(i16, &str)]| {
            let mut s = statement(TableUse {
                relid: 1,
                atoms: cols.iter().map(|&(n, name)| atom(col(n, name), Kind::Equality, "=", None)).collect(),
                ..Default::default()
            });
            s.queryid = queryid;
            s
        };
        let t = table();
        let got: Vec<String> =
            generate(&[eq(1, &[(3, "country"), (7, "name")]), eq(2, &[(3, "country")])], std::slice::from_ref(&t), 100)
                .iter()
                .map(|c| ddl(c, &t, None))
                .collect();
        // name is the more selective, but country serves both statements as a prefix.
        assert!(got.contains(&"CREATE INDEX ON public.t USING btree (name, country)".to_string()), "{got:?}");
        assert!(got.contains(&"CREATE INDEX ON public.t USING btree (country, name)".to_string()), "{got:?}");
    }

    #[test]
    fn sort_order_follows_the_equalities_with_its_directions() {
        let got = ddls(TableUse {
            relid: 1,
            atoms: vec![atom(col(4, "owner"), Kind::Equality, "=", Some("7"))],
            sort: vec![SortKey { column: col(5, "created"), descending: true, nulls_first: true }],
            limited: true,
            ..Default::default()
        });
        assert!(got.contains(&"CREATE INDEX ON public.t USING btree (owner, created DESC)".to_string()), "{got:?}");
        // owner is mostly NULL: a variant indexes only the rows that have one.
        assert!(
            got.contains(
                &"CREATE INDEX ON public.t USING btree (owner, created DESC) WHERE owner IS NOT NULL".to_string()
            ),
            "{got:?}"
        );
    }

    #[test]
    fn containment_gets_gin_and_patterns_get_pattern_ops_under_a_linguistic_collation() {
        let got = ddls(TableUse {
            relid: 1,
            atoms: vec![
                atom(col(6, "doc"), Kind::Containment, "@>", Some("'{\"a\": 1}'")),
                atom(col(7, "name"), Kind::Pattern, "~~", Some("'abc%'")),
            ],
            ..Default::default()
        });
        assert!(got.contains(&"CREATE INDEX ON public.t USING gin (doc jsonb_path_ops)".to_string()), "{got:?}");
        assert!(got.contains(&"CREATE INDEX ON public.t USING btree (name text_pattern_ops)".to_string()), "{got:?}");
    }

    #[test]
    fn what_an_existing_index_provides_is_not_proposed() {
        let got = ddls(TableUse {
            relid: 1,
            atoms: vec![atom(col(1, "id"), Kind::Equality, "=", Some("5"))],
            ..Default::default()
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn expressions_are_written_as_pg_get_indexdef_writes_them() {
        assert_eq!(Column::Expr { sql: "lower(name)".into() }.index_sql(), "lower(name)");
        assert_eq!(Column::Expr { sql: "(doc ->> 'k'::text)".into() }.index_sql(), "(doc ->> 'k'::text)");
        assert_eq!(Column::Expr { sql: "a + b".into() }.index_sql(), "(a + b)");
        assert_eq!(Column::Expr { sql: "lower(a) || lower(b)".into() }.index_sql(), "(lower(a) || lower(b))");
    }

    #[test]
    fn names_are_deterministic_and_fit_in_an_identifier() {
        let t = table();
        let c = Candidate {
            relid: 1,
            method: Method::Btree,
            keys: vec![KeySpec::plain(col(3, "a_really_long_column_name_that_goes_on")); 3],
            predicate: None,
            predicate_columns: Vec::new(),
        };
        let a = index_name(&c, &t);
        assert_eq!(a, index_name(&c.clone(), &t));
        assert!(a.len() <= 63 && a.starts_with("vx_t_"), "{a}");
        let mut other = c.clone();
        other.predicate = Some("x = 1".into());
        assert_ne!(index_name(&other, &t), a);
    }
}
