//! Shrinks a failing scenario to fewer lines that still fail the same way.
//!
//! Greedy deletion of line chunks, halving the chunk size down to single
//! lines (a light form of delta debugging), then single lines again until a
//! whole pass removes nothing. Comment lines (`#`) are kept so the seed and
//! knobs a generator wrote at the top survive; blank lines are dropped.
//! The caller's predicate decides what "still fails" means: it must reject
//! a candidate that no longer parses.

/// Re-runs the shrinker spends at most, per failure.
pub const MAX_SHRINK_RUNS: usize = 200;

/// The result of shrinking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    /// The smallest failing scenario found.
    pub text: String,
    /// Times the predicate was called.
    pub runs: usize,
    /// Lines removed.
    pub removed: usize,
}

/// Deletes lines of `text` while `still_fails` holds, calling it at most
/// `max_runs` times. `text` itself is assumed to fail and is not re-run.
pub fn shrink(text: &str, max_runs: usize, mut still_fails: impl FnMut(&str) -> bool) -> Shrunk {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let keep_always: Vec<bool> = lines.iter().map(|l| l.trim_start().starts_with('#')).collect();
    let mut kept: Vec<usize> = (0..lines.len()).collect();
    let mut runs = 0;
    let render = |kept: &[usize]| {
        let mut out = String::new();
        for &i in kept {
            out.push_str(lines[i]);
            out.push('\n');
        }
        out
    };

    let candidates = |kept: &[usize]| kept.iter().enumerate().filter(|(_, &i)| !keep_always[i]).count();
    let mut chunk = candidates(&kept).div_ceil(2).max(1);
    'outer: loop {
        let mut removed_any = false;
        // Positions are indices into the removable lines of `kept`.
        let mut pos = 0;
        loop {
            let removable: Vec<usize> =
                kept.iter().enumerate().filter(|(_, &i)| !keep_always[i]).map(|(k, _)| k).collect();
            if pos >= removable.len() {
                break;
            }
            if runs >= max_runs {
                break 'outer;
            }
            let end = (pos + chunk).min(removable.len());
            let drop: Vec<usize> = removable[pos..end].to_vec();
            let candidate: Vec<usize> =
                kept.iter().enumerate().filter(|(k, _)| !drop.contains(k)).map(|(_, &i)| i).collect();
            runs += 1;
            if still_fails(&render(&candidate)) {
                kept = candidate;
                removed_any = true;
                // The next chunk now starts at `pos`.
            } else {
                pos += chunk;
            }
        }
        if chunk > 1 {
            chunk = chunk.div_ceil(2);
        } else if !removed_any {
            break;
        }
    }
    Shrunk { text: render(&kept), runs, removed: lines.len() - kept.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(n: usize) -> String {
        let mut text = String::from("# seed 0x7e57\nmachine ram=1G\n");
        for i in 0..n {
            text.push_str(&format!("p1: touch A+{i}K write\n"));
        }
        text
    }

    #[test]
    fn shrinks_to_the_lines_the_failure_needs() {
        let text = scenario(30);
        // "Diverges" when the machine line and touches 7 and 23 remain.
        let fails = |t: &str| t.contains("machine") && t.contains("A+7K ") && t.contains("A+23K ");
        let shrunk = shrink(&text, MAX_SHRINK_RUNS, fails);
        assert_eq!(shrunk.text, "# seed 0x7e57\nmachine ram=1G\np1: touch A+7K write\np1: touch A+23K write\n");
        assert_eq!(shrunk.removed, 28);
        assert!(shrunk.runs <= MAX_SHRINK_RUNS);
    }

    #[test]
    fn order_dependent_failures_shrink_too() {
        // Fails only when some line mentioning 3 comes before one mentioning 5.
        let text = scenario(12);
        let fails = |t: &str| match (t.find("A+3K"), t.find("A+5K")) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        };
        let shrunk = shrink(&text, MAX_SHRINK_RUNS, fails);
        assert_eq!(shrunk.text, "# seed 0x7e57\np1: touch A+3K write\np1: touch A+5K write\n");
    }

    #[test]
    fn respects_the_run_budget() {
        let text = scenario(40);
        let mut calls = 0;
        let shrunk = shrink(&text, 5, |_| {
            calls += 1;
            false
        });
        assert_eq!(calls, 5);
        assert_eq!(shrunk.runs, 5);
        assert_eq!(shrunk.text, text);
    }

    #[test]
    fn a_predicate_that_always_fails_empties_all_but_comments() {
        let shrunk = shrink(&scenario(9), MAX_SHRINK_RUNS, |_| true);
        assert_eq!(shrunk.text, "# seed 0x7e57\n");
        assert_eq!(shrunk.runs, 2);
    }
}
