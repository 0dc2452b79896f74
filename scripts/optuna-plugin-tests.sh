#!/usr/bin/env bash
# Run the Optuna plugin's own tests against this project's sweeper: a plugin module on the path
# (scripts/optuna_plugin_harness) makes their `hydra/sweeper=optuna` this project's
# `hydra/sweeper=resumable_optuna`. Give it the plugin's directory in Hydra's repository, which holds
# setup.py, example/ and tests/ (the tests of hydra-optuna-sweeper 1.4.0rc3 are in its sdist):
#
#   scripts/optuna-plugin-tests.sh PATH/TO/hydra/plugins/hydra_optuna_sweeper [PYTEST OPTIONS]
#
# Without the module on the path, the same tests run against the plugin's own sweeper, to compare.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$1"
shift
PYTHONPATH="$repo/scripts/optuna_plugin_harness:$repo${PYTHONPATH:+:$PYTHONPATH}" \
  exec "$repo/.venv/bin/pytest" tests -p no:cacheprovider "$@"
