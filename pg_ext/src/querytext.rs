//! Statement texts, through the server's own machinery: the one statement out of a
//! multi-statement string (`CleanQuerytext`), its normalized form (constants located by the
//! core's query jumbling, measured with the core scanner — the same scanner that parsed it),
//! and clipping at character boundaries of the server encoding.
//!
//! These run on the rare path (a statement's first execution, a slow query) inside the hooks'
//! guarded section, so a Postgres error here costs a sample, never the user's statement.

use crate::stats::normalize::{ConstantSpan, normalize};
use pgrx::pg_sys;
use std::ffi::{CStr, c_char};

/// The text of the statement at `location`/`len` in `source` (which may hold several
/// statements), without surrounding whitespace and semicolons.
pub fn statement_text(source: *const c_char, location: i32, len: i32) -> Vec<u8> {
    if source.is_null() {
        return Vec::new();
    }
    let (mut location, mut len) = (location, len);
    // SAFETY: `source` is the NUL-terminated query string Postgres is executing;
    // CleanQuerytext only narrows the window and returns a pointer into it.
    unsafe {
        let start = pg_sys::CleanQuerytext(source, &mut location, &mut len);
        std::slice::from_raw_parts(start.cast::<u8>(), len.max(0) as usize).to_vec()
    }
}

/// The statement's text with each constant the jumbling recorded replaced by `$n`, as
/// pg_stat_statements produces it.
///
/// # Safety
/// `jstate` is the live jumble state of the statement parsed from `source`.
pub unsafe fn normalized(jstate: *mut pg_sys::JumbleState, source: *const c_char, location: i32, len: i32) -> Vec<u8> {
    let (mut location, mut len) = (location, len);
    // SAFETY: see the function contract; the scanner state lives on this frame and is
    // finished before returning.
    unsafe {
        let query = pg_sys::CleanQuerytext(source, &mut location, &mut len);
        let query_bytes = std::slice::from_raw_parts(query.cast::<u8>(), len.max(0) as usize);
        let spans = constant_spans(jstate, query, location);
        normalize(query_bytes, &spans, (*jstate).highest_extern_param_id + 1)
    }
}

/// The port of pg_stat_statements' `fill_in_constant_lengths`: lex the statement with the core
/// scanner until each constant's location and take the token's length. A '-' at a constant's
/// location starts a negative number, which spans two tokens.
///
/// # Safety
/// As for [`normalized`]; `query` is the cleaned statement starting `query_loc` bytes into the
/// source the locations refer to.
unsafe fn constant_spans(jstate: *mut pg_sys::JumbleState, query: *const c_char, query_loc: i32) -> Vec<ConstantSpan> {
    // SAFETY: see the function contract.
    unsafe {
        let count = (*jstate).clocations_count.max(0) as usize;
        let locs = std::slice::from_raw_parts_mut((*jstate).clocations, count);
        locs.sort_unstable_by_key(|l| l.location);

        // An all-zero extra state is what scanner_init expects to fill in.
        let mut extra: pg_sys::core_yy_extra_type = std::mem::zeroed();
        let scanner = pg_sys::scanner_init(
            query,
            &mut extra,
            &raw const pg_sys::ScanKeywords,
            pg_sys::ScanKeywordTokens.as_ptr(),
        );
        // Don't repeat warnings the parser already gave about escapes.
        extra.escape_string_warning = false;

        let mut spans = Vec::with_capacity(count);
        let mut last_loc = -1;
        let mut lval: pg_sys::core_YYSTYPE = std::mem::zeroed();
        let mut lloc: i32 = 0;
        let mut exhausted = false;
        for l in locs.iter() {
            let loc = l.location - query_loc;
            if exhausted || loc < 0 || loc <= last_loc {
                spans.push(ConstantSpan { location: loc.max(0) as usize, length: None });
                continue;
            }
            let mut length = None;
            loop {
                let mut tok = pg_sys::core_yylex(&mut lval, &mut lloc, scanner);
                if tok == 0 {
                    exhausted = true;
                    break;
                }
                if lloc >= loc {
                    if *query.add(loc as usize) == b'-' as c_char {
                        tok = pg_sys::core_yylex(&mut lval, &mut lloc, scanner);
                        if tok == 0 {
                            exhausted = true;
                            break;
                        }
                    }
                    // Flex leaves a NUL after the current token in its buffer.
                    length = Some(CStr::from_ptr(extra.scanbuf.add(loc as usize)).to_bytes().len());
                    break;
                }
            }
            spans.push(ConstantSpan { location: loc as usize, length });
            last_loc = loc;
        }
        pg_sys::scanner_finish(scanner);
        spans
    }
}

/// How many leading bytes of `bytes` fit in `max` without splitting a character of the server
/// encoding.
pub fn clip(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    // SAFETY: pg_mbcliplen reads at most `len` bytes of the buffer we pass.
    unsafe {
        pg_sys::pg_mbcliplen(bytes.as_ptr().cast(), bytes.len().min(i32::MAX as usize) as i32, max as i32).max(0)
            as usize
    }
}

pub fn database_encoding() -> i32 {
    // SAFETY: a getter of backend state.
    unsafe { pg_sys::GetDatabaseEncoding() }
}

/// The current `TimestampTz`.
pub fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

pub fn backend_pid() -> i32 {
    // SAFETY: backend-local global.
    unsafe { pg_sys::MyProcPid }
}

/// The values bound to a statement's parameters, in their types' text form. Parameters that
/// are fetched lazily (PL/pgSQL variables) are not read.
///
/// # Safety
/// `params` is NULL or the parameter list of the statement being executed.
pub unsafe fn param_values(params: pg_sys::ParamListInfo) -> Vec<crate::stats::examples::ExampleParam> {
    // SAFETY: see the function contract; type output functions on values of their own type.
    unsafe {
        if params.is_null() || (*params).paramFetch.is_some() {
            return Vec::new();
        }
        (0..(*params).numParams as usize)
            .map(|i| {
                let p = (*params).params.as_ptr().add(i);
                let value = (!(*p).isnull && (*p).ptype != pg_sys::Oid::INVALID).then(|| {
                    let (mut output, mut varlena) = (pg_sys::Oid::INVALID, false);
                    pg_sys::getTypeOutputInfo((*p).ptype, &mut output, &mut varlena);
                    CStr::from_ptr(pg_sys::OidOutputFunctionCall(output, (*p).value)).to_string_lossy().into_owned()
                });
                crate::stats::examples::ExampleParam { type_oid: (*p).ptype.to_u32(), value }
            })
            .collect()
    }
}
