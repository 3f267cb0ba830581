-- The seed document's four hand-written indexes ("Database Optimizations" > "Performance
-- Indexes"), statement for statement, for comparison with what the index advisor suggests.
--
--   psql -f sql/seed_indexes.sql
--
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block: run this file with psql as
-- it is (each statement on its own), not with psql -1 or inside BEGIN ... COMMIT.

-- Country and area code searches
CREATE INDEX CONCURRENTLY idx_virtual_numbers_country_area
ON "VirtualNumber" (country_code, area_code)
WHERE status = 'AVAILABLE';

-- Owner queries with status
CREATE INDEX CONCURRENTLY idx_virtual_numbers_owner_status
ON "VirtualNumber" (owner_id, status, created_at DESC)
WHERE owner_id IS NOT NULL;

-- Feature-based searches using GIN
CREATE INDEX CONCURRENTLY idx_virtual_numbers_features
ON "VirtualNumber" USING GIN (features)
WHERE status = 'AVAILABLE';

-- Time-series data for usage records
CREATE INDEX CONCURRENTLY idx_usage_records_number_timestamp
ON "UsageRecord" (number_id, timestamp DESC);
