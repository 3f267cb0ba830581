//! Key patterns (Redis glob syntax) and the log of recent key invalidations.
//!
//! Key and pattern invalidations have no generation to compare, so a loader that started before
//! one must find out by other means that its key was invalidated while it ran. The log keeps the
//! last [`LOG_CAPACITY`] key invalidations with a sequence number; a loader notes the sequence
//! before it starts and, before storing, asks whether a later invalidation matched its key.
//! A key invalidation takes effect here before Redis has deleted anything, so the log also keeps
//! the invalidations whose Redis delete is still to be done: until it is, an entry read from Redis
//! under a matching key is not served ([`KeyInvalidations::awaits_delete`]).
//! Invariant: when the log has dropped entries the loader needed, the answer is "invalidated"
//! (a needless miss, never a stale value).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Recent key invalidations kept for in-flight loaders. A loader running longer than it takes to
/// see this many deletes/pattern invalidations simply does not store its result.
const LOG_CAPACITY: usize = 1024;
/// Key invalidations that may wait for their Redis delete (Redis unreachable). Beyond this the
/// caller stops tracking them one by one and bumps the epoch instead, which makes every entry
/// Redis holds a miss here.
const AWAITED_CAPACITY: usize = 1024;

/// Whether `key` matches a Redis glob `pattern` (`*`, `?`, `[abc]`, `[^a-z]`, `\` escapes), with
/// the same rules as Redis' `stringmatchlen`, so L1 and `SCAN MATCH` remove the same keys.
pub fn glob_match(pattern: &str, key: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), key.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            let step = match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => Some(pi + 1),
                b'[' => match class(p, pi, s[si]) {
                    Some((true, next)) => Some(next),
                    Some((false, _)) => None,
                    None => (s[si] == b'[').then_some(pi + 1),
                },
                b'\\' if pi + 1 < p.len() => (p[pi + 1] == s[si]).then_some(pi + 2),
                c => (c == s[si]).then_some(pi + 1),
            };
            if let Some(next) = step {
                pi = next;
                si += 1;
                continue;
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `p[open] == b'['`; returns whether it matched and
/// the index after the closing `]`, or `None` if the class is not closed.
fn class(p: &[u8], open: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negate = p.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < p.len() && p[i] != b']' {
        if p[i] == b'\\' && i + 1 < p.len() {
            matched |= p[i + 1] == c;
            i += 2;
        } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then_some((matched != negate, i + 1))
}

/// Escapes glob metacharacters so `literal` matches only itself (for the key prefix).
pub fn escape_glob(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What a key invalidation removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatcher {
    Exact(String),
    Pattern(String),
}

impl KeyMatcher {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyMatcher::Exact(k) => k == key,
            KeyMatcher::Pattern(p) => glob_match(p, key),
        }
    }
}

#[derive(Debug, Default)]
struct Log {
    /// Sequence number of the newest record (0: none yet).
    last: u64,
    records: VecDeque<(u64, KeyMatcher)>,
    /// Invalidations whose Redis delete is still to be done.
    awaited: Vec<(u64, KeyMatcher)>,
}

/// The recent key invalidations.
#[derive(Debug, Default)]
pub struct KeyInvalidations {
    log: Mutex<Log>,
}

impl KeyInvalidations {
    /// The sequence number a loader notes before it starts.
    pub fn position(&self) -> u64 {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    /// Logs an invalidation; returns its sequence number.
    pub fn record(&self, matcher: KeyMatcher) -> u64 {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.last += 1;
        let seq = log.last;
        if log.records.len() == LOG_CAPACITY {
            log.records.pop_front();
        }
        log.records.push_back((seq, matcher));
        seq
    }

    /// Notes that Redis may still hold entries invalidation `seq` removed. Returns false when
    /// too many deletes wait already: they are all forgotten, and the caller must make Redis'
    /// entries misses by other means (an epoch bump).
    pub fn await_delete(&self, seq: u64, matcher: KeyMatcher) -> bool {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.awaited.len() >= AWAITED_CAPACITY {
            log.awaited.clear();
            return false;
        }
        log.awaited.push((seq, matcher));
        true
    }

    /// The deletes still to be done in Redis, oldest first.
    pub fn awaited(&self) -> Vec<(u64, KeyMatcher)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).awaited.clone()
    }

    /// Redis has done the delete of invalidation `seq`.
    pub fn deleted(&self, seq: u64) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).awaited.retain(|(s, _)| *s != seq);
    }

    /// Whether an entry Redis holds under `key` may be one an invalidation removed.
    pub fn awaits_delete(&self, key: &str) -> bool {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).awaited.iter().any(|(_, m)| m.matches(key))
    }

    /// Whether `key` was invalidated after position `since`.
    pub fn invalidated_since(&self, since: u64, key: &str) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.last == since {
            return false;
        }
        let oldest_kept = log.records.front().map_or(log.last + 1, |(seq, _)| *seq);
        if oldest_kept > since + 1 {
            return true; // the records we would need were dropped
        }
        log.records.iter().filter(|(seq, _)| *seq > since).any(|(_, m)| m.matches(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_follows_redis_rules() {
        assert!(glob_match("user:*", "user:123:profile"));
        assert!(glob_match("user:*:profile", "user:123:profile"));
        assert!(!glob_match("user:*:profile", "user:123:settings"));
        assert!(glob_match("h?llo", "hello"));
        assert!(!glob_match("h?llo", "hllo"));
        assert!(glob_match("h[ae]llo", "hallo"));
        assert!(!glob_match("h[^e]llo", "hello"));
        assert!(glob_match("h[a-b]llo", "hbllo"));
        assert!(glob_match("a\\*b", "a*b"));
        assert!(!glob_match("a\\*b", "axb"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**a", "bba"));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn an_escaped_prefix_matches_only_itself() {
        let prefix = escape_glob("app[1]*:");
        assert!(glob_match(&format!("{prefix}e:*"), "app[1]*:e:key"));
        assert!(!glob_match(&format!("{prefix}e:*"), "app1x:e:key"));
    }

    #[test]
    fn a_loader_learns_of_key_invalidations_after_its_position() {
        let log = KeyInvalidations::default();
        log.record(KeyMatcher::Exact("a".into()));
        let pos = log.position();
        assert!(!log.invalidated_since(pos, "a"), "before the loader started");
        log.record(KeyMatcher::Pattern("user:*".into()));
        assert!(log.invalidated_since(pos, "user:1"));
        assert!(!log.invalidated_since(pos, "a"));
    }

    #[test]
    fn a_key_is_awaited_until_redis_has_deleted_it_and_too_many_waits_give_up() {
        let log = KeyInvalidations::default();
        let seq = log.record(KeyMatcher::Pattern("user:*".into()));
        assert!(log.await_delete(seq, KeyMatcher::Pattern("user:*".into())));
        assert!(log.awaits_delete("user:1") && !log.awaits_delete("country:1"));
        log.deleted(seq);
        assert!(!log.awaits_delete("user:1"));
        for i in 0..AWAITED_CAPACITY as u64 {
            assert!(log.await_delete(i, KeyMatcher::Exact(format!("k{i}"))));
        }
        assert!(!log.await_delete(0, KeyMatcher::Exact("one-too-many".into())));
        assert!(log.awaited().is_empty());
    }

    #[test]
    fn an_overflowed_log_answers_invalidated() {
        let log = KeyInvalidations::default();
        let pos = log.position();
        for i in 0..=LOG_CAPACITY {
            log.record(KeyMatcher::Exact(format!("k{i}")));
        }
        assert!(log.invalidated_since(pos, "unrelated"));
    }
}
