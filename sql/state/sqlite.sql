-- tally state store, SQLite. Applied by tally at connect (every statement is idempotent).
-- The first two tables keep the reference implementation's columns; job_runs is tally's own.
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (sortable, comparable as text).
CREATE TABLE IF NOT EXISTS ingested_file_status (
    file_url TEXT PRIMARY KEY,
    submitted_jobs TEXT,
    last_update_status TEXT,
    last_validated_timestamp TEXT
);
CREATE TABLE IF NOT EXISTS aggr_job_configuration (
    job_config_id TEXT PRIMARY KEY,
    job_input_pattern TEXT NOT NULL,
    job_min_file_count INTEGER NOT NULL DEFAULT 1,
    job_addl_criteria TEXT,
    job_params TEXT,
    last_exec_stepid TEXT,
    last_exec_status TEXT,
    last_run_timestamp TEXT,
    -- consecutive failed attempts since the last COMPLETED run, and when the last one failed
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    last_failed_at TEXT,
    -- when a scheduler claimed the job (a claim that never becomes a run is released)
    claimed_at TEXT
);
CREATE TABLE IF NOT EXISTS job_runs (
    run_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    job_config_id TEXT,
    province TEXT,
    status TEXT NOT NULL,
    rows_in INTEGER,
    bad_rows INTEGER,
    rows_out INTEGER,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT,
    emr_step_id TEXT,
    hudi_instant TEXT,
    -- when the run listed its inputs: the job's watermark once the run COMPLETED
    inputs_listed_at TEXT,
    host TEXT
);
CREATE INDEX IF NOT EXISTS job_runs_status ON job_runs (status, heartbeat_at);
