//! Statistics that survive a restart: loaded when shared memory is created, saved when the
//! postmaster shuts down cleanly and every `voxperf.save_interval` seconds by a background
//! worker, so that a crash loses at most one interval. The file format (checksummed,
//! all-or-nothing) is in `stats::persist`; here is only the I/O.
//!
//! A save writes a new file under a unique temporary name, syncs it and renames it over the
//! old one, then syncs the directory: at any moment the file on disk is a complete save.

use crate::stats::examples::{self, Example, Examples};
use crate::stats::persist::{self, SavedEntry, SavedGlobals};
use crate::stats::table::TableMut;
use crate::{gucs, shmem};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Relative to the data directory, which is every server process's working directory.
pub const STATS_FILE: &str = "pg_stat/voxperf.stat";

fn pg_major() -> u32 {
    pg_sys::PG_VERSION_NUM / 10_000
}

/// Fill a freshly initialised table from the stats file, if there is a valid one.
pub fn load(table: &mut TableMut<'_>, examples: &mut Examples<'_>) {
    let bytes = match std::fs::read(STATS_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warning!("voxperf: could not read \"{STATS_FILE}\": {e}; starting with empty statistics");
            return;
        }
    };
    match persist::decode(&bytes, pg_major()) {
        Ok(saved) => {
            for e in &saved.entries {
                table.restore(&e.key, &e.text, e.encoding, &e.counters);
            }
            table.header.dealloc = saved.globals.dealloc;
            table.header.evicted_entries = saved.globals.evicted_entries;
            table.header.stats_reset = saved.globals.stats_reset;
            for (seq, x) in saved.examples.iter().enumerate() {
                examples.restore(x, seq as u64 + 1);
            }
            log!(
                "voxperf: loaded statistics of {} statements and {} example executions from \"{STATS_FILE}\"",
                saved.entries.len(),
                saved.examples.len()
            );
        }
        Err(e) => warning!("voxperf: ignoring \"{STATS_FILE}\": {e}; starting with empty statistics"),
    }
}

/// The kept examples, copied out under their shared lock.
fn examples_snapshot() -> Vec<Example> {
    shmem::with_examples(examples::all).unwrap_or_default()
}

/// Copy the table out under the shared lock (the file is written without holding it).
fn snapshot() -> Option<(SavedGlobals, Vec<SavedEntry>)> {
    shmem::with_table(|t| {
        let globals = SavedGlobals {
            dealloc: t.header.dealloc,
            evicted_entries: t.header.evicted_entries,
            stats_reset: t.header.stats_reset,
        };
        let entries = t
            .iter()
            .map(|e| SavedEntry {
                key: e.key(),
                encoding: e.encoding(),
                counters: e.snapshot(),
                text: t.text_of(e).to_vec(),
            })
            .collect();
        (globals, entries)
    })
}

/// Write the current statistics to the stats file; returns how many statements were saved.
pub fn save() -> std::io::Result<usize> {
    let Some((globals, entries)) = snapshot() else { return Ok(0) };
    let bytes = persist::encode(pg_major(), globals, &entries, &examples_snapshot());
    // SAFETY: backend-local global.
    let tmp = format!("{STATS_FILE}.tmp.{}", unsafe { pg_sys::MyProcPid });
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, STATS_FILE)?;
        if let Some(dir) = Path::new(STATS_FILE).parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(entries.len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Save, reporting a failure to the server log instead of raising it (used at shutdown and by
/// the background worker, where there is nobody to raise it to).
pub fn save_now() {
    if let Err(e) = save() {
        log!("voxperf: could not write \"{STATS_FILE}\": {e}");
    }
}

/// Register the background worker that saves periodically; called from `_PG_init`.
pub fn register_saver() {
    BackgroundWorkerBuilder::new("voxperf stats saver")
        .set_type("voxperf stats saver")
        .set_function("voxperf_saver_main")
        .set_library("voxperf")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// Upper bound on one wait, so that a changed `voxperf.save_interval` takes effect promptly
/// even if no SIGHUP reaches the worker.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn voxperf_saver_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let mut last_save = Instant::now();
    loop {
        let interval = Duration::from_secs(gucs::save_interval_secs());
        let wait =
            if interval.is_zero() { MAX_WAIT } else { interval.saturating_sub(last_save.elapsed()).min(MAX_WAIT) };
        if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(10)))) {
            break; // SIGTERM: the postmaster saves at shutdown itself.
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to apply a reload.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let interval = Duration::from_secs(gucs::save_interval_secs());
        if gucs::save() && !interval.is_zero() && last_save.elapsed() >= interval {
            save_now();
            last_save = Instant::now();
        }
    }
}
