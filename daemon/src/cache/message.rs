//! Payloads on the invalidation channel.
//!
//! Two kinds travel on `voxperf_invalidate`. The extension's triggers send a table's canonical
//! name, `quote_ident(schema) || '.' || quote_ident(table)` (e.g. `public."VirtualNumber"`), which
//! means the tag `table:<payload>`. Daemons send `voxperf:<origin>:<kind>:<argument>` so that an
//! invalidation made through one daemon's API reaches every other daemon's L1. The two cannot be
//! confused: an unquoted identifier cannot contain `:`, and a quoted one starts with `"`.
//! Invariant: `parse(encode(m)) == m` for every message a daemon sends.

/// Prefix of daemon-sent payloads.
const DAEMON_PREFIX: &str = "voxperf:";

/// Tag of a table, from its canonical name.
pub fn table_tag(canonical_name: &str) -> String {
    format!("table:{canonical_name}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidationMessage {
    /// A watched table was written (from the extension's trigger, or a daemon's `tables` API).
    Table(String),
    /// A daemon invalidated a tag.
    Tag { origin: String, tag: String },
    /// A daemon invalidated the keys matching a pattern.
    Pattern { origin: String, pattern: String },
    /// A daemon deleted a key.
    Key { origin: String, key: String },
}

impl InvalidationMessage {
    /// Reads a payload; `None` for an empty or malformed one.
    pub fn parse(payload: &str) -> Option<Self> {
        let Some(rest) = payload.strip_prefix(DAEMON_PREFIX) else {
            return (!payload.is_empty()).then(|| Self::Table(payload.to_owned()));
        };
        let (origin, rest) = rest.split_once(':')?;
        let (kind, arg) = rest.split_once(':')?;
        let (origin, arg) = (origin.to_owned(), arg.to_owned());
        match kind {
            "tag" => Some(Self::Tag { origin, tag: arg }),
            "pattern" => Some(Self::Pattern { origin, pattern: arg }),
            "key" => Some(Self::Key { origin, key: arg }),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Self::Table(name) => name.clone(),
            Self::Tag { origin, tag } => format!("{DAEMON_PREFIX}{origin}:tag:{tag}"),
            Self::Pattern { origin, pattern } => format!("{DAEMON_PREFIX}{origin}:pattern:{pattern}"),
            Self::Key { origin, key } => format!("{DAEMON_PREFIX}{origin}:key:{key}"),
        }
    }

    /// The daemon that sent it (`None` for table writes, which come from Postgres).
    pub fn origin(&self) -> Option<&str> {
        match self {
            Self::Table(_) => None,
            Self::Tag { origin, .. } | Self::Pattern { origin, .. } | Self::Key { origin, .. } => Some(origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_payloads_are_table_names() {
        assert_eq!(
            InvalidationMessage::parse("public.\"VirtualNumber\""),
            Some(InvalidationMessage::Table("public.\"VirtualNumber\"".into()))
        );
        assert_eq!(table_tag("public.users"), "table:public.users");
        assert_eq!(InvalidationMessage::parse(""), None);
    }

    #[test]
    fn daemon_payloads_round_trip_even_with_colons_in_the_argument() {
        for m in [
            InvalidationMessage::Tag { origin: "a1".into(), tag: "user:42".into() },
            InvalidationMessage::Pattern { origin: "a1".into(), pattern: "user:*".into() },
            InvalidationMessage::Key { origin: "a1".into(), key: "k:1:2".into() },
        ] {
            assert_eq!(InvalidationMessage::parse(&m.encode()), Some(m));
        }
        assert_eq!(InvalidationMessage::parse("voxperf:a1:explode:x"), None);
    }
}
