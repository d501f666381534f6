#!/usr/bin/env bash
# Builds .venv-verl1: verl 0.9.1 + TransferQueue 0.1.11 (requirements/verl1.lock) layered over the main
# venv, for tests/test_verl_v1.py (the verl >= 0.8 v1 path). Opt-in: `make deps` does not run it; run it
# after `make develop`. .venv-verl (verl 0.7.1) is untouched.
# Usage: requirements/verl1_env.sh MAIN_VENV VERL1_VENV
set -euo pipefail
exec "$(dirname "$0")/verl_env.sh" "${1:-.venv}" "${2:-.venv-verl1}" requirements/verl1.lock \
    'import verl, heapa, transfer_queue; from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer'
