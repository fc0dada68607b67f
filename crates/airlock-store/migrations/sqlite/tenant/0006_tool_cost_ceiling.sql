-- A tool may cap what its calls cost across the tenant in any 24 hours.
ALTER TABLE tools ADD COLUMN daily_cost_ceiling_cents BIGINT;
