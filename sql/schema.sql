-- VoxLink demo schema: the three tables the seed document's "Database Optimizations" section
-- indexes (users, the virtual phone numbers they rent, and the calls and messages on them).
--
-- Deliberately only primary keys and the one unique constraint a real schema cannot do without:
-- no secondary index, not even on the foreign keys. Finding the indexes this workload needs is
-- the index advisor's job (voxperf.suggest_indexes); sql/seed_indexes.sql holds the seed's own
-- hand-written answer for comparison.
--
-- Loading this file drops and recreates the tables (the demo starts from a known state).
-- Quoted, capitalised table names as the seed (an ORM-generated schema) has them.

DROP TABLE IF EXISTS "UsageRecord", "VirtualNumber", "User" CASCADE;

CREATE TABLE "User" (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL,
    name        text NOT NULL,
    plan        text NOT NULL DEFAULT 'free'
                CHECK (plan IN ('free', 'starter', 'business', 'enterprise')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE "VirtualNumber" (
    id             bigserial PRIMARY KEY,
    number         text NOT NULL UNIQUE,             -- E.164, e.g. +12125550123
    country_code   text NOT NULL,                    -- ISO 3166-1 alpha-2, e.g. US
    area_code      text NOT NULL,
    status         text NOT NULL DEFAULT 'AVAILABLE'
                   CHECK (status IN ('AVAILABLE', 'RESERVED', 'ACTIVE', 'SUSPENDED')),
    owner_id       bigint REFERENCES "User" (id),    -- NULL while AVAILABLE
    features       jsonb NOT NULL DEFAULT '[]',      -- array of "voice", "sms", "mms", "fax"
    monthly_price  numeric(10, 2) NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE "UsageRecord" (
    id                bigserial PRIMARY KEY,
    number_id         bigint NOT NULL REFERENCES "VirtualNumber" (id),
    "timestamp"       timestamptz NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('call_in', 'call_out', 'sms_in', 'sms_out')),
    duration_seconds  integer NOT NULL DEFAULT 0,    -- 0 for messages
    cost              numeric(10, 4) NOT NULL DEFAULT 0
);
