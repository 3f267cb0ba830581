//! `voxperf.watch_table`, `unwatch_table` and `watched_tables`: table writes turned into NOTIFY
//! for cache invalidation (see `watch.sql`, where the logic lives: it is SQL about triggers).

pgrx::extension_sql_file!("watch.sql", name = "watch_table");
