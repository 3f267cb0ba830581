-- Cache invalidation: voxperf.watch_table(t) makes every statement that writes t (INSERT, UPDATE,
-- DELETE, TRUNCATE, COPY FROM, MERGE, foreign-key cascades) send one NOTIFY on the channel named
-- by voxperf.notify_channel, with t's name as `quote_ident(schema).quote_ident(table)`.
-- Statement-level triggers fire once per statement and table; NOTIFY is delivered at commit and
-- Postgres folds identical notifications of one transaction into one, so a transaction that
-- writes a table many times costs its listeners one message.

CREATE FUNCTION notify_table_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        coalesce(nullif(current_setting('voxperf.notify_channel', true), ''), 'voxperf_invalidate'),
        quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION notify_table_change() IS
    'Trigger function installed by voxperf.watch_table(): NOTIFY voxperf.notify_channel with the written table''s name.';

CREATE FUNCTION watch_table(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    kind "char";
BEGIN
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = tbl;
    IF kind IS NULL THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid USING ERRCODE = 'undefined_table';
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Only tables and partitioned tables can be watched; watch the tables a view reads instead.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'voxperf_notify_change') THEN
        EXECUTE format('CREATE TRIGGER voxperf_notify_change AFTER INSERT OR UPDATE OR DELETE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.notify_table_change()', tbl);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'voxperf_notify_truncate') THEN
        EXECUTE format('CREATE TRIGGER voxperf_notify_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.notify_table_change()', tbl);
    END IF;
END
$$;
COMMENT ON FUNCTION watch_table(regclass) IS
    'Send NOTIFY on voxperf.notify_channel (payload: schema.table) once per statement that writes the table. Idempotent.';

CREATE FUNCTION unwatch_table(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS voxperf_notify_change ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS voxperf_notify_truncate ON %s', tbl);
END
$$;
COMMENT ON FUNCTION unwatch_table(regclass) IS 'Stop the notifications voxperf.watch_table() set up. Idempotent.';

CREATE FUNCTION watched_tables()
RETURNS TABLE (relation regclass, schema_name name, table_name name, payload text)
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass, n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname)
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.tgname = 'voxperf_notify_change'
    ORDER BY 2, 3
$$;
COMMENT ON FUNCTION watched_tables() IS 'Tables watched by voxperf.watch_table(), with the NOTIFY payload each sends.';
