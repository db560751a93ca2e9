//! `pthwatch log verify|query|show`.
use std::{
    fs::File,
    io::{self, BufReader, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use super::{
    CheckpointKey, DEFAULT_PATH, Kind, LogError,
    query::{QueryFilter, Since, hook_lineages, parse_since, query, table_header, table_row},
    show::{FindError, find_alert, related_records, render_incident},
    verify::{VerifyOptions, verify},
    writer::{head_path, read_head},
};

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(subcommand)]
    pub command: LogCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LogCommand {
    /// Check that the event log is intact. Exit 0 when it is; 1 when it was edited, cut,
    /// reordered or spliced (each place is named); 2 when it cannot be read.
    Verify(VerifyArgs),
    /// Records matching every filter given: which processes ran a hook, when, and what
    /// they touched.
    Query(QueryArgs),
    /// Draw one incident: its process tree, hook, credential reads, destination, and what
    /// pthwatch did.
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The event log.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PATH)]
    pub file: PathBuf,
    /// Its head file (default: the log's path with `.head` appended).
    #[arg(long, value_name = "PATH")]
    pub head: Option<PathBuf>,
    /// The checkpoint key (mode 0600) to check checkpoint and head-file signatures with.
    #[arg(long, value_name = "KEYFILE")]
    pub key: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    /// The event log.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PATH)]
    pub file: PathBuf,
    /// Records since this RFC 3339 time (2026-03-24T10:00:00Z, or a date), or for this
    /// long (30m, 2h, 1h30m, 7d).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Records about this process or about one of its descendants (it is in their lineage).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Records about this hook: its path, its file name, or a prefix of its sha256.
    #[arg(long, value_name = "PATH|SHA256")]
    pub hook: Option<String>,
    /// Records of this rule, e.g. hook_credential_exfiltration.
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// Only records of this kind (repeatable).
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Vec<Kind>,
    /// The matching records as JSON Lines, whole, instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The alert's id, or a prefix of it that names one alert.
    #[arg(value_name = "ALERT_ID")]
    pub id: String,
    /// The event log.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PATH)]
    pub file: PathBuf,
}

/// Runs a `log` subcommand; its exit status. Errors (exit 2) are IO and usage errors.
pub fn command(args: &LogArgs) -> Result<ExitCode, LogError> {
    let mut out = io::stdout().lock();
    let status = match &args.command {
        LogCommand::Verify(a) => verify_to(a, &mut out),
        LogCommand::Query(a) => query_to(a, &mut out, now_ms()),
        LogCommand::Show(a) => show_to(a, &mut out),
    };
    match status {
        Ok(code) => Ok(ExitCode::from(code)),
        // `pthwatch log query | head`: the reader has all it wanted.
        Err(LogError::Io { error, .. }) if error.kind() == io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn open(path: &Path) -> Result<BufReader<File>, LogError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 16, f))
        .map_err(LogError::io(path))
}

fn output(e: io::Error) -> LogError {
    LogError::io("<stdout>")(e)
}

/// `log verify`, writing the report to `out`; returns 0 (intact) or 1.
pub fn verify_to(a: &VerifyArgs, out: &mut impl Write) -> Result<u8, LogError> {
    let key = a.key.as_deref().map(CheckpointKey::load).transpose()?;
    let head_file = a.head.clone().unwrap_or_else(|| head_path(&a.file));
    // The head first: a writer appending meanwhile only makes the log longer than it.
    let (head, head_problem) = match read_head(&head_file) {
        Ok(head) => (head, None),
        Err(LogError::HeadFile(problem)) => (None, Some(problem)),
        Err(e) => return Err(e),
    };
    let opts = VerifyOptions {
        key: key.as_ref(),
        head: head.clone(),
    };
    let report = verify(open(&a.file)?, &opts).map_err(LogError::io(&a.file))?;

    let mut text = String::new();
    for p in &report.problems {
        text.push_str(&p.message);
        text.push('\n');
    }
    if let Some(problem) = &head_problem {
        text.push_str(&format!("{problem} — edited or replaced\n"));
    }
    for note in &report.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    if head.is_none() && head_problem.is_none() {
        text.push_str(&format!(
            "note: no head file at {}: a cut at the end of the log cannot be detected\n",
            head_file.display()
        ));
    }
    text.push_str(&format!(
        "{}: {} records in {} lines, {} checkpoints verified\n",
        a.file.display(),
        report.records,
        report.lines,
        report.checkpoints_verified
    ));
    if let Some((seq, hash)) = &report.last {
        text.push_str(&format!(
            "anchor: seq {seq} hash {hash} (keep it elsewhere: it pins everything up to here)\n"
        ));
    }
    let problems = report.problems.len() + usize::from(head_problem.is_some());
    if report.intact() && head_problem.is_none() {
        text.push_str("intact\n");
    } else {
        text.push_str(&format!("NOT INTACT: {problems} problem(s)\n"));
    }
    out.write_all(text.as_bytes()).map_err(output)?;
    Ok(u8::from(problems > 0))
}

/// `log query`, writing the matching records to `out`; returns 0.
pub fn query_to(a: &QueryArgs, out: &mut impl Write, now_ms: i64) -> Result<u8, LogError> {
    let filter = QueryFilter {
        since_ms: a.since.map(|s| s.resolve(now_ms)),
        pid: a.pid,
        hook: a.hook.clone(),
        rule: a.rule.clone(),
        kinds: a.kind.clone(),
        hook_lineages: match &a.hook {
            Some(pattern) => {
                hook_lineages(open(&a.file)?, pattern).map_err(LogError::io(&a.file))?
            }
            None => Default::default(),
        },
    };
    let reader = open(&a.file)?;
    if !a.json {
        writeln!(out, "{}", table_header()).map_err(output)?;
    }
    let mut failed_output = None;
    let stats = query(reader, &filter, |r| {
        let written = if a.json {
            serde_json::to_writer(&mut *out, r)
                .map_err(io::Error::other)
                .and_then(|()| out.write_all(b"\n"))
        } else {
            writeln!(out, "{}", table_row(r))
        };
        written.map_err(|e| {
            let kind = e.kind();
            failed_output = Some(e);
            io::Error::new(kind, "output")
        })
    });
    if let Some(e) = failed_output {
        return Err(output(e));
    }
    let stats = stats.map_err(LogError::io(&a.file))?;
    out.flush().map_err(output)?;
    if stats.unreadable > 0 {
        eprintln!(
            "pthwatch: {} line(s) of {} are not records and were skipped; run `pthwatch log \
             verify --file {}`",
            stats.unreadable,
            a.file.display(),
            a.file.display()
        );
    }
    if stats.matched == 0 {
        eprintln!("pthwatch: no record matches");
    }
    Ok(0)
}

/// `log show`; returns 0, or 1 when no alert has the id.
pub fn show_to(a: &ShowArgs, out: &mut impl Write) -> Result<u8, LogError> {
    let found = find_alert(open(&a.file)?, &a.id).map_err(LogError::io(&a.file))?;
    let found = match found {
        Ok(found) => found,
        Err(FindError::NotFound) => {
            eprintln!(
                "pthwatch: no alert with id `{}` in {}",
                super::printable(&a.id),
                a.file.display()
            );
            return Ok(1);
        }
        Err(FindError::Ambiguous(ids)) => {
            return Err(LogError::Usage(format!(
                "`{}` is the start of several alert ids ({}); give more of it",
                super::printable(&a.id),
                ids.join(", ")
            )));
        }
    };
    let lineage_id = found
        .alert
        .data
        .get("lineage_id")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let related = if lineage_id == 0 {
        Vec::new()
    } else {
        related_records(open(&a.file)?, lineage_id, found.alert.seq)
            .map_err(LogError::io(&a.file))?
    };
    let text = render_incident(&found.alert, found.reports, &related);
    out.write_all(text.as_bytes()).map_err(output)?;
    Ok(0)
}
