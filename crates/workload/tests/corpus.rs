//! Every scenario under scenarios/ parses.

use std::path::{Path, PathBuf};

use thpsim_workload::parse_scenario;

fn thp_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            thp_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "thp") {
            out.push(path);
        }
    }
}

#[test]
fn every_scenario_in_the_corpus_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files = Vec::new();
    thp_files(&root, &mut files);
    assert!(files.iter().any(|f| f.ends_with("examples/fault_pmd.thp")), "no examples found under {}", root.display());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let label = file.strip_prefix(root.parent().unwrap().parent().unwrap()).unwrap_or(&file).display().to_string();
        let scenario = parse_scenario(&label, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!scenario.steps.is_empty(), "{label}: no steps");
        assert_eq!(scenario.name, file.file_stem().unwrap().to_string_lossy());
    }
}
