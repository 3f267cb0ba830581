//! Choosing the set of indexes: greedy by the weighted planner cost each candidate saves given
//! the ones already chosen (so a composite that serves several statements beats the singles it
//! subsumes, and a second index that adds nothing is not chosen), preferring the smallest of
//! the near-best candidates, within a budget of indexes and of time. Pure: the costs come from
//! an `Evaluator`, which the advisor implements by planning with hypothetical indexes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Plans statements with a set of hypothetical indexes.
pub trait Evaluator {
    /// Planner cost of statement `stmt` with exactly the candidates `set` visible.
    fn cost(&mut self, stmt: usize, set: &[usize]) -> f64;
    /// Estimated size of candidate `c` in bytes (known once it has been planned with).
    fn size(&mut self, c: usize) -> f64;
}

#[derive(Clone, Debug)]
pub struct Options {
    /// A candidate must cut the weighted cost of the statements it helps by at least this
    /// fraction of their cost without any new index (so that, once a big win is taken, a second
    /// index that shaves a little more off an already cheap plan does not qualify, while an
    /// index for a statement nothing else serves is judged on that statement alone, not drowned
    /// by the cost of unrelated statements on its table).
    pub min_improvement: f64,
    /// A candidate must also save at least this much (in the units of weight × cost: the
    /// advisor weighs statements so that this is milliseconds of execution time), so that an
    /// index whose whole benefit is a sliver of the workload is not worth its writes and bytes.
    pub min_saving: f64,
    pub max_indexes: usize,
    /// Candidates that save (net of upkeep) within this fraction of the best one's saving and
    /// leave each statement the best one helps with a cost within this fraction of what the
    /// best leaves it are "near-best" (statements that make up at least a tenth of the best
    /// one's saving count); the smallest of them is chosen. (The comparison is per
    /// statement and on what remains: against a sequential scan of a large table every usable
    /// index saves nearly everything, yet one may leave half the cost of another; and one
    /// statement's large cost must not hide another's difference.)
    pub near_best: f64,
    pub deadline: Option<Instant>,
    /// Record each round's scores in [`Selection::trace`].
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { min_improvement: 0.1, min_saving: 0.0, max_indexes: 10, near_best: 0.1, deadline: None, trace: false }
    }
}

/// One chosen index.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub candidate: usize,
    /// Weighted cost of the statements it helps, before and after adding it.
    pub cost_before: f64,
    pub cost_after: f64,
    /// Statements whose cost it lowered, with their (unweighted) cost before and after.
    pub statements: Vec<(usize, f64, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub chosen: Vec<Choice>,
    /// The deadline stopped the search early.
    pub truncated: bool,
    /// With `Options::trace`: per round, the best-scoring candidates as (candidate, net
    /// saving, size) and the one chosen.
    pub trace: Vec<Round>,
}

/// One round of the search, for tracing.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    pub scored: Vec<(usize, f64, f64)>,
    pub chosen: usize,
}

/// A statement counts as helped by a candidate when its cost drops by at least this fraction:
/// smaller differences are the planner's arithmetic noise (an index it considers and rejects can
/// shift an estimate by a hair), and counting them would add statements the index does not
/// serve to the base its improvement is measured against.
const NOISE: f64 = 0.005;

fn helps(cost: f64, current: f64) -> bool {
    cost < current * (1.0 - NOISE)
}

fn hurts(cost: f64, current: f64) -> bool {
    cost > current * (1.0 + NOISE)
}

/// A statement whose share of the best candidate's saving is at least this much must not lose
/// much of it to a smaller near-best rival.
const SIGNIFICANT: f64 = 0.1;
/// Candidates listed per round when tracing.
const TRACE_TOP: usize = 8;

/// A candidate's score in one round: (candidate, weighted saving net of its upkeep, weighted
/// current cost of the statements it helps, the cost of each affected statement with it).
type Scored = (usize, f64, f64, Vec<(usize, f64)>);

/// The workload as the choice sees it.
pub struct Workload<'a> {
    /// `affected[c]`: statements that touch candidate c's table.
    pub affected: &'a [Vec<usize>],
    /// `weights[s]`: what one unit of statement s's cost weighs (how often it runs).
    pub weights: &'a [f64],
    /// `baseline[s]`: its cost with no hypothetical index.
    pub baseline: &'a [f64],
    /// `upkeep[c]`: what candidate c costs the workload's writes, in weighted units; it is
    /// subtracted from what the candidate saves.
    pub upkeep: &'a [f64],
}

pub fn choose(w: &Workload<'_>, eval: &mut impl Evaluator, opts: &Options) -> Selection {
    let Workload { affected, weights, baseline, upkeep } = *w;
    let mut current = baseline.to_vec();
    let mut chosen: Vec<Choice> = Vec::new();
    let mut set: Vec<usize> = Vec::new();
    let mut alive: Vec<bool> = vec![true; affected.len()];
    // Costs of each (candidate, statement) with `set ∪ {candidate}`, valid until `set` changes
    // for the statement.
    let mut memo: HashMap<(usize, usize), f64> = HashMap::new();
    let mut truncated = false;
    let mut trace = Vec::new();
    // Each candidate's latest net saving, for the second look.
    let mut last_net: Vec<f64> = vec![0.0; affected.len()];
    let expired = |opts: &Options| opts.deadline.is_some_and(|d| Instant::now() >= d);

    while chosen.len() < opts.max_indexes {
        let mut scored: Vec<Scored> = Vec::new();
        // Candidates whose saving a statement they make worse eats: (candidate, saving on the
        // statements they help, the statements they hurt).
        let mut regressing: Vec<(usize, f64, Vec<usize>)> = Vec::new();
        for c in 0..affected.len() {
            if !alive[c] {
                continue;
            }
            if expired(opts) {
                truncated = true;
                break;
            }
            let mut with = set.clone();
            with.push(c);
            let mut saving = 0.0;
            let mut gross = 0.0;
            let mut hurt: Vec<usize> = Vec::new();
            let (mut base, mut original) = (0.0, 0.0);
            let mut costs = Vec::new();
            for &s in &affected[c] {
                let cost = *memo.entry((c, s)).or_insert_with(|| eval.cost(s, &with));
                if helps(cost, current[s]) {
                    saving += weights[s] * (current[s] - cost);
                    gross += weights[s] * (current[s] - cost);
                    base += weights[s] * current[s];
                    original += weights[s] * baseline[s];
                } else if hurts(cost, current[s]) {
                    // The planner would switch this statement to a plan that is worse (an
                    // early stop the data contradicts): the index costs that much.
                    saving -= weights[s] * (cost - current[s]);
                    hurt.push(s);
                }
                costs.push((s, cost));
            }
            // Its own saving need not qualify: the pair's does (see `best_pair`).
            if !hurt.is_empty() && gross > upkeep.get(c).copied().unwrap_or(0.0) {
                regressing.push((c, gross, hurt));
            }
            let net = saving - upkeep.get(c).copied().unwrap_or(0.0);
            if original <= 0.0 || saving / original < opts.min_improvement || net < opts.min_saving || net <= 0.0 {
                // Savings only shrink as the set grows (until a later choice makes one of its
                // statements worse, which revives it): for now it does not qualify.
                alive[c] = false;
                continue;
            }
            last_net[c] = net;
            scored.push((c, net, base, costs));
        }
        // A candidate that makes a statement worse may still be right together with an index
        // that serves that statement: the best such pairs are scored as one choice.
        let best_single = scored.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
        if chosen.len() + 2 <= opts.max_indexes
            && let Some(Pair { first: c, second: d, net, costs, hurt }) =
                best_pair(w, eval, &set, &current, &mut memo, regressing, opts)
            && net > best_single
        {
            // The second index is credited with the statements the first alone made worse.
            let mut credited = [(c, Vec::new(), 0.0, 0.0), (d, Vec::new(), 0.0, 0.0)];
            for &(s, cost) in &costs {
                let who = usize::from(hurt.contains(&s));
                if helps(cost, current[s]) {
                    credited[who].1.push((s, current[s], cost));
                    credited[who].2 += weights[s] * current[s];
                    credited[who].3 += weights[s] * cost;
                }
                current[s] = cost;
            }
            memo.retain(|(_, s), _| !costs.iter().any(|x| x.0 == *s));
            for (x, statements, before, after) in credited {
                alive[x] = false;
                set.push(x);
                last_net[x] = net;
                chosen.push(Choice { candidate: x, cost_before: before, cost_after: after, statements });
                if opts.trace {
                    let scored_round = if x == c { trace_round(&scored, eval) } else { Vec::new() };
                    trace.push(Round { scored: scored_round, chosen: x });
                }
            }
            continue;
        }
        let Some(best) = scored.iter().max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0))) else { break };
        let round = if opts.trace { trace_round(&scored, eval) } else { Vec::new() };
        // A rival is near-best if it leaves none of the statements that make up a good part of
        // the best one's saving with much more cost than the best leaves it.
        let (best_c, best_net) = (best.0, best.1);
        let best_saving: f64 = best.3.iter().map(|&(s, cost)| weights[s] * (current[s] - cost).max(0.0)).sum();
        let best_costs: Vec<(usize, f64)> = best
            .3
            .iter()
            .filter(|&&(s, cost)| {
                weights[s] * (current[s] - cost) >= SIGNIFICANT * best_saving && helps(cost, current[s])
            })
            .copied()
            .collect();
        let close = |costs: &[(usize, f64)]| -> bool {
            best_costs.iter().all(|&(s, best_cost)| {
                costs
                    .iter()
                    .find(|x| x.0 == s)
                    .is_some_and(|x| x.1.min(current[s]) <= best_cost * (1.0 + opts.near_best) + 1e-9)
            })
        };
        let (c, _, base, costs) = scored
            .into_iter()
            .filter(|x| affected[x.0] == affected[best_c] && x.1 >= best_net * (1.0 - opts.near_best) && close(&x.3))
            .min_by(|a, b| eval.size(a.0).total_cmp(&eval.size(b.0)).then(b.1.total_cmp(&a.1)).then(a.0.cmp(&b.0)))
            .expect("the best candidate is near-best");
        let mut after = 0.0;
        let mut statements = Vec::new();
        let mut hurt = Vec::new();
        for &(s, cost) in &costs {
            if helps(cost, current[s]) {
                statements.push((s, current[s], cost));
                after += weights[s] * cost;
                current[s] = cost;
            } else if hurts(cost, current[s]) {
                hurt.push(s);
                current[s] = cost;
            }
        }
        // The set changed for these statements: their cached costs are stale.
        memo.retain(|(_, s), _| !statements.iter().any(|x| x.0 == *s) && !hurt.contains(s));
        // A statement the choice made worse may now be worth an index that did not qualify.
        for (d, alive_d) in alive.iter_mut().enumerate() {
            if d != c && !set.contains(&d) && affected[d].iter().any(|s| hurt.contains(s)) {
                *alive_d = true;
            }
        }
        alive[c] = false;
        set.push(c);
        chosen.push(Choice { candidate: c, cost_before: base, cost_after: after, statements });
        if opts.trace {
            trace.push(Round { scored: round, chosen: c });
        }
        if truncated {
            break;
        }
    }
    if !truncated {
        truncated = !second_look(w, eval, opts, &last_net, &mut chosen, &mut trace);
    }
    Selection { chosen, truncated, trace }
}

/// The best-scoring candidates of a round, for the trace.
fn trace_round(scored: &[Scored], eval: &mut impl Evaluator) -> Vec<(usize, f64, f64)> {
    let mut top: Vec<&Scored> = scored.iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.iter().take(TRACE_TOP).map(|x| (x.0, x.1, eval.size(x.0))).collect()
}

/// Regressing candidates tried in pairs per round, and partners tried with each.
const PAIR_FIRSTS: usize = 2;
const PAIR_PARTNERS: usize = 3;

/// Two candidates chosen together (see [`best_pair`]).
struct Pair {
    first: usize,
    second: usize,
    net: f64,
    /// Cost of each statement of their table with both.
    costs: Vec<(usize, f64)>,
    /// The statements the first alone makes worse.
    hurt: Vec<usize>,
}

/// For the candidates that would make a statement worse (best savings first), the partner of
/// the same table that serves those statements best alone, and the pair's net saving with both
/// added: the best pair, if any saves at least `min_saving`.
fn best_pair(
    w: &Workload<'_>,
    eval: &mut impl Evaluator,
    set: &[usize],
    current: &[f64],
    memo: &mut HashMap<(usize, usize), f64>,
    mut regressing: Vec<(usize, f64, Vec<usize>)>,
    opts: &Options,
) -> Option<Pair> {
    let Workload { affected, weights, upkeep, .. } = *w;
    let upkeep_of = |c: usize| upkeep.get(c).copied().unwrap_or(0.0);
    regressing.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    regressing.truncate(PAIR_FIRSTS);
    let mut best: Option<Pair> = None;
    for (c, _, hurt) in regressing {
        let mut partners: Vec<(usize, f64)> = Vec::new();
        for d in 0..affected.len() {
            if d == c || set.contains(&d) || affected[d] != affected[c] {
                continue;
            }
            if opts.deadline.is_some_and(|t| Instant::now() >= t) {
                return best;
            }
            let mut with = set.to_vec();
            with.push(d);
            let alone: f64 =
                hurt.iter().map(|&s| weights[s] * *memo.entry((d, s)).or_insert_with(|| eval.cost(s, &with))).sum();
            partners.push((d, alone));
        }
        partners.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        partners.truncate(PAIR_PARTNERS);
        for (d, _) in partners {
            let mut with = set.to_vec();
            with.push(c);
            with.push(d);
            let costs: Vec<(usize, f64)> = affected[c].iter().map(|&s| (s, eval.cost(s, &with))).collect();
            let saving: f64 = costs.iter().map(|&(s, cost)| weights[s] * (current[s] - cost)).sum();
            let net = saving - upkeep_of(c) - upkeep_of(d);
            if net >= opts.min_saving && net > 0.0 && best.as_ref().is_none_or(|b| net > b.net) {
                best = Some(Pair { first: c, second: d, net, costs, hurt: hurt.clone() });
            }
        }
    }
    best
}

/// Rivals tried against each chosen index in the second look.
const SWAP_RIVALS: usize = 6;

/// The second look: the greedy judged each index against the set as it was when it was
/// chosen, so an index chosen early may owe part of its lead to statements that a later choice
/// serves better. Against the final set, each chosen index is dropped if the others leave it
/// less than `min_saving` to do, or replaced by a smaller one (among the best-scoring of its
/// table) that does nearly as much. False if the deadline cut it short.
fn second_look(
    w: &Workload<'_>,
    eval: &mut impl Evaluator,
    opts: &Options,
    last_net: &[f64],
    chosen: &mut Vec<Choice>,
    trace: &mut Vec<Round>,
) -> bool {
    let Workload { affected, weights, upkeep, .. } = *w;
    let upkeep_of = |c: usize| upkeep.get(c).copied().unwrap_or(0.0);
    let expired = || opts.deadline.is_some_and(|d| Instant::now() >= d);
    let mut i = 0;
    while i < chosen.len() {
        if expired() {
            return false;
        }
        let c = chosen[i].candidate;
        let others: Vec<usize> = chosen.iter().map(|x| x.candidate).filter(|&x| x != c).collect();
        let costs = |eval: &mut dyn FnMut(usize, &[usize]) -> f64, with: &[usize]| -> Vec<f64> {
            affected[c].iter().map(|&s| eval(s, with)).collect()
        };
        let mut plan = |s: usize, with: &[usize]| eval.cost(s, with);
        let without = costs(&mut plan, &others);
        let total = |v: &[f64]| -> f64 { affected[c].iter().zip(v).map(|(&s, cost)| weights[s] * cost).sum() };
        let with_set = |r: usize| -> Vec<usize> {
            let mut v = others.clone();
            v.push(r);
            v
        };
        let with_c = costs(&mut plan, &with_set(c));
        let gain_c = total(&without) - total(&with_c) - upkeep_of(c);
        if gain_c < opts.min_saving || gain_c <= 0.0 {
            // The others do its work: drop it.
            chosen.remove(i);
            continue;
        }
        let size_c = eval.size(c);
        let mut rivals: Vec<usize> = (0..affected.len())
            .filter(|&r| {
                r != c
                    && last_net[r] > 0.0
                    && affected[r] == affected[c]
                    && !chosen.iter().any(|x| x.candidate == r)
                    && eval.size(r) < size_c
            })
            .collect();
        rivals.sort_by(|a, b| last_net[*b].total_cmp(&last_net[*a]));
        rivals.truncate(SWAP_RIVALS);
        let mut swap: Option<(usize, Vec<f64>)> = None;
        for r in rivals {
            if expired() {
                return false;
            }
            let with_r = costs(&mut |s, with| eval.cost(s, with), &with_set(r));
            let gain_r = total(&without) - total(&with_r) - upkeep_of(r);
            let smaller = swap.as_ref().is_none_or(|(best, _)| eval.size(r) < eval.size(*best));
            // As in the greedy's near-best rule: no statement that makes up a good part of c's
            // saving may be left with much more cost than c leaves it.
            let saving_c = total(&without) - total(&with_c);
            let close = affected[c].iter().enumerate().all(|(k, &s)| {
                let share = weights[s] * (without[k] - with_c[k]);
                share < SIGNIFICANT * saving_c || with_r[k] <= with_c[k] * (1.0 + opts.near_best) + 1e-9
            });
            if gain_r >= gain_c * (1.0 - opts.near_best) && smaller && close {
                swap = Some((r, with_r));
            }
        }
        if let Some((r, with_r)) = swap {
            let mut statements = Vec::new();
            let (mut before, mut after) = (0.0, 0.0);
            for ((&s, &b), &a) in affected[c].iter().zip(&without).zip(&with_r) {
                if helps(a, b) {
                    statements.push((s, b, a));
                    before += weights[s] * b;
                    after += weights[s] * a;
                }
            }
            chosen[i] = Choice { candidate: r, cost_before: before, cost_after: after, statements };
            if opts.trace {
                trace.push(Round { scored: vec![(c, gain_c, size_c)], chosen: r });
            }
        }
        i += 1;
    }
    true
}

/// A deadline `limit` from now (`None` for no limit).
pub fn deadline(limit: Duration) -> Option<Instant> {
    (!limit.is_zero()).then(|| Instant::now() + limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Costs given as: statement s costs `base[s]` unless the set contains a candidate listed
    /// for it, then the minimum of those candidates' costs.
    struct Table {
        base: Vec<f64>,
        helps: Vec<Vec<(usize, f64)>>, // per candidate: (statement, cost with it)
        sizes: Vec<f64>,
        calls: usize,
    }

    impl Evaluator for Table {
        fn cost(&mut self, s: usize, set: &[usize]) -> f64 {
            self.calls += 1;
            set.iter()
                .flat_map(|&c| self.helps[c].iter().filter(move |(st, _)| *st == s).map(|(_, cost)| *cost))
                .fold(self.base[s], f64::min)
        }
        fn size(&mut self, c: usize) -> f64 {
            self.sizes[c]
        }
    }

    fn run(t: &mut Table, affected: &[Vec<usize>], weights: &[f64], opts: &Options) -> Vec<usize> {
        run_with_upkeep(t, affected, weights, &[], opts)
    }

    fn run_with_upkeep(
        t: &mut Table,
        affected: &[Vec<usize>],
        weights: &[f64],
        upkeep: &[f64],
        opts: &Options,
    ) -> Vec<usize> {
        let base = t.base.clone();
        let w = Workload { affected, weights, baseline: &base, upkeep };
        choose(&w, t, opts).chosen.iter().map(|c| c.candidate).collect()
    }

    /// The demo's trap: s0 (a search anywhere) wants c0 (an index in price order); with c0 the
    /// planner switches s1 (a search in one country) to an early stop the data contradicts,
    /// which costs far more than before; c1 (country, price) serves s1 best, and only a little
    /// better than c2 (country, area), which also serves s2 (a search by country and area) and
    /// so is chosen first.
    struct Trap {
        calls: usize,
    }

    impl Evaluator for Trap {
        fn cost(&mut self, s: usize, set: &[usize]) -> f64 {
            self.calls += 1;
            let has = |c: usize| set.contains(&c);
            match s {
                0 if has(0) => 10.0,
                0 => 100.0,
                2 if has(2) => 10.0,
                2 => 100.0,
                _ if has(1) => 2.5,
                _ if has(0) => 300.0,
                _ if has(2) => 3.0,
                _ => 100.0,
            }
        }
        fn size(&mut self, _c: usize) -> f64 {
            1.0
        }
    }

    #[test]
    fn an_index_that_would_make_another_statement_worse_comes_with_the_index_that_statement_needs() {
        let mut t = Trap { calls: 0 };
        let base = vec![100.0, 100.0, 100.0];
        let affected = vec![vec![0, 1, 2]; 3];
        let w = Workload { affected: &affected, weights: &[1.0, 1.0, 1.0], baseline: &base, upkeep: &[] };
        let mut got: Vec<usize> = choose(&w, &mut t, &Options { min_saving: 1.0, ..Options::default() })
            .chosen
            .iter()
            .map(|c| c.candidate)
            .collect();
        got.sort_unstable();
        // c2 first; then not c0 alone (which leaves s1 at 300 for s0's 90), but c0 with c1.
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[test]
    fn an_index_whose_writes_cost_more_than_its_reads_save_is_not_chosen() {
        let mut t = Table { base: vec![100.0], helps: vec![vec![(0, 10.0)]], sizes: vec![1.0], calls: 0 };
        assert_eq!(run_with_upkeep(&mut t, &[vec![0]], &[1.0], &[50.0], &Options::default()), vec![0]);
        assert!(run_with_upkeep(&mut t, &[vec![0]], &[1.0], &[95.0], &Options::default()).is_empty());
    }

    #[test]
    fn upkeep_tips_the_choice_towards_the_cheaper_to_maintain() {
        // Equal read savings; candidate 0 is on a column every update sets.
        let mut t =
            Table { base: vec![100.0], helps: vec![vec![(0, 10.0)], vec![(0, 10.0)]], sizes: vec![1.0, 2.0], calls: 0 };
        let opts = Options { max_indexes: 1, ..Options::default() };
        assert_eq!(run_with_upkeep(&mut t, &[vec![0], vec![0]], &[1.0], &[30.0, 1.0], &opts), vec![1]);
    }

    #[test]
    fn a_composite_serving_two_statements_beats_the_two_singles() {
        // Statements 0 and 1 on one table. Candidate 0 helps s0, 1 helps s1, 2 helps both.
        let mut t = Table {
            base: vec![1000.0, 1000.0],
            helps: vec![vec![(0, 10.0)], vec![(1, 10.0)], vec![(0, 12.0), (1, 12.0)]],
            sizes: vec![1.0, 1.0, 2.0],
            calls: 0,
        };
        let affected = vec![vec![0, 1]; 3];
        assert_eq!(run(&mut t, &affected, &[1.0, 1.0], &Options::default()), vec![2]);
    }

    #[test]
    fn among_near_equal_results_the_smaller_index_wins() {
        let mut t = Table {
            base: vec![1000.0],
            helps: vec![vec![(0, 100.0)], vec![(0, 103.0)]],
            sizes: vec![10.0, 4.0],
            calls: 0,
        };
        let affected = vec![vec![0]; 2];
        assert_eq!(run(&mut t, &affected, &[1.0], &Options::default()), vec![1]);
    }

    #[test]
    fn an_index_leaving_much_less_cost_wins_though_both_save_nearly_everything() {
        // Against a sequential scan (10000) both candidates save over 95%, but the wider one
        // leaves the statement half the cost of the narrower one.
        let mut t = Table {
            base: vec![10000.0],
            helps: vec![vec![(0, 400.0)], vec![(0, 200.0)]],
            sizes: vec![4.5, 6.3],
            calls: 0,
        };
        let affected = vec![vec![0]; 2];
        let opts = Options { max_indexes: 1, ..Options::default() };
        assert_eq!(run(&mut t, &affected, &[1.0], &opts), vec![1]);
    }

    #[test]
    fn statements_neither_candidate_helps_do_not_mask_the_difference() {
        // s1 is a large aggregate that no index helps; on s0 the wider index leaves half the cost.
        let mut t = Table {
            base: vec![1000.0, 50000.0],
            helps: vec![vec![(0, 40.0)], vec![(0, 20.0)]],
            sizes: vec![4.0, 6.0],
            calls: 0,
        };
        let affected = vec![vec![0, 1]; 2];
        let opts = Options { max_indexes: 1, ..Options::default() };
        assert_eq!(run(&mut t, &affected, &[1.0, 1.0], &opts), vec![1]);
    }

    #[test]
    fn a_statement_that_both_serve_alike_does_not_hide_one_they_serve_differently() {
        // s0: an aggregate both candidates cut alike (most of the saving); s1: a listing that
        // the wider candidate serves in half the cost, 20% of the saving.
        let mut t = Table {
            base: vec![1000.0, 300.0],
            helps: vec![vec![(0, 200.0), (1, 40.0)], vec![(0, 200.0), (1, 20.0)]],
            sizes: vec![4.0, 6.0],
            calls: 0,
        };
        let affected = vec![vec![0, 1]; 2];
        let opts = Options { max_indexes: 1, ..Options::default() };
        assert_eq!(run(&mut t, &affected, &[1.0, 1.0], &opts), vec![1]);
    }

    #[test]
    fn a_statement_with_a_sliver_of_the_saving_does_not_veto_the_smaller_index() {
        // s1 makes up 1% of the saving: the smaller candidate, as good on s0, wins.
        let mut t = Table {
            base: vec![1000.0, 10.0],
            helps: vec![vec![(0, 100.0), (1, 8.0)], vec![(0, 100.0), (1, 1.0)]],
            sizes: vec![4.0, 6.0],
            calls: 0,
        };
        let affected = vec![vec![0, 1]; 2];
        let opts = Options { max_indexes: 1, ..Options::default() };
        assert_eq!(run(&mut t, &affected, &[1.0, 1.0], &opts), vec![0]);
    }

    #[test]
    fn a_hair_of_planner_noise_on_another_statement_does_not_sink_a_good_index() {
        // The index cuts s0 by 90%; planning s1 (a large aggregate) with it present shifts its
        // estimate by a hundred-thousandth, which must not count s1 among the helped.
        let mut t = Table {
            base: vec![1000.0, 50000.0],
            helps: vec![vec![(0, 100.0), (1, 49999.5)]],
            sizes: vec![1.0],
            calls: 0,
        };
        assert_eq!(run(&mut t, &[vec![0, 1]], &[1.0, 1.0], &Options::default()), vec![0]);
    }

    #[test]
    fn an_early_choice_that_a_later_one_makes_too_big_is_replaced_by_a_smaller_one() {
        // c0 (big) serves s0 and, a little, s1; c1 (small) serves s0 alone nearly as well;
        // c2 serves s1 far better than c0. Greedy takes c0 (its lead is s1's share), then c2;
        // against the final set c1 does c0's remaining work.
        let mut t = Table {
            base: vec![1000.0, 1000.0],
            helps: vec![vec![(0, 10.0), (1, 800.0)], vec![(0, 11.0)], vec![(1, 10.0)]],
            sizes: vec![10.0, 2.0, 3.0],
            calls: 0,
        };
        let affected = vec![vec![0, 1]; 3];
        let mut got = run(&mut t, &affected, &[1.0, 1.0], &Options::default());
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn an_index_the_others_made_redundant_is_dropped() {
        // c0 serves s0 and s1 halfway; c1 and c2 serve them fully. c0 comes first (it helps
        // both), the other two follow, and c0 has nothing left to do.
        let mut t = Table {
            base: vec![1000.0, 1000.0],
            helps: vec![vec![(0, 300.0), (1, 300.0)], vec![(0, 10.0)], vec![(1, 10.0)]],
            sizes: vec![1.0, 50.0, 50.0],
            calls: 0,
        };
        let affected = vec![vec![0, 1]; 3];
        let mut got = run(&mut t, &affected, &[1.0, 1.0], &Options::default());
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn savings_are_weighted_by_how_often_statements_run() {
        // s0 runs 100 times; s1 once but is more expensive.
        let mut t = Table {
            base: vec![100.0, 1000.0],
            helps: vec![vec![(0, 1.0)], vec![(1, 10.0)]],
            sizes: vec![1.0, 1.0],
            calls: 0,
        };
        let affected = vec![vec![0, 1]; 2];
        let opts = Options { max_indexes: 1, ..Options::default() };
        assert_eq!(run(&mut t, &affected, &[100.0, 1.0], &opts), vec![0]);
    }

    #[test]
    fn an_index_saving_a_sliver_of_the_workload_is_not_worth_it() {
        // Candidate 0 halves statement 0; candidate 1 halves statement 1, which is 1% as heavy.
        let mut t = Table {
            base: vec![1000.0, 10.0],
            helps: vec![vec![(0, 500.0)], vec![(1, 5.0)]],
            sizes: vec![1.0, 1.0],
            calls: 0,
        };
        let opts = Options { min_saving: 0.01 * 1010.0, ..Options::default() };
        assert_eq!(run(&mut t, &[vec![0], vec![1]], &[1.0, 1.0], &opts), vec![0]);
    }

    #[test]
    fn nothing_is_chosen_when_nothing_helps_enough() {
        let mut t = Table { base: vec![1000.0], helps: vec![vec![(0, 950.0)]], sizes: vec![1.0], calls: 0 };
        assert!(run(&mut t, &[vec![0]], &[1.0], &Options::default()).is_empty());
    }

    #[test]
    fn an_expired_deadline_stops_the_search_without_panicking() {
        let mut t = Table { base: vec![1000.0], helps: vec![vec![(0, 1.0)]], sizes: vec![1.0], calls: 0 };
        let opts = Options { deadline: Some(Instant::now()), ..Options::default() };
        let base = t.base.clone();
        let s =
            choose(&Workload { affected: &[vec![0]], weights: &[1.0], baseline: &base, upkeep: &[] }, &mut t, &opts);
        assert!(s.truncated && s.chosen.is_empty());
    }

    #[test]
    fn costs_are_not_planned_twice_for_an_unchanged_set() {
        let mut t = Table {
            base: vec![1000.0, 1000.0],
            helps: vec![vec![(0, 10.0)], vec![(1, 10.0)]],
            sizes: vec![1.0, 1.0],
            calls: 0,
        };
        // Each candidate touches only its own statement: choosing one leaves the other's cost cached.
        let base = t.base.clone();
        let w = Workload { affected: &[vec![0], vec![1]], weights: &[1.0, 1.0], baseline: &base, upkeep: &[] };
        let chosen = choose(&w, &mut t, &Options::default()).chosen.len();
        // The greedy plans each statement once; the second look plans each chosen index's
        // statements without and with it (no rival is smaller).
        assert_eq!(chosen, 2);
        assert_eq!(t.calls, 2 + 2 * chosen);
    }
}
