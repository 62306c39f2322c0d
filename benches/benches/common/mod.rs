//! What the criterion benches share: settings for a small machine that other work shares,
//! and the ratio table each bench prints at the end (every figure against its baseline from
//! the same run, as the workspace's benchmarks do).

use std::path::PathBuf;
use std::time::SystemTime;

use criterion::Criterion;

/// Where criterion keeps its results: `$CRITERION_HOME`, else `criterion/` in the target
/// directory this bench was built into (criterion's own default, found without cargo).
fn output_directory() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // The bench runs as target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().unwrap_or_default();
    match exe.ancestors().nth(3) {
        Some(target) => target.join("criterion"),
        None => PathBuf::from("target/criterion"),
    }
}

/// Criterion with short runs (2 cores, shared): 1 s warm-up, 3 s of samples.
fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(30)
        .output_directory(&output_directory())
        .configure_from_args()
}

/// A bench's `main`: runs `benches` with [`criterion`]'s settings, then prints the ratio
/// table of `pairs` in `group` (see [`print_ratios`]).
pub fn run(benches: fn(&mut Criterion), group: &str, pairs: &[(&str, &str, &str)]) {
    let since = SystemTime::now();
    let mut c = criterion();
    benches(&mut c);
    c.final_summary();
    print_ratios(group, pairs, since);
}

/// The time per iteration of `group/bench` that criterion reports (its slope estimate, or
/// the mean where there is no slope), as measured by this process: an earlier run's file,
/// or a bench filtered out of this one, does not count.
fn typical_ns(group: &str, bench: &str, since: SystemTime) -> Option<f64> {
    let path = output_directory().join(group).join(bench).join("new").join("estimates.json");
    let fresh = std::fs::metadata(&path).and_then(|m| m.modified()).ok()? >= since;
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let typical = if json["slope"].is_null() { &json["mean"] } else { &json["slope"] };
    typical["point_estimate"].as_f64()
}

/// Prints, for each `(ours, baseline, what)` pair of benches in `group`, the ratio of their
/// times: 1.00 is as fast as the baseline, 2.00 takes twice as long.
fn print_ratios(group: &str, pairs: &[(&str, &str, &str)], since: SystemTime) {
    let mut lines = Vec::new();
    for (ours, base, what) in pairs {
        if let (Some(o), Some(b)) = (typical_ns(group, ours, since), typical_ns(group, base, since))
        {
            lines.push(format!(
                "  {group}/{ours} / {group}/{base}: {:.2} ({o:.0} ns / {b:.0} ns)  {what}",
                o / b
            ));
        }
    }
    if !lines.is_empty() {
        println!("\nratios of times per iteration (ours / baseline, same run):");
        for l in lines {
            println!("{l}");
        }
    }
}
