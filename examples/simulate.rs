//! Run the deterministic simulator over many seeds with faults on and print what happened.
//!
//! ```text
//! cargo run --release --example simulate -- --seeds 200 [--first-seed 1] [--no-faults]
//! ```
//! Exits non-zero (and prints the replay command) if any seed breaks a safety invariant.

use kommander::core::sim::{run_seed, SimOptions};
use std::time::Instant;

fn main() {
    let mut seeds = 100u64;
    let mut first = 1u64;
    let mut options = SimOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => seeds = args.next().and_then(|v| v.parse().ok()).expect("--seeds N"),
            "--first-seed" => first = args.next().and_then(|v| v.parse().ok()).expect("--first-seed N"),
            "--no-faults" => options.faults = false,
            other => {
                eprintln!("unknown argument {other}; usage: simulate [--seeds N] [--first-seed S] [--no-faults]");
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    let (mut steps, mut acked, mut delivered, mut crashes) = (0u64, 0u64, 0usize, 0u64);
    println!(
        "{:>8} {:>5} {:>10} {:>8} {:>8} {:>9} {:>7}",
        "seed", "nodes", "partitions", "steps", "acked", "delivered", "crashes"
    );
    for seed in first..first + seeds {
        match run_seed(seed, &options) {
            Ok(report) => {
                if seed < first + 10 {
                    println!(
                        "{:>8} {:>5} {:>10} {:>8} {:>8} {:>9} {:>7}",
                        report.seed,
                        report.nodes,
                        report.partitions,
                        report.steps,
                        report.acked,
                        report.delivered,
                        report.crashes
                    );
                }
                steps += report.steps;
                acked += report.acked;
                delivered += report.delivered;
                crashes += report.crashes;
            }
            Err(failure) => {
                eprintln!("VIOLATION: {failure}");
                std::process::exit(1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("...");
    println!(
        "{seeds} seeds, 0 violations: {steps} steps ({:.0} steps/s), {acked} proposals acknowledged, \
         {delivered} entries delivered, {crashes} crashes, {secs:.1} s",
        steps as f64 / secs
    );
}
