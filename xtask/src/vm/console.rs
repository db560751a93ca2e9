//! Reads what a test run prints (the guest's serial console, or the host run's stdout):
//! the guest's own lines (`PTHWATCH-VM-...`) and libtest's results.
use super::guest::{BEGIN_LINE, END_LINE, ERROR_LINE, EXIT_LINE, KERNEL_LINE};

/// What one run reported, line by line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// `<release> lsm=... btf=... cpus=...` as the guest saw itself.
    pub kernel: Option<String>,
    /// Setup errors the guest's init printed.
    pub errors: Vec<String>,
    /// Each test binary that started, with its exit status once it ended.
    pub binaries: Vec<(String, Option<i32>)>,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// `binary: test name` of each failed test.
    pub failed_tests: Vec<String>,
    /// The guest's final status (`PTHWATCH-VM-EXIT=N`).
    pub exit: Option<i32>,
    /// The guest kernel's panic line, when it panicked.
    pub kernel_panic: Option<String>,
    /// Names under libtest's latest `failures:` heading, not yet closed by its
    /// `test result:` line.
    listing: Option<Vec<String>>,
}

impl RunReport {
    /// Takes one line (without its line ending).
    pub fn feed(&mut self, line: &str) {
        let plain = strip_ansi(line);
        let line = plain.trim_end_matches(['\r', '\n']);
        if let Some(rest) = line.strip_prefix(EXIT_LINE) {
            self.exit = rest.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix(KERNEL_LINE) {
            self.kernel = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix(ERROR_LINE) {
            self.errors.push(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix(BEGIN_LINE) {
            self.binaries.push((rest.trim().to_owned(), None));
        } else if let Some(rest) = line.strip_prefix(END_LINE) {
            let mut words = rest.split_whitespace();
            let (name, code) = (words.next(), words.next().and_then(|c| c.parse().ok()));
            if let Some(entry) = self
                .binaries
                .iter_mut()
                .rev()
                .find(|(n, c)| Some(n.as_str()) == name && c.is_none())
            {
                entry.1 = code;
            }
        } else if let Some(rest) = line.trim().strip_prefix("test result:") {
            // The names libtest listed last, just above this line, are the failed tests.
            // (Its `test NAME ... FAILED` lines are no use: a test's child processes write
            // to the same console in between.)
            let binary = self.binaries.last().map_or("?", |(n, _)| n.as_str());
            for name in self.listing.take().unwrap_or_default() {
                self.failed_tests.push(format!("{binary}: {name}"));
            }
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        } else if let Some(at) = line.find("Kernel panic - not syncing") {
            self.kernel_panic
                .get_or_insert_with(|| line[at..].to_owned());
        } else if line == "failures:" {
            self.listing = Some(Vec::new());
        } else if let (Some(listing), Some(name)) = (&mut self.listing, line.strip_prefix("    "))
            && !name.is_empty()
            && !name.contains(char::is_whitespace)
        {
            listing.push(name.to_owned());
        }
    }

    /// Test binaries that started and never ended (the guest stopped or timed out).
    pub fn unfinished(&self) -> impl Iterator<Item = &str> {
        self.binaries
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| n.as_str())
    }

    /// Test binaries that exited non-zero (a failed test, or a crash before any result).
    pub fn failed_binaries(&self) -> impl Iterator<Item = (&str, i32)> {
        self.binaries
            .iter()
            .filter_map(|(n, c)| c.filter(|c| *c != 0).map(|c| (n.as_str(), c)))
    }
}

/// The text of a line without terminal escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str) -> RunReport {
        let mut r = RunReport::default();
        for line in text.lines() {
            r.feed(line);
        }
        r
    }

    #[test]
    fn reads_a_guest_run() {
        let r = report(
            "[    0.000000] Linux version 6.1.0-56-amd64\r\n\
             PTHWATCH-VM-KERNEL 6.1.0-56-amd64 lsm=lockdown,capability btf=yes cpus=2\r\n\
             PTHWATCH-VM-BEGIN sensors\r\n\
             running 2 tests\r\n\
             test opens_resolve ... ok\r\n\
             test io_uring_taints ... pthwatch: program open_exit: Permission denied\r\n\
             \r\n\
             failures:\r\n\
             \r\n\
             ---- io_uring_taints stdout ----\r\n\
             \r\n\
             thread 'io_uring_taints' panicked at tests/src/lib.rs:229:14:\r\n\
             stack backtrace:\r\n\
             \x20  0: __rustc::rust_begin_unwind\r\n\
             \x20   indented_word\r\n\
             \r\n\
             failures:\r\n\
             \x20   io_uring_taints\r\n\
             \r\n\
             test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.2s\r\n\
             PTHWATCH-VM-END sensors 101\r\n\
             PTHWATCH-VM-BEGIN detection\r\n\
             test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out\r\n\
             PTHWATCH-VM-END detection 0\r\n\
             PTHWATCH-VM-EXIT=1\r\n",
        );
        assert_eq!(
            r.kernel.as_deref(),
            Some("6.1.0-56-amd64 lsm=lockdown,capability btf=yes cpus=2")
        );
        assert_eq!((r.passed, r.failed, r.ignored), (6, 1, 2));
        assert_eq!(r.failed_tests, ["sensors: io_uring_taints"]);
        assert_eq!(r.failed_binaries().collect::<Vec<_>>(), [("sensors", 101)]);
        assert_eq!(r.unfinished().count(), 0);
        assert_eq!(r.exit, Some(1));
    }

    #[test]
    fn a_guest_that_stops_early_leaves_no_exit_status() {
        let r = report(
            "PTHWATCH-VM-BEGIN sensors\n\
             test opens_resolve ... ok\n\
             [   42.000000] Kernel panic - not syncing: Attempted to kill init!\n",
        );
        assert_eq!(r.exit, None);
        assert_eq!(r.unfinished().collect::<Vec<_>>(), ["sensors"]);
        assert_eq!(
            r.kernel_panic.as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init!")
        );
    }

    #[test]
    fn colours_do_not_hide_results() {
        let r = report(
            "PTHWATCH-VM-BEGIN sensors\n\
             test opens ... \u{1b}[31mFAILED\u{1b}[0m\n\
             failures:\n\
             \x20   opens\n\
             test result: \u{1b}[31mFAILED\u{1b}[m. 0 passed; 1 failed; 0 ignored\n",
        );
        assert_eq!(r.failed_tests, ["sensors: opens"]);
        assert_eq!(r.failed, 1);
    }

    #[test]
    fn setup_errors_are_kept() {
        let r = report("PTHWATCH-VM-ERROR insmod 9p.ko\nPTHWATCH-VM-EXIT=125\n");
        assert_eq!(r.errors, ["insmod 9p.ko"]);
        assert_eq!(r.exit, Some(125));
    }
}
