//! The `thpsim` binary at its edge: help, exit codes, messages for bad
//! input. Runs that need a backend are tested inside the crate with toy
//! backends; here only what needs no backend, or fails before one starts.

use std::path::PathBuf;
use std::process::{Command, Output};

fn thpsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thpsim")).args(args).output().expect("the thpsim binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thpsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_everywhere() {
    for args in [&["--help"][..], &["run", "--help"], &["oracle", "--help"], &["bench", "--help"], &["fuzz", "--help"]]
    {
        let out = thpsim(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage: thpsim"), "{args:?}: {}", stdout(&out));
    }
    assert!(stdout(&thpsim(&["--help"])).contains("thpsim run --example"));
    assert!(stdout(&thpsim(&["run", "--help"])).contains("--json"));
    assert!(stdout(&thpsim(&["oracle", "--help"])).contains("--random"));
    let fuzz = stdout(&thpsim(&["fuzz", "--help"]));
    assert!(fuzz.contains("--count") && fuzz.contains("--seed") && fuzz.contains("check-invariants"), "{fuzz}");
}

/// A short fuzz run on the real model: the seed first, the totals last, an
/// exit code that matches them, and every reproducer of a broken invariant
/// replays as one under `thpsim run` (exit code 4).
#[test]
fn fuzz_runs_the_model_and_its_reproducers_replay() {
    let dir = std::env::temp_dir().join(format!("thpsim-cli-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = thpsim(&["fuzz", "--count", "30", "--seed", "0x7e57", "--out", dir.to_str().unwrap()]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("seed 0x7e57 (replay: thpsim fuzz --count 30 --seed 0x7e57); invariant checks on"));
    let totals = lines.last().unwrap();
    let (passed, failed) = totals.split_once(" passed, ").expect("a totals line");
    let passed: u32 = passed.parse().unwrap();
    let failed: u32 = failed.strip_suffix(" failed").unwrap().parse().unwrap();
    assert_eq!(passed + failed, 30, "{text}");
    let code = out.status.code().unwrap();
    assert_eq!(code == 0, failed == 0, "exit code {code}:\n{text}");
    assert!(code <= 4, "{text}");
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        let written = std::fs::read_to_string(&path).unwrap();
        if written.contains("#   the model broke an invariant") {
            let replay = thpsim(&["run", path.to_str().unwrap()]);
            assert_eq!(replay.status.code(), Some(4), "{}:\n{written}\n{}", path.display(), stderr(&replay));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_scenario_that_does_not_parse_exits_2_with_file_line_and_column() {
    let path = temp_file("bad_size.thp", "machine ram=1G\np1: A = mmap 2MB\n");
    let out = thpsim(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with(&format!("{}:2:14: error: expected a size", path.display())), "{err}");
    assert!(err.contains("| p1: A = mmap 2MB"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_missing_file_exits_2() {
    let out = thpsim(&["run", "/nonexistent/x.thp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: cannot read scenario /nonexistent/x.thp"), "{}", stderr(&out));
    let out = thpsim(&["oracle", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["run"][..],
        &["run", "--example", "x.thp"],
        &["oracle"],
        &["oracle", "--seed", "1", "x.thp"],
        &["oracle", "--random", "3", "--seed", "seven"],
        &["bench", "--repeat", "0"],
        &["frobnicate"],
    ] {
        let out = thpsim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_oracle_run_over_a_file_that_does_not_parse_fails_it() {
    let path = temp_file("oracle_bad.thp", "p1: A = mmap 2M\np1: touch B write\n");
    let out = thpsim(&["oracle", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.starts_with("FAIL oracle_bad\n"), "{text}");
    assert!(text.contains("p1 has no region named \"B\""), "{text}");
    assert!(text.ends_with("0 passed, 1 failed\n"), "{text}");
}

/// The README's first command, on the model.
#[test]
fn run_example_reports_the_fork_and_the_childs_write() {
    let out = thpsim(&["run", "--example"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("scenario fork_child_write (scenarios/examples/fork_child_write.thp) on model\n"),
        "{text}"
    );
    assert!(text.contains("AnonHugePages:      2048 kB\n"), "{text}");
    assert!(text.contains("anon-thp-pmd-aligned-2048kB:        2048 kB (100%)\n"), "{text}");
    assert!(text.contains("anon-thp-pte-partial:               2044 kB (100%)\n"), "{text}");
    assert!(text.contains("\nthp_split_pmd 1\n"), "{text}");
    assert!(text.ends_with(", 0 expectations failed\n"), "{text}");

    let out = thpsim(&["run", "--example", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(value["scenario"], "fork_child_write");
    assert_eq!(value["final"]["observation"]["vmstat"]["thp_split_pmd"], 1);
}

#[test]
fn policies_from_the_scenario_and_the_command_line() {
    let path = temp_file("policy.thp", "machine ram=64M\npolicy deposit = eager\np1: A = mmap 2M\np1: touch A write\n");
    let file = path.to_str().unwrap();
    let out = thpsim(&["run", file, "--policy", "deposit=eager", "--policy", "pmd_cow=off"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = thpsim(&["run", file, "--policy", "deposit=lazy"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--policy") && err.contains("policy deposit takes eager, found \"lazy\""), "{err}");
    let out = thpsim(&["oracle", file, "--policy", "lazy_deposit=on"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("there is no policy \"lazy_deposit\"; the policies are deposit"), "{}", stderr(&out));
    let out = thpsim(&["run", file, "--policy", "deposit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("expected name=value such as deposit=eager"), "{}", stderr(&out));

    let bad = temp_file("bad_policy.thp", "p1: A = mmap 2M\npolicy deposit = eager\n");
    let out = thpsim(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!(
            "{}:2:1: error: policy must come before the first operation (line 1)",
            bad.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_linux_backend_refuses_model_only_statements_before_it_starts() {
    let path = temp_file(
        "inject.thp",
        "machine ram=64M\ninject folio nth=1\np1: A = mmap 2M\np1: touch A write 1\nexpect errno ENOMEM\n\
         p1: touch A write 1\nexpect ok\n",
    );
    let file = path.to_str().unwrap();
    // The model runs it: the first folio allocation fails, so the first
    // touch gets no memory (ENOMEM) and the second succeeds.
    let out = thpsim(&["run", file]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    // Linux refuses, before taking the host lock or touching a knob.
    let out = thpsim(&["run", "--backend", "linux", file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("{file}: line 2: inject folio is model-only")), "{}", stderr(&out));
    let out = thpsim(&["oracle", file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("inject folio is model-only"), "{}", stdout(&out));
    assert!(stdout(&out).ends_with("0 passed, 1 failed\n"), "{}", stdout(&out));
}

#[test]
fn unbounded_input_is_refused_quickly() {
    let start = std::time::Instant::now();
    let out = thpsim(&["run", "/dev/zero"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(1), "took {:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "/dev/zero:1:1: error: the scenario is larger than the limit of 4 MiB (MAX_SCENARIO_BYTES); reading stopped there\n"
    );
    let out = thpsim(&["oracle", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("larger than the limit of 4 MiB"), "{}", stdout(&out));
}

#[test]
fn dash_reads_standard_input_with_the_same_bound() {
    use std::io::Write as _;
    let run_stdin = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_thpsim"))
            .args(["run", "-", "--no-pages"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The reader may stop early and close its end: ignore EPIPE.
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out = run_stdin(b"machine ram=64M\np1: A = mmap 2M\np1: touch A write 1\nexpect ok\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("scenario - (-) on model"), "{}", stdout(&out));
    let out = run_stdin(b"p1: A = mmap 2M\np1: touch A\xff\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("-:2:12: error: invalid UTF-8"), "{}", stderr(&out));
    let out = run_stdin(&vec![b'#'; 5 << 20]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("larger than the limit of 4 MiB"), "{}", stderr(&out));
}

#[test]
fn a_failed_fork_leaves_no_child_and_the_run_goes_on() {
    // On a 2M machine the parent's 2M cannot all be faulted (the overcommit
    // heuristic allows mapping it all, no more), and fork cannot get its page
    // tables: fork fails with ENOMEM, as on Linux.
    let path = temp_file(
        "fork_enomem.thp",
        "machine ram=2M\np1: A = mmap 2M\np1: touch A write\np2 = fork p1\nexpect errno ENOMEM\n\
         p2: touch A write\nexpect errno ESRCH\nobserve\np2: exit\np1: munmap A\nexpect ok\n",
    );
    let out = thpsim(&["run", "--no-pages", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "note: {}:6: p2: touch A write: p2 does not exist: its fork at line 4 failed with ENOMEM; the operation answers ESRCH",
            path.display()
        )),
        "{text}"
    );
    assert!(text.contains("p2: exit: returned ESRCH"), "{text}");
}

/// Scenarios `thpsim fuzz` found breaking the model (an invariant, a panic)
/// on tiny machines with injected failures, kept after their fixes: each
/// must now run to the end on the model. They use `inject`, which the live
/// kernel cannot run, so they live here rather than in scenarios/.
#[test]
fn fuzz_reproducers_run_to_the_end_on_the_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/model_only");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5, "expected the fuzz reproducers in {}", dir.display());
    for file in files {
        let out = thpsim(&["run", "--no-pages", file.to_str().unwrap()]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}: exit {:?}\n{}{}",
            file.display(),
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
    }
}
