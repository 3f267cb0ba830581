//! Everything callable from SQL, in schema `voxperf`. Functions are thin: they check that the
//! library is preloaded, read through `shmem`, and turn the result into rows.

mod admin;
mod advisor;
mod privileges;
mod quals;
mod query_stats;
mod review;
mod slow_queries;
mod watch;

use pgrx::pg_sys;

/// A statement text stored in `encoding` as a `text` datum in the server's encoding (databases
/// of one cluster may differ in encoding; the statistics are cluster-wide).
fn text_datum(bytes: &[u8], encoding: i32) -> Option<pg_sys::Datum> {
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend_from_slice(bytes);
    buf.push(0);
    // SAFETY: `buf` is NUL-terminated and outlives both calls; pg_any_to_server returns either
    // its input or a palloc'd, NUL-terminated conversion.
    unsafe {
        let converted = pg_sys::pg_any_to_server(buf.as_ptr().cast(), bytes.len() as i32, encoding);
        Some(pg_sys::Datum::from(pg_sys::cstring_to_text(converted)))
    }
}

/// Return `rows` from a set-returning function declared in SQL with `ncols` OUT columns.
///
/// # Safety
/// `fcinfo` is a valid call of such a function, from a context that accepts a materialized set.
unsafe fn materialize<I>(fcinfo: pg_sys::FunctionCallInfo, ncols: usize, rows: I)
where
    I: Iterator,
    I::Item: AsRef<[Option<pg_sys::Datum>]>,
{
    // SAFETY: see the function contract; InitMaterializedSRF checks the call context and
    // raises a proper ERROR if a set is not accepted here.
    unsafe {
        pg_sys::InitMaterializedSRF(fcinfo, 0);
        let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
        let mut datums = vec![pg_sys::Datum::from(0); ncols];
        let mut nulls = vec![false; ncols];
        for row in rows {
            let row = row.as_ref();
            debug_assert_eq!(row.len(), ncols);
            for (i, v) in row.iter().enumerate() {
                nulls[i] = v.is_none();
                datums[i] = v.unwrap_or(pg_sys::Datum::from(0));
            }
            pg_sys::tuplestore_putvalues(
                (*rsinfo).setResult,
                (*rsinfo).setDesc,
                datums.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
        }
    }
}
