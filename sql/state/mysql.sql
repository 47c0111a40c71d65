-- tally state store, MySQL/MariaDB (as on RDS). Applied by tally at connect (idempotent).
-- The first two tables keep the reference implementation's columns; job_runs is tally's own.
-- job_runs times are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (sortable, comparable as text).
CREATE TABLE IF NOT EXISTS ingested_file_status (
    file_url VARCHAR(700) PRIMARY KEY,
    submitted_jobs TEXT,
    last_update_status VARCHAR(64),
    last_validated_timestamp VARCHAR(32)
);
CREATE TABLE IF NOT EXISTS aggr_job_configuration (
    job_config_id VARCHAR(128) PRIMARY KEY,
    job_input_pattern VARCHAR(1024) NOT NULL,
    job_min_file_count INTEGER NOT NULL DEFAULT 1,
    job_addl_criteria TEXT,
    job_params TEXT,
    last_exec_stepid VARCHAR(256),
    last_exec_status VARCHAR(32),
    last_run_timestamp VARCHAR(32),
    -- consecutive failed attempts since the last COMPLETED run, and when the last one failed
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    last_failed_at VARCHAR(32),
    -- when a scheduler claimed the job (a claim that never becomes a run is released)
    claimed_at VARCHAR(32)
);
CREATE TABLE IF NOT EXISTS job_runs (
    run_id VARCHAR(64) PRIMARY KEY,
    job VARCHAR(128) NOT NULL,
    job_config_id VARCHAR(128),
    province VARCHAR(32),
    status VARCHAR(16) NOT NULL,
    rows_in BIGINT,
    bad_rows BIGINT,
    rows_out BIGINT,
    started_at VARCHAR(32) NOT NULL,
    heartbeat_at VARCHAR(32) NOT NULL,
    finished_at VARCHAR(32),
    error TEXT,
    emr_step_id VARCHAR(256),
    hudi_instant VARCHAR(32),
    -- when the run listed its inputs: the job's watermark once the run COMPLETED
    inputs_listed_at VARCHAR(32),
    host VARCHAR(256),
    INDEX job_runs_status (status, heartbeat_at)
);
