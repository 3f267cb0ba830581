//! Who may see what, as in pg_stat_statements: statistics are visible to everyone, but query
//! texts, ids and plans of other users' statements only to superusers and roles with the
//! privileges of `pg_read_all_stats`. Texts with literals (the slow-query log) are as sensitive
//! as server logs, so the same rule applies to them.

use pgrx::pg_sys;

pub struct Viewer {
    userid: u32,
    sees_all: bool,
}

impl Viewer {
    pub fn current() -> Self {
        // SAFETY: catalog lookups of the session's own role; they raise ERRORs normally.
        unsafe {
            let userid = pg_sys::GetUserId();
            let sees_all = pg_sys::has_privs_of_role(userid, pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS));
            Self { userid: userid.to_u32(), sees_all }
        }
    }

    pub fn userid(&self) -> u32 {
        self.userid
    }

    pub fn sees_all(&self) -> bool {
        self.sees_all
    }

    pub fn may_see(&self, owner: u32) -> bool {
        self.sees_all || owner == self.userid
    }
}
