-- VoxLink demo data, generated deterministically (setseed + generate_series): the same scale
-- gives the same rows on every machine. Load sql/schema.sql first.
--
--   psql -v scale=1 -f sql/data.sql
--
-- scale 1 (the default): 2,000 users, 20,000 numbers, 200,000 usage records (a few seconds);
-- scale 5: 10,000 users, 100,000 numbers, 1,000,000 usage records. Everything is linear in scale.
--
-- Skew as in a real number-rental business: a few countries hold most numbers, a few area codes
-- most of a country's, most numbers are AVAILABLE or ACTIVE, a few large customers own many
-- numbers, a few busy numbers carry most of the traffic, and recent days carry more than old ones.
-- Timestamps are relative to a fixed "now" (:'demo_now', 2025-01-01) so that the data, and the
-- constants in sql/workload.sql, never depend on the day the demo is loaded.

\set ON_ERROR_STOP on
\if :{?scale}
\else
    \set scale 1
\endif
\set demo_now '2025-01-01 00:00:00+00'
\echo 'loading VoxLink demo data at scale' :scale

-- Each draw of random numbers is materialised in a temporary table before it is joined, so
-- that no plan can re-evaluate random() on a rescan.
SELECT setseed(0.2025) \g /dev/null

-- Countries: dialling code, share of the numbers (cumulative bounds lo..hi in [0, 1)), base
-- monthly price and area codes, most popular first.
CREATE TEMP TABLE demo_country (code text, dial text, lo float8, hi float8, base numeric, areas text[]);
INSERT INTO demo_country (code, dial, lo, hi, base, areas)
SELECT code, dial,
       (sum(share) OVER (ORDER BY ord) - share) / 100.0,
       sum(share) OVER (ORDER BY ord) / 100.0,
       base, areas
FROM (VALUES
    (1,  'US', '1',  40, 1.00, ARRAY['212', '646', '415', '310', '213', '312', '617', '305', '206', '512', '702', '404']),
    (2,  'GB', '44', 15, 1.50, ARRAY['20', '161', '121', '131', '113', '141', '117', '151']),
    (3,  'DE', '49', 10, 2.00, ARRAY['30', '40', '89', '69', '221', '211', '711']),
    (4,  'FR', '33',  8, 2.00, ARRAY['1', '4', '5', '3', '2', '9']),
    (5,  'CA', '1',   7, 1.25, ARRAY['416', '604', '514', '403', '613', '780']),
    (6,  'AU', '61',  5, 2.50, ARRAY['2', '3', '7', '8']),
    (7,  'NL', '31',  3, 2.00, ARRAY['20', '10', '70', '30']),
    (8,  'ES', '34',  3, 2.00, ARRAY['91', '93', '96', '95']),
    (9,  'IT', '39',  2, 2.25, ARRAY['02', '06', '011', '055']),
    (10, 'SE', '46',  2, 2.75, ARRAY['8', '31', '40']),
    (11, 'BR', '55',  2, 3.00, ARRAY['11', '21', '31', '61']),
    (12, 'MX', '52',  1, 2.50, ARRAY['55', '33', '81']),
    (13, 'JP', '81',  1, 4.00, ARRAY['3', '6', '52']),
    (14, 'IN', '91',  1, 3.50, ARRAY['11', '22', '80'])
) AS c (ord, code, dial, share, base, areas);

-- Users: 60% free, 25% starter, 12% business, 3% enterprise, signed up over three years. The
-- lowest ids are enterprise customers: they own the most numbers (see below).
CREATE TEMP TABLE demo_user_draw AS
SELECT g, random() AS r_plan, random() AS r_created
FROM generate_series(1, 2000 * :scale) AS g;

INSERT INTO "User" (email, name, plan, created_at)
SELECT format('user%s@example.com', g),
       (ARRAY['Ada', 'Alan', 'Barbara', 'Claude', 'Donald', 'Edsger', 'Frances', 'Grace',
              'John', 'Ken', 'Leslie', 'Margaret', 'Niklaus', 'Radia', 'Tony', 'Yukihiro'])[1 + g % 16]
       || ' ' ||
       (ARRAY['Lovelace', 'Turing', 'Liskov', 'Shannon', 'Knuth', 'Dijkstra', 'Allen', 'Hopper',
              'McCarthy', 'Thompson', 'Lamport', 'Hamilton', 'Wirth', 'Perlman', 'Hoare',
              'Matsumoto', 'Ritchie'])[1 + (g / 16) % 17],
       CASE WHEN g <= 10 * :scale THEN 'enterprise'
            WHEN r_plan < 0.60 THEN 'free'
            WHEN r_plan < 0.85 THEN 'starter'
            WHEN r_plan < 0.97 THEN 'business'
            ELSE 'enterprise' END,
       :'demo_now'::timestamptz - r_created * interval '1095 days'
FROM demo_user_draw
ORDER BY g;

-- Numbers: 55% AVAILABLE (no owner), 35% ACTIVE, 6% RESERVED, 4% SUSPENDED. Owners follow a
-- power law (random()^3 favours low user ids): a handful of customers own hundreds of numbers.
CREATE TEMP TABLE demo_number_draw AS
SELECT g, random() AS r_country, random() AS r_area, random() AS r_status, random() AS r_owner,
       random() AS r_features, random() AS r_price, random() AS r_created, random() AS r_updated
FROM generate_series(1, 20000 * :scale) AS g;

INSERT INTO "VirtualNumber" (number, country_code, area_code, status, owner_id, features,
                             monthly_price, created_at, updated_at)
SELECT '+' || c.dial || v.area_code || lpad(d.g::text, greatest(7, length(d.g::text)), '0'),
       c.code,
       v.area_code,
       v.status,
       CASE WHEN v.status = 'AVAILABLE' THEN NULL
            ELSE 1 + floor(2000 * :scale * d.r_owner ^ 3)::bigint END,
       v.features,
       round(c.base + 0.5 * jsonb_array_length(v.features) + 2 * d.r_price::numeric, 2),
       v.created_at,
       v.created_at + d.r_updated * (:'demo_now'::timestamptz - v.created_at)
FROM demo_number_draw AS d
JOIN demo_country AS c ON d.r_country >= c.lo AND d.r_country < c.hi
CROSS JOIN LATERAL (
    SELECT c.areas[1 + floor(cardinality(c.areas) * d.r_area ^ 2)::int] AS area_code,
           CASE WHEN d.r_status < 0.55 THEN 'AVAILABLE'
                WHEN d.r_status < 0.90 THEN 'ACTIVE'
                WHEN d.r_status < 0.96 THEN 'RESERVED'
                ELSE 'SUSPENDED' END AS status,
           CASE WHEN d.r_features < 0.30 THEN '["voice", "sms"]'
                WHEN d.r_features < 0.50 THEN '["voice"]'
                WHEN d.r_features < 0.65 THEN '["voice", "sms", "mms"]'
                WHEN d.r_features < 0.75 THEN '["sms"]'
                WHEN d.r_features < 0.85 THEN '["voice", "fax"]'
                WHEN d.r_features < 0.95 THEN '["voice", "sms", "mms", "fax"]'
                ELSE '["sms", "mms"]' END::jsonb AS features,
           :'demo_now'::timestamptz - d.r_created * interval '730 days' AS created_at
) AS v
ORDER BY d.g;

-- Usage: calls and messages on numbers in use (ACTIVE or SUSPENDED). Traffic is skewed towards
-- a few busy numbers and towards the last weeks of the 180 days covered. Rows are inserted in
-- time order, as an append-only log would be.
CREATE TEMP TABLE demo_in_use AS
SELECT row_number() OVER (ORDER BY id) AS rn, id
FROM "VirtualNumber"
WHERE status IN ('ACTIVE', 'SUSPENDED');

CREATE TEMP TABLE demo_usage_draw AS
SELECT g, random() AS r_number, random() AS r_time, random() AS r_kind, random() AS r_duration
FROM generate_series(1, 200000 * :scale) AS g;

INSERT INTO "UsageRecord" (number_id, "timestamp", kind, duration_seconds, cost)
SELECT n.id, u.ts, u.kind, u.duration_seconds,
       CASE u.kind
           WHEN 'call_out' THEN round(u.duration_seconds * 0.02 / 60, 4)
           WHEN 'call_in' THEN round(u.duration_seconds * 0.005 / 60, 4)
           WHEN 'sms_out' THEN 0.0075
           ELSE 0 END
FROM demo_usage_draw AS d
JOIN demo_in_use AS n
  ON n.rn = 1 + floor((SELECT count(*) FROM demo_in_use) * d.r_number ^ 2)::bigint
CROSS JOIN LATERAL (
    SELECT date_trunc('second', :'demo_now'::timestamptz - d.r_time ^ 1.5 * interval '180 days') AS ts,
           CASE WHEN d.r_kind < 0.30 THEN 'call_in'
                WHEN d.r_kind < 0.60 THEN 'call_out'
                WHEN d.r_kind < 0.80 THEN 'sms_in'
                ELSE 'sms_out' END AS kind,
           CASE WHEN d.r_kind < 0.60
                THEN least(3600, 5 + floor(-ln(1 - d.r_duration) * 120))::int
                ELSE 0 END AS duration_seconds
) AS u
ORDER BY u.ts, d.g;

DROP TABLE demo_country, demo_user_draw, demo_number_draw, demo_in_use, demo_usage_draw;

ANALYZE "User", "VirtualNumber", "UsageRecord";

SELECT (SELECT count(*) FROM "User") AS users,
       (SELECT count(*) FROM "VirtualNumber") AS numbers,
       (SELECT count(*) FROM "UsageRecord") AS usage_records;
