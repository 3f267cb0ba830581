//! The advisor's plain data: what a statement asks of each table (as the planner saw it), what
//! we know of the tables, and the index candidates derived from both. No Postgres calls here.

use crate::stats::quals::Kind;

/// An indexable column or expression of one table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// A table column (number, name as an identifier, quoted where needed).
    Attr { attnum: i16, name: String },
    /// An immutable expression of the table's columns, deparsed.
    Expr { sql: String },
}

impl Column {
    /// How the column is written in an index definition (`pg_get_indexdef` style).
    pub fn index_sql(&self) -> String {
        match self {
            Column::Attr { name, .. } => name.clone(),
            Column::Expr { sql } => {
                // A function call stands alone, as does an expression already in parentheses;
                // other expressions need them.
                if is_function_call(sql) || (sql.starts_with('(') && balanced_to_end(sql)) {
                    sql.clone()
                } else {
                    format!("({sql})")
                }
            }
        }
    }

    pub fn attnum(&self) -> Option<i16> {
        match self {
            Column::Attr { attnum, .. } => Some(*attnum),
            Column::Expr { .. } => None,
        }
    }

    /// A short name for generated index names.
    pub fn slug(&self) -> String {
        let raw = match self {
            Column::Attr { name, .. } => name.trim_matches('"').to_string(),
            Column::Expr { sql } => sql.clone(),
        };
        raw.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect::<String>()
    }
}

fn is_function_call(sql: &str) -> bool {
    let Some(open) = sql.find('(') else { return false };
    let name = &sql[..open];
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '"')
        && sql.ends_with(')')
        && balanced_to_end(&sql[open..])
}

/// Whether the parenthesis opening `s` closes at its last character.
fn balanced_to_end(s: &str) -> bool {
    let mut depth = 0i32;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return i == s.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

/// One restriction the planner applies to a table's rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Atom {
    pub column: Column,
    pub kind: Kind,
    /// The operator's name (`=`, `<`, `@>`, `~~`, ...).
    pub operator: String,
    /// The compared value as an SQL literal, when the statement had one.
    pub literal: Option<String>,
    /// For patterns: the literal starts with a fixed prefix (`LIKE 'abc%'`), which a btree can
    /// serve.
    pub prefix_pattern: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub column: Column,
    pub descending: bool,
    pub nulls_first: bool,
}

/// Everything one statement asks of one table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableUse {
    pub relid: u32,
    pub atoms: Vec<Atom>,
    /// Columns equated to another table's (the inner side of a nested loop can use an index).
    pub join_keys: Vec<Column>,
    /// ORDER BY keys when they all come from this table.
    pub sort: Vec<SortKey>,
    /// The sort is under a LIMIT (an index in sort order lets the scan stop early).
    pub limited: bool,
    /// How this statement writes the table, if it does.
    pub write: Option<Write>,
}

/// How a statement writes a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Insert,
    /// The columns set (empty: unknown, any).
    Update(Vec<i16>),
    Delete,
}

impl Write {
    /// Whether the write sets column `attnum` (an UPDATE of it, or of unknown columns).
    pub fn sets(&self, attnum: i16) -> bool {
        matches!(self, Write::Update(cols) if cols.is_empty() || cols.contains(&attnum))
    }
}

/// A statement of the workload.
#[derive(Clone, Debug)]
pub struct Statement {
    pub queryid: u64,
    pub calls: f64,
    pub mean_ms: f64,
    /// Rows returned or affected per call.
    pub rows_per_call: f64,
    pub tables: Vec<TableUse>,
    /// Literal values that have stayed the same over the statement's captured executions
    /// (`stats::examples::Constancy`): the constants of the application.
    pub constants: Vec<String>,
}

/// How values of a column can be indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeClass {
    /// Text-like, with whether its collation is "C"/"POSIX" (where a plain btree serves
    /// prefix patterns).
    Text {
        c_collation: bool,
        varchar: bool,
    },
    Jsonb,
    Array,
    Other,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnInfo {
    pub attnum: i16,
    pub name: String,
    pub type_class: TypeClass,
    /// pg_stats' n_distinct (negative: a fraction of the rows), 0 when unknown.
    pub n_distinct: f64,
    pub null_frac: f64,
    pub avg_width: f64,
    /// The least frequent of pg_stats' most common values, as text.
    pub rarest_common: Option<String>,
}

/// An existing valid index, as the catalog describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExistingIndex {
    pub name: String,
    pub method: String,
    /// Key columns as `pg_get_indexdef(index, n, true)` writes them.
    pub keys: Vec<String>,
    pub predicate: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableInfo {
    pub relid: u32,
    /// `schema.table`, quoted as needed.
    pub name: String,
    pub bare_name: String,
    pub rows: f64,
    pub row_width: f64,
    pub columns: Vec<ColumnInfo>,
    pub indexes: Vec<ExistingIndex>,
    /// The share of the table's updates that were HOT (heap-only: no index touched), from
    /// `pg_stat_all_tables`; 0 when it has had no updates.
    pub hot_update_fraction: f64,
}

impl TableInfo {
    pub fn column(&self, attnum: i16) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.attnum == attnum)
    }

    /// Distinct values of a column (pg_stats convention: negative = fraction of rows).
    pub fn distinct(&self, attnum: i16) -> Option<f64> {
        let c = self.column(attnum)?;
        match c.n_distinct {
            d if d > 0.0 => Some(d),
            d if d < 0.0 => Some(-d * self.rows.max(1.0)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Btree,
    Gin,
}

impl Method {
    pub fn sql(self) -> &'static str {
        match self {
            Method::Btree => "btree",
            Method::Gin => "gin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeySpec {
    pub column: Column,
    pub opclass: Option<String>,
    pub descending: bool,
}

impl KeySpec {
    pub fn plain(column: Column) -> Self {
        Self { column, opclass: None, descending: false }
    }

    /// As `pg_get_indexdef(index, n, true)` writes a key column.
    pub fn sql(&self) -> String {
        let mut s = self.column.index_sql();
        if let Some(op) = &self.opclass {
            s.push(' ');
            s.push_str(op);
        }
        if self.descending {
            s.push_str(" DESC");
        }
        s
    }
}

/// A proposed index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub relid: u32,
    pub method: Method,
    pub keys: Vec<KeySpec>,
    /// A partial index's predicate, as SQL.
    pub predicate: Option<String>,
    /// The columns the predicate reads.
    pub predicate_columns: Vec<i16>,
}

impl Candidate {
    /// The table columns the index depends on (keys and predicate; `None` for an expression,
    /// whose columns are not known here).
    pub fn columns(&self) -> Vec<Option<i16>> {
        self.keys.iter().map(|k| k.column.attnum()).chain(self.predicate_columns.iter().map(|&a| Some(a))).collect()
    }
}
