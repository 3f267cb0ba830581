-- A short VoxLink API workload over the demo data (sql/schema.sql + sql/data.sql), for the
-- statistics, slow-query log and index advisor to have something real to look at.
--
--   psql -f sql/workload.sql          (about ten seconds at scale 1, with no secondary index)
--
-- Each kind of request runs many times with different constants, so that it appears in
-- voxperf.query_stats as one normalised statement with many calls. The statements are generated
-- with format() and run by \gexec, one by one at top level, exactly as a client would send them
-- (statements inside a DO block or a function would be nested, not top-level).
--
-- Most requests are the ones the seed's hand-written indexes serve (sql/seed_indexes.sql); a
-- few are already served by a primary key or the unique constraint; a few are full aggregates
-- that no index can help. The writes leave the data as they found it, apart from the inserted
-- usage records.

\set ON_ERROR_STOP on
\echo 'running the VoxLink demo workload'
-- The results are not the point: send them nowhere (\echo still prints).
\o /dev/null

-- Number search: available numbers in a country and area code, cheapest first.
SELECT format($q$SELECT id, number, monthly_price, features FROM "VirtualNumber" WHERE country_code = %L AND area_code = %L AND status = 'AVAILABLE' ORDER BY monthly_price, id LIMIT %s$q$,
              country_code, area_code, page)
FROM (SELECT DISTINCT country_code, area_code FROM "VirtualNumber") AS c,
     (VALUES (20), (50)) AS p (page)
ORDER BY country_code, area_code, page
\gexec

-- Number search by feature, anywhere or in one country.
SELECT format($q$SELECT id, number, area_code, monthly_price FROM "VirtualNumber" WHERE status = 'AVAILABLE' AND features @> %L ORDER BY monthly_price, id LIMIT 25$q$,
              feature)
FROM (VALUES ('["sms"]'), ('["voice"]'), ('["mms"]'), ('["fax"]'), ('["voice", "sms"]'),
             ('["sms", "mms"]')) AS f (feature),
     generate_series(1, 3)
\gexec
SELECT format($q$SELECT id, number, area_code, monthly_price FROM "VirtualNumber" WHERE country_code = %L AND status = 'AVAILABLE' AND features @> %L ORDER BY monthly_price, id LIMIT 25$q$,
              country_code, feature)
FROM (SELECT DISTINCT country_code FROM "VirtualNumber") AS c,
     (VALUES ('["sms"]'), ('["voice"]'), ('["mms"]'), ('["fax"]')) AS f (feature)
ORDER BY country_code, feature
\gexec

-- Number lookup by its E.164 text (served by the unique constraint already).
SELECT format($q$SELECT id, country_code, status, owner_id, features FROM "VirtualNumber" WHERE number = %L$q$,
              number)
FROM "VirtualNumber"
WHERE id % 200 = 7
ORDER BY id
\gexec

-- A customer's numbers, by status, newest first (the dashboard's "My numbers" page).
SELECT format($q$SELECT id, number, status, monthly_price, created_at FROM "VirtualNumber" WHERE owner_id = %s AND status = %L ORDER BY created_at DESC LIMIT 50$q$,
              owner_id, CASE WHEN owner_id % 5 = 0 THEN 'SUSPENDED' ELSE 'ACTIVE' END)
FROM (SELECT DISTINCT owner_id FROM "VirtualNumber" WHERE owner_id IS NOT NULL ORDER BY owner_id LIMIT 300) AS o
\gexec

-- A number's calls and messages in a time window, newest first (the call log page).
SELECT format($q$SELECT "timestamp", kind, duration_seconds, cost FROM "UsageRecord" WHERE number_id = %s AND "timestamp" >= %L AND "timestamp" < %L ORDER BY "timestamp" DESC LIMIT 100$q$,
              id, '2024-12-01'::date - (id % 4)::int * 30, '2025-01-01')
FROM (SELECT id FROM "VirtualNumber" WHERE status IN ('ACTIVE', 'SUSPENDED') ORDER BY id LIMIT 300) AS n
\gexec

-- Monthly cost report for a customer: usage per month and kind over the last half year.
SELECT format($q$SELECT date_trunc('month', u."timestamp") AS month, u.kind, count(*) AS records, sum(u.duration_seconds) AS seconds, sum(u.cost) AS cost FROM "UsageRecord" AS u JOIN "VirtualNumber" AS v ON v.id = u.number_id WHERE v.owner_id = %s AND u."timestamp" >= %L AND u."timestamp" < %L GROUP BY 1, 2 ORDER BY 1, 2$q$,
              owner_id, '2024-07-01', '2025-01-01')
FROM (SELECT DISTINCT owner_id FROM "VirtualNumber" WHERE owner_id IS NOT NULL ORDER BY owner_id LIMIT 40) AS o
\gexec

-- Writes. New usage records (appended at the end of the data's time range) ...
SELECT format($q$INSERT INTO "UsageRecord" (number_id, "timestamp", kind, duration_seconds, cost) VALUES (%s, %L, %L, %s, %s)$q$,
              id, '2024-12-31 12:00:00+00'::timestamptz + id * interval '1 second',
              CASE WHEN id % 2 = 0 THEN 'call_out' ELSE 'sms_out' END,
              CASE WHEN id % 2 = 0 THEN 60 + id % 300 ELSE 0 END,
              CASE WHEN id % 2 = 0 THEN round((60 + id % 300) * 0.02 / 60, 4) ELSE 0.0075 END)
FROM (SELECT id FROM "VirtualNumber" WHERE status = 'ACTIVE' ORDER BY id LIMIT 200) AS n
\gexec

-- ... a rating correction on a number's recent outgoing calls (recomputes the same cost) ...
SELECT format($q$UPDATE "UsageRecord" SET cost = round(duration_seconds * 0.02 / 60, 4) WHERE number_id = %s AND kind = 'call_out' AND "timestamp" >= %L$q$,
              id, '2024-12-15')
FROM (SELECT id FROM "VirtualNumber" WHERE status = 'ACTIVE' ORDER BY id LIMIT 30) AS n
\gexec

-- ... and numbers reserved by a customer, then released again (both by primary key).
CREATE TEMP TABLE demo_reserved AS
SELECT id, 1 + id % 100 AS owner_id FROM "VirtualNumber" WHERE status = 'AVAILABLE' ORDER BY id LIMIT 50;
SELECT format($q$UPDATE "VirtualNumber" SET status = 'RESERVED', owner_id = %s, updated_at = now() WHERE id = %s AND status = 'AVAILABLE'$q$,
              owner_id, id)
FROM demo_reserved ORDER BY id
\gexec
SELECT format($q$UPDATE "VirtualNumber" SET status = 'AVAILABLE', owner_id = NULL, updated_at = now() WHERE id = %s AND status = 'RESERVED'$q$,
              id)
FROM demo_reserved ORDER BY id
\gexec
DROP TABLE demo_reserved;

-- Reports no index can help: they read every row.
SELECT format($q$SELECT country_code, status, count(*), round(avg(monthly_price), 2) FROM "VirtualNumber" GROUP BY country_code, status ORDER BY 1, 2$q$)
FROM generate_series(1, 5)
\gexec
SELECT format($q$SELECT date_trunc('month', "timestamp") AS month, kind, count(*), sum(duration_seconds), sum(cost) FROM "UsageRecord" GROUP BY 1, 2 ORDER BY 1, 2$q$)
FROM generate_series(1, 3)
\gexec
SELECT format($q$SELECT plan, count(*) FROM "User" GROUP BY plan ORDER BY plan$q$)
FROM generate_series(1, 5)
\gexec

\o
\echo 'workload done'
