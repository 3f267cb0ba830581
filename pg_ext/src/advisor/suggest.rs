//! `suggest_indexes`, end to end:
//!
//! 1. The workload: this database's statements from voxperf's statistics, most expensive
//!    (total time) first, up to `voxperf.advisor_max_queries`; each weighted by its calls.
//! 2. Representative values: each statement is planned from its kept example executions (the
//!    text with its literals, and parameter values for prepared statements; see
//!    `stats::examples`: up to three taken at sampled moments of its life and the slowest one),
//!    so the planner sees real values and can prove partial indexes usable. Each distinct
//!    example stands for an equal share of the statement's calls: the statement's cost is the
//!    mean over the values it is really run with, and its slow tail has a voice. A statement
//!    without examples is planned from its normalized text, whose `$n` the planner treats as
//!    unknown (a generic plan).
//! 3. Analysis: planning each statement once, reading what it asks of each table (`analyze`).
//! 4. Candidates from those uses and the tables' statistics (`candidates`), minus what existing
//!    indexes provide.
//! 5. Evaluation and choice (`select`): every candidate becomes a hypothetical index; statements
//!    are re-planned with the chosen set plus one candidate; the greedy choice maximises the
//!    execution time saved and prefers the smallest of the near-best. The planner says by what
//!    fraction an index cuts a statement's cost; the statistics say how much time the statement
//!    takes (calls × mean time): their product is the time saved, comparable across statements
//!    as planner costs are not (a cost unit of a big aggregate is not a cost unit of a point
//!    lookup). An index must cut the statements it helps by `min_improvement` and save at least
//!    `min_share` of the workload's time.
//!
//! Each planning runs in its own subtransaction, so a statement that no longer plans (a dropped
//! table) is skipped instead of failing the whole call.

use super::hypo::Session;
use super::model::{Candidate, Statement, TableInfo, TableUse};
use super::plan::{ParamValue, isolated};
use super::select::{self, Evaluator, Options, Workload};
use super::upkeep::{Upkeep, upkeep};
use super::{AdvisorError, analyze, candidates, catalog, ddl, early_stop, plan};
use crate::gucs;
use crate::shmem;
use crate::stats::examples;
use crate::stats::quals::Kind;
use pgrx::pg_sys;
use std::collections::HashMap;

/// One recommended index.
#[derive(Clone, Debug)]
pub struct Suggestion {
    pub relation: String,
    pub columns: Vec<String>,
    pub method: String,
    pub predicate: Option<String>,
    pub name: String,
    pub ddl: String,
    pub cost_before: f64,
    pub cost_after: f64,
    pub improvement: f64,
    pub size_bytes: i64,
    pub queryids: Vec<i64>,
    pub write_overhead: f64,
    pub breaks_hot: bool,
    /// Estimated execution time saved over the statistics window (ms).
    pub saved_ms: f64,
    /// Estimated maintenance time added over the same window (ms).
    pub upkeep_ms: f64,
    pub rationale: String,
}

pub struct Outcome {
    pub suggestions: Vec<Suggestion>,
    /// The time limit cut the search short.
    pub truncated: bool,
    pub statements_considered: usize,
}

/// A workload statement ready to plan.
struct Planned {
    statement: Statement,
    sql: String,
    params: Vec<ParamValue>,
}

/// A statement of the workload as the statistics have it.
struct Recorded {
    queryid: u64,
    calls: f64,
    mean_ms: f64,
    total_ms: f64,
    rows: f64,
    text: String,
}

/// Statements of this database the caller may see (those in `only` when given), most
/// expensive first.
fn workload(sees_all: bool, userid: u32, only: Option<&[u64]>) -> Vec<Recorded> {
    // SAFETY: a backend-local global.
    let dbid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let rows: Vec<Recorded> = shmem::with_table(|t| {
        t.iter()
            .filter(|e| e.key().dbid == dbid && (sees_all || e.key().userid == userid))
            .filter(|e| only.is_none_or(|q| q.contains(&e.key().queryid)))
            .map(|e| {
                let c = e.snapshot();
                Recorded {
                    queryid: e.key().queryid,
                    calls: c.calls[1] as f64,
                    mean_ms: c.mean_time[1],
                    total_ms: c.total_time[1],
                    rows: c.rows as f64,
                    text: String::from_utf8_lossy(t.text_of(e)).into_owned(),
                }
            })
            .filter(|r| r.calls > 0.0)
            .collect()
    })
    .unwrap_or_default();
    // One statement may appear for several users or nesting levels: merge by queryid.
    let mut merged: HashMap<u64, Recorded> = HashMap::new();
    for r in rows {
        match merged.get_mut(&r.queryid) {
            Some(m) => {
                m.calls += r.calls;
                m.total_ms += r.total_ms;
                m.rows += r.rows;
                m.mean_ms = m.total_ms / m.calls;
            }
            None => {
                merged.insert(r.queryid, r);
            }
        }
    }
    let mut out: Vec<Recorded> = merged.into_values().collect();
    out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then(a.queryid.cmp(&b.queryid)));
    out.truncate(gucs::advisor_max_queries());
    out
}

/// Captures a statement needs before its unchanged literals count as constants.
const MIN_CAPTURES: u16 = 6;

/// A synthetic example for a statement: one of its examples with every value that changes
/// between executions and is compared for equality with a column replaced by that column's
/// least common frequent value (pg_stats). The kept examples are drawn by call frequency and
/// may all ask for common values; an index that serves a statement by scanning in ORDER BY
/// order and filtering, stopping at its LIMIT, is quick for common values and slow for rare
/// ones, and the planner only sees that when it is shown a rare value. `None` when the
/// statement has no such value.
fn rare_value_probe(
    sql: &str,
    params: &[ParamValue],
    uses: &[TableUse],
    constants: &[String],
    tables: &[TableInfo],
) -> Option<(String, Vec<ParamValue>)> {
    let mut sql = sql.to_string();
    let mut params = params.to_vec();
    let mut changed = false;
    for u in uses {
        let Some(t) = tables.iter().find(|t| t.relid == u.relid) else { continue };
        for a in u.atoms.iter().filter(|a| a.kind == Kind::Equality) {
            let (Some(quoted), Some(attnum)) = (a.literal.as_deref(), a.column.attnum()) else { continue };
            let Some(value) = candidates::unquote(quoted) else { continue };
            let Some(rare) = t.column(attnum).and_then(|c| c.rarest_common.clone()) else { continue };
            if constants.contains(&value) || rare == value {
                continue;
            }
            if let Some(p) = params.iter_mut().find(|p| p.text.as_deref() == Some(value.as_str())) {
                p.text = Some(rare);
                changed = true;
            } else if sql.contains(quoted) {
                sql = sql.replacen(quoted, &quote_literal(&rare), 1);
                changed = true;
            }
        }
    }
    changed.then_some((sql, params))
}

/// An SQL string literal (`quote_literal`'s form for plain strings).
fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// The texts and parameters to plan for a statement: its distinct examples (those the caller
/// may see), else its normalized text; and the literal values its constancy record shows have
/// never changed.
fn representatives(
    queryid: u64,
    normalized: String,
    sees_all: bool,
    userid: u32,
) -> (Vec<(String, Vec<ParamValue>)>, Vec<String>) {
    // SAFETY: a backend-local global.
    let dbid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let found = shmem::with_examples(|slots| examples::lookup_all(slots, dbid, queryid)).unwrap_or_default();
    let mut constants: Vec<String> = Vec::new();
    if let Some(record) = found.iter().map(|e| &e.constancy).max_by_key(|c| c.captures) {
        for e in &found {
            for (i, v) in examples::literal_values(e).into_iter().enumerate() {
                if record.constant(i, MIN_CAPTURES) && !constants.contains(&v) {
                    constants.push(v);
                }
            }
        }
    }
    let mut out: Vec<(String, Vec<ParamValue>)> = Vec::new();
    for e in found.into_iter().filter(|e| sees_all || e.userid == userid) {
        let params: Vec<ParamValue> = e
            .params
            .into_iter()
            .map(|p| ParamValue { type_oid: pg_sys::Oid::from(p.type_oid), text: p.value })
            .collect();
        if !out.iter().any(|(t, p)| *t == e.text && *p == params) {
            out.push((e.text, params));
        }
    }
    if out.is_empty() {
        out.push((normalized, Vec::new()));
    }
    (out, constants)
}

/// What the caller asks for.
pub struct Request {
    pub min_improvement: f64,
    pub min_share: f64,
    pub max_indexes: usize,
    /// Only these statements (all of the workload when `None`).
    pub queryids: Option<Vec<u64>>,
}

pub fn suggest(req: &Request, sees_all: bool, userid: u32) -> Result<Outcome, AdvisorError> {
    let session = Session::open().map_err(AdvisorError::Nested)?;
    let deadline = select::deadline(gucs::advisor_time_limit());

    // Analysis: what each statement asks of each table, and its cost as things are.
    let mut planned: Vec<Planned> = Vec::new();
    let mut baseline = Vec::new();
    let mut considered = 0;
    // The tables, from the catalogs, as statements name them.
    let mut tables: Vec<TableInfo> = Vec::new();
    let load_tables = |uses: &[TableUse], tables: &mut Vec<TableInfo>| {
        for u in uses {
            if tables.iter().any(|t| t.relid == u.relid) {
                continue;
            }
            if let Some(Ok(Some(t))) = isolated(|| catalog::load(u.relid)) {
                tables.push(t);
            }
        }
    };
    let statements = workload(sees_all, userid, req.queryids.as_deref());
    for r in statements {
        let (queryid, calls, mean_ms) = (r.queryid, r.calls, r.mean_ms);
        let rows_per_call = r.rows / r.calls;
        let (reps, constants) = representatives(queryid, r.text, sees_all, userid);
        let mut analyzed: Vec<(String, Vec<ParamValue>, analyze::Analyzed)> = Vec::new();
        for (sql, params) in reps {
            let Some(Ok(a)) = isolated(|| analyze::analyze(&sql, &params)) else { continue };
            if !a.tables.is_empty() {
                analyzed.push((sql, params, a));
            }
        }
        if let Some((sql, params, a)) = analyzed.first() {
            load_tables(&a.tables, &mut tables);
            if let Some((probe_sql, probe_params)) = rare_value_probe(sql, params, &a.tables, &constants, &tables)
                && !analyzed.iter().any(|x| x.0 == probe_sql && x.1 == probe_params)
                && let Some(Ok(pa)) = isolated(|| analyze::analyze(&probe_sql, &probe_params))
                && !pa.tables.is_empty()
            {
                analyzed.push((probe_sql, probe_params, pa));
            }
        }
        considered += usize::from(!analyzed.is_empty());
        let share = 1.0 / analyzed.len().max(1) as f64;
        for (sql, params, a) in analyzed {
            load_tables(&a.tables, &mut tables);
            baseline.push(a.cost);
            let statement = Statement {
                queryid,
                calls: calls * share,
                mean_ms,
                rows_per_call,
                tables: a.tables,
                constants: constants.clone(),
            };
            planned.push(Planned { statement, sql, params });
        }
    }
    let statements: Vec<Statement> = planned.iter().map(|p| p.statement.clone()).collect();

    // Candidates, each as a hypothetical index of the session.
    let mut cands: Vec<(Candidate, usize)> = Vec::new();
    for c in candidates::generate(&statements, &tables, gucs::advisor_max_candidates()) {
        let t = tables.iter().find(|t| t.relid == c.relid).expect("candidate of a known table");
        let text = candidates::ddl(&c, t, None);
        if let Some(Ok(index)) = isolated(|| ddl::parse_create_index(&text)) {
            cands.push((c, session.add(index)));
        }
    }
    let affected: Vec<Vec<usize>> = cands
        .iter()
        .map(|(c, _)| {
            (0..planned.len()).filter(|&s| planned[s].statement.tables.iter().any(|u| u.relid == c.relid)).collect()
        })
        .collect();
    // Weights that make weight × planned cost the statement's execution time in ms.
    let weights: Vec<f64> = planned
        .iter()
        .zip(&baseline)
        .map(|(p, &cost)| if cost > 0.0 { p.statement.calls * p.statement.mean_ms / cost } else { 0.0 })
        .collect();
    let total_ms: f64 = weights.iter().zip(&baseline).map(|(w, c)| w * c).sum();

    let mut eval = HypoEvaluator {
        session: &session,
        planned: &planned,
        handles: cands.iter().map(|x| x.1).collect(),
        early_stops: HashMap::new(),
    };
    // What each candidate would cost the workload's writes (ms over the same window).
    let upkeeps: Vec<Upkeep> = cands
        .iter()
        .map(|(c, handle)| {
            let t = tables.iter().find(|t| t.relid == c.relid).expect("candidate of a known table");
            upkeep(c, t, &statements, session.predicate_fraction(*handle))
        })
        .collect();
    let upkeep_ms: Vec<f64> = upkeeps.iter().map(|u| u.ms).collect();
    let opts = Options {
        min_improvement: req.min_improvement,
        min_saving: req.min_share * total_ms,
        max_indexes: req.max_indexes,
        deadline,
        trace: gucs::advisor_trace(),
        ..Options::default()
    };
    let w = Workload { affected: &affected, weights: &weights, baseline: &baseline, upkeep: &upkeep_ms };
    let selection = select::choose(&w, &mut eval, &opts);

    for (i, round) in selection.trace.iter().enumerate() {
        let describe_candidate = |c: usize| {
            let (cand, _) = &cands[c];
            let t = tables.iter().find(|t| t.relid == cand.relid).expect("candidate of a known table");
            candidates::ddl(cand, t, None)
        };
        let lines: Vec<String> = round
            .scored
            .iter()
            .map(|&(c, net, size)| format!("  {net:.1} ms net, {size:.0} bytes: {}", describe_candidate(c)))
            .collect();
        pgrx::notice!(
            "voxperf advisor round {}: chose {}\n{} candidates (workload {:.0} ms, min saving {:.1} ms):\n{}",
            i + 1,
            describe_candidate(round.chosen),
            cands.len(),
            total_ms,
            opts.min_saving,
            lines.join("\n")
        );
    }
    let suggestions = selection
        .chosen
        .iter()
        .map(|choice| {
            let (c, handle) = &cands[choice.candidate];
            let t = tables.iter().find(|t| t.relid == c.relid).expect("candidate of a known table");
            let ctx = Context {
                size: eval.size(choice.candidate),
                fraction: session.predicate_fraction(*handle),
                upkeep: upkeeps[choice.candidate],
                total_ms,
            };
            describe(c, t, choice, &planned, &ctx)
        })
        .collect();
    Ok(Outcome { suggestions, truncated: selection.truncated, statements_considered: considered })
}

struct HypoEvaluator<'a> {
    session: &'a Session,
    planned: &'a [Planned],
    handles: Vec<usize>,
    /// Where the LIMIT of a statement's early-stopping scan really stops, by statement and
    /// sampling query (see `early_stop`); `None` when it could not be sampled.
    early_stops: HashMap<(usize, String), Option<f64>>,
}

impl Evaluator for HypoEvaluator<'_> {
    fn cost(&mut self, stmt: usize, set: &[usize]) -> f64 {
        let handles: Vec<usize> = set.iter().map(|&c| self.handles[c]).collect();
        self.session.show(&handles);
        let p = &self.planned[stmt];
        let check = gucs::advisor_sample_early_stops();
        let planned = isolated(|| {
            plan::plan(&p.sql, &p.params).map(|x| (x.total_cost(), check.then(|| x.early_stop()).flatten(), x.params()))
        });
        // Nothing hypothetical may be visible while the sample runs.
        self.session.show(&[]);
        match planned {
            Some(Ok((c, Some(es), params))) => {
                let key = (stmt, es.sample_sql.clone());
                let fraction = *self.early_stops.entry(key).or_insert_with(|| {
                    // SAFETY: `params` were bound by `plan` in this memory context.
                    isolated(|| unsafe { early_stop::sample(&es, params) }).flatten()
                });
                fraction.map_or(c, |f| es.corrected(c, f))
            }
            Some(Ok((c, _, _))) => c,
            _ => f64::INFINITY, // a plan that fails with the index counts as no improvement
        }
    }

    fn size(&mut self, c: usize) -> f64 {
        self.session.size_bytes(self.handles[c]) as f64
    }
}

/// pganalyze's "index write overhead": bytes written to the index per byte written to the
/// table for each inserted (or non-HOT updated) row, scaled by the share of rows a partial
/// index holds.
fn write_overhead(c: &Candidate, t: &TableInfo, predicate_fraction: f64) -> f64 {
    let key_bytes: f64 =
        c.keys.iter().map(|k| k.column.attnum().and_then(|a| t.column(a)).map_or(16.0, |i| i.avg_width.max(1.0))).sum();
    let entry = key_bytes + 8.0 + 4.0; // IndexTupleData header, line pointer
    let row = t.row_width.max(1.0) + 24.0 + 4.0; // heap tuple header, line pointer
    entry / row * predicate_fraction
}

/// What `describe` needs besides the choice.
struct Context {
    size: f64,
    fraction: f64,
    upkeep: Upkeep,
    /// Execution time of the whole analysed workload (ms).
    total_ms: f64,
}

fn describe(c: &Candidate, t: &TableInfo, choice: &select::Choice, planned: &[Planned], ctx: &Context) -> Suggestion {
    let name = candidates::index_name(c, t);
    let keys: Vec<String> = c.keys.iter().map(|k| k.sql()).collect();
    // Planner costs per execution (calls-weighted) of the statements it helps.
    let calls: f64 = choice.statements.iter().map(|&(s, _, _)| planned[s].statement.calls).sum();
    let per_call = |f: &dyn Fn(&(usize, f64, f64)) -> f64| -> f64 {
        if calls > 0.0 {
            choice.statements.iter().map(|x| planned[x.0].statement.calls * f(x)).sum::<f64>() / calls
        } else {
            0.0
        }
    };
    let (cost_before, cost_after) = (per_call(&|x| x.1), per_call(&|x| x.2));
    // Several examples of one statement count once.
    let mut queryids: Vec<i64> = Vec::new();
    for &(s, _, _) in &choice.statements {
        let q = planned[s].statement.queryid as i64;
        if !queryids.contains(&q) {
            queryids.push(q);
        }
    }
    let saved_ms = choice.cost_before - choice.cost_after;
    let improvement = if choice.cost_before > 0.0 { saved_ms / choice.cost_before } else { 0.0 };
    let mut rationale = format!(
        "{} on {}{} for {} statement{} ({:.0} calls): saves an estimated {:.0} ms of their {:.0} ms ({:.0}%, {:.1}% of the workload's time)",
        describe_keys(c),
        t.name,
        c.predicate
            .as_ref()
            .map(|p| format!(", indexing only rows where {p} ({:.0}% of the table),", ctx.fraction * 100.0))
            .unwrap_or_default(),
        queryids.len(),
        if queryids.len() == 1 { "" } else { "s" },
        calls,
        saved_ms,
        choice.cost_before,
        improvement * 100.0,
        if ctx.total_ms > 0.0 { saved_ms / ctx.total_ms * 100.0 } else { 0.0 },
    );
    if ctx.upkeep.rows_written > 0.0 {
        rationale.push_str(&format!(
            "; maintaining it costs about {:.1} ms for the {:.0} rows the workload wrote",
            ctx.upkeep.ms, ctx.upkeep.rows_written
        ));
    }
    rationale.push('.');
    if ctx.upkeep.breaks_hot {
        rationale.push_str(" The workload updates a column it depends on: those updates will no longer be HOT.");
    }
    Suggestion {
        relation: t.name.clone(),
        columns: keys,
        method: c.method.sql().to_string(),
        predicate: c.predicate.clone(),
        ddl: candidates::ddl(c, t, Some(&name)),
        name,
        cost_before,
        cost_after,
        improvement,
        size_bytes: ctx.size as i64,
        queryids,
        write_overhead: write_overhead(c, t, ctx.fraction),
        breaks_hot: ctx.upkeep.breaks_hot,
        saved_ms,
        upkeep_ms: ctx.upkeep.ms,
        rationale,
    }
}

fn describe_keys(c: &Candidate) -> String {
    let keys: Vec<String> = c.keys.iter().map(|k| k.sql()).collect();
    match c.method {
        super::model::Method::Gin => format!("a GIN index on {} for containment searches", keys.join(", ")),
        super::model::Method::Btree => format!("a btree on ({})", keys.join(", ")),
    }
}
