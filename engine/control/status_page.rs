//! The status report as text: a terminal table, and a small self-refreshing HTML page (no
//! JavaScript). Every value is escaped; the page carries only what the JSON carries.

use std::fmt::Write;

use super::status::{JobStatus, StatusReport};
use crate::state::RunStatus;

/// The terminal view: one line per job, then what each job is waiting for or how its last run
/// ended, then the most recent runs.
pub fn render_text(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tally status at {}", report.generated_at);
    if report.jobs.is_empty() {
        let _ = writeln!(out, "\nNo jobs are configured (tally jobs register ...).");
    } else {
        let rows: Vec<[String; 6]> = report
            .jobs
            .iter()
            .map(|j| {
                [
                    j.job_config_id.clone(),
                    j.job.clone().unwrap_or_default(),
                    j.last_status.clone().unwrap_or_else(|| "-".into()),
                    format!("{}/{}", j.files_tracked, j.min_file_count),
                    if j.ready { "ready" } else { "waiting" }.to_string(),
                    j.failed_attempts.to_string(),
                ]
            })
            .collect();
        let header = [
            "JOB CONFIG",
            "JOB",
            "LAST STATUS",
            "FILES",
            "NOW",
            "FAILURES",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", line(&header.map(String::from)));
        for row in &rows {
            let _ = writeln!(out, "{}", line(row));
        }
        for job in &report.jobs {
            let _ = writeln!(out, "\n{}", job.job_config_id);
            let _ = writeln!(out, "  now:      {}", job.headline());
            let _ = writeln!(out, "  last run: {}", job.last_run_text());
            if job.new_file_count > 0 {
                let _ = writeln!(
                    out,
                    "  {} files validated since its last completed run: {}{}",
                    job.new_file_count,
                    job.new_files.join(", "),
                    if job.new_file_count > job.new_files.len() {
                        ", ..."
                    } else {
                        ""
                    }
                );
            }
        }
    }
    if !report.recent_runs.is_empty() {
        let _ = writeln!(out, "\nRecent runs (newest first):");
        for run in &report.recent_runs {
            let _ = writeln!(
                out,
                "  {}  {:<9}  {}  {}{}",
                run.started_at,
                run.status,
                run.job_config_id.as_deref().unwrap_or(&run.job),
                run.province.as_deref().unwrap_or(""),
                run.error
                    .as_deref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn job_row(job: &JobStatus) -> String {
    let state_class = match job.last_status.as_deref().and_then(RunStatus::parse) {
        Some(RunStatus::Completed) => "completed",
        Some(RunStatus::Failed) => "failed",
        Some(RunStatus::Running) => "running",
        None => "none",
    };
    format!(
        "<tr class=\"job\" id=\"job-{id}\"><td>{id}</td><td>{job_name}</td>\
         <td class=\"{state_class}\">{status}</td><td>{files}/{min}</td><td>{now}</td><td>{last}</td></tr>\n",
        id = escape(&job.job_config_id),
        job_name = escape(&format!(
            "{}{}",
            job.job.as_deref().unwrap_or(""),
            job.province
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        )),
        status = escape(job.last_status.as_deref().unwrap_or("never run")),
        files = job.files_tracked,
        min = job.min_file_count,
        now = escape(&job.headline()),
        last = escape(&job.last_run_text()),
    )
}

/// The page `tally serve` shows; it reloads itself every `refresh_secs`.
pub fn render_html(report: &StatusReport, refresh_secs: u64) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh_secs}\">\
         <title>tally status</title><style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
         .completed{{color:#080}}.failed{{color:#b00;font-weight:bold}}.running{{color:#06c}}\
         </style></head><body>\n<h1>tally status</h1>\n<p>As of {at}; this page reloads every \
         {refresh_secs} s. The same facts as JSON: <a href=\"/api/status\">/api/status</a>.</p>\n",
        at = escape(&report.generated_at)
    );
    page.push_str("<h2>Jobs</h2>\n");
    if report.jobs.is_empty() {
        page.push_str("<p>No jobs are configured.</p>\n");
    } else {
        page.push_str(
            "<table id=\"jobs\"><tr><th>Job config</th><th>Job</th><th>Last status</th>\
             <th>Files</th><th>Now</th><th>Last run</th></tr>\n",
        );
        for job in &report.jobs {
            page.push_str(&job_row(job));
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h2>Recent runs</h2>\n<table id=\"runs\"><tr><th>Started</th><th>Status</th><th>Job config</th><th>Rows in / bad / out</th><th>Error</th></tr>\n");
    for run in &report.recent_runs {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td></tr>",
            escape(&run.started_at),
            run.status.to_ascii_lowercase(),
            escape(&run.status),
            escape(run.job_config_id.as_deref().unwrap_or(&run.job)),
            run.rows_in.unwrap_or(0),
            run.bad_rows.unwrap_or(0),
            run.rows_out.unwrap_or(0),
            escape(run.error.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn an_empty_store_renders() {
        let report = StatusReport {
            generated_at: "2026-01-01T00:00:00.000000Z".into(),
            jobs: vec![],
            recent_runs: vec![],
        };
        assert!(render_text(&report).contains("No jobs are configured"));
        assert!(render_html(&report, 5).contains("content=\"5\""));
    }
}
