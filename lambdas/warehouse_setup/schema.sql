-- trainserve warehouse schema: THE table DDL, run on Redshift (by the warehouse_setup custom resource,
-- through the Redshift Data API) and on DuckDB (by the local warehouse). Every statement here is written
-- in the SQL both engines accept; there is no per-engine difference in this file. Statements end with ';'
-- at the end of a line; '--' comments are stripped before splitting.
--
-- Firehose delivers at least once, so a record may arrive twice: read through the *_dedup views.

CREATE TABLE IF NOT EXISTS prediction_log (
    request_id VARCHAR(128) NOT NULL,
    event_time TIMESTAMP NOT NULL,
    endpoint_name VARCHAR(256),
    variant_name VARCHAR(64),
    model_package_arn VARCHAR(512),
    model_version INTEGER,
    user_id VARCHAR(256),
    features VARCHAR(65535),
    score DOUBLE PRECISION,
    label INTEGER,
    threshold DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    params VARCHAR(4096)
);

CREATE TABLE IF NOT EXISTS prediction_feedback (
    request_id VARCHAR(128) NOT NULL,
    event_time TIMESTAMP NOT NULL,
    outcome INTEGER NOT NULL
);

-- One row per prediction: the first delivery of each request_id.
CREATE OR REPLACE VIEW prediction_log_dedup AS
SELECT request_id, event_time, endpoint_name, variant_name, model_package_arn, model_version, user_id,
       features, score, label, threshold, latency_ms, params
FROM (
    SELECT l.*, ROW_NUMBER() OVER (PARTITION BY request_id ORDER BY event_time ASC) AS rn
    FROM prediction_log l
) first_delivery
WHERE rn = 1;

-- One outcome per prediction: the latest feedback for each request_id wins.
CREATE OR REPLACE VIEW prediction_feedback_dedup AS
SELECT request_id, event_time, outcome
FROM (
    SELECT f.*, ROW_NUMBER() OVER (PARTITION BY request_id ORDER BY event_time DESC) AS rn
    FROM prediction_feedback f
) latest
WHERE rn = 1;
