#!/usr/bin/env bash
# Mutation testing of the Raft core (and the system state) with the simulator and the rule tests as
# the test suite: every mutant that survives is either killed by a new fault, scenario or checker
# rule, or shown equivalent in core/mutants/REPORT.md. Run from the repository root:
#   core/mutants/run.sh                      # core/src/raft/ and core/src/system/
#   core/mutants/run.sh -f core/src/raft/election.rs     # one file (extra args go to cargo-mutants)
# Needs `cargo install cargo-mutants`. Each mutant runs the rule tests, the scripted scenarios
# (without their planted-bug variants) and a bounded sweep of MUTANTS_SIM_SEEDS (default 500) seeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
files=(-f 'core/src/raft/*.rs' -f 'core/src/system/*.rs')
if [ "$#" -gt 0 ]; then files=(); fi
SIM_SEEDS="${MUTANTS_SIM_SEEDS:-500}" cargo mutants -p kommander-core "${files[@]}" "$@" \
  --exclude-re 'canary|overwrite_in_place|fmt::Display|impl Debug' \
  --output core/mutants \
  -- --lib --test raft_rules --test simulation --test scenarios --test membership --test generations \
  -- --skip canary --skip every_planted_bug --skip replay_seed --skip same_seed
