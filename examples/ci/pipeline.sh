#!/usr/bin/env bash
# The CI/CD path from a training run to production, one clfops command per step:
#
#   train -> evaluate -> register -> promote to staging (gate) -> promote to production (gate + beat production)
#
# A failing gate stops the pipeline with exit code 1 and leaves every alias where it was; the refused version
# is tagged promotion.<alias>=failed with the reason, so the registry records the decision either way.
# Gates: METRIC(>=|<=|>|<|==)NUMBER on the run's metrics, several separated by spaces. They read the eval/*
# metrics `clfops evaluate --log-mlflow` logs; without them the test/* metric training logged stands in.
#
# Settings (environment variables, all optional):
#   MLFLOW_TRACKING_URI  the store; default sqlite:///mlflow.db here (use a server: `clfops server`, so that the
#                        registry outlives the CI machine)
#   MODEL_NAME           registered model name                    (default: fashion-classifier)
#   TRAIN_ARGS           overrides for `clfops train`             (default: model=fast_cnn trainer.max_epochs=3)
#   STAGING_GATE         gates for staging                        (default: eval/acc>=0.85)
#   PRODUCTION_GATE      gates for production                     (default: STAGING_GATE)
#   RUN_ID               promote this existing run instead of training a new one
#   EVALUATE             0 skips `clfops evaluate`                (default: 1)
#   RUN_ROOT             where run directories go                 (default: runs)
#   CLFOPS               how to call clfops                       (default: clfops)
set -euo pipefail

CLFOPS=${CLFOPS:-clfops}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
MODEL_NAME=${MODEL_NAME:-fashion-classifier}
TRAIN_ARGS=${TRAIN_ARGS:-model=fast_cnn trainer.max_epochs=3}
STAGING_GATE=${STAGING_GATE:-eval/acc>=0.85}
PRODUCTION_GATE=${PRODUCTION_GATE:-$STAGING_GATE}
EVALUATE=${EVALUATE:-1}
RUN_ROOT=${RUN_ROOT:-runs}

step() { printf '\n==> %s\n' "$*"; }
gate_args() { local g; for g in $1; do printf -- '--gate\n%s\n' "$g"; done; }

if [[ -z "${RUN_ID:-}" ]]; then
  run_name="ci-$(date +%Y%m%d-%H%M%S)-$$"
  step "train: $TRAIN_ARGS"
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of overrides
  $CLFOPS train $TRAIN_ARGS "run.root=$RUN_ROOT" "run.name=$run_name"
  RUN_ID=$(sed -n 's/.*"run_id": *"\([0-9a-f]*\)".*/\1/p' "$RUN_ROOT/$run_name/run.json")
  [[ -n "$RUN_ID" ]] || { echo "no MLflow run id in $RUN_ROOT/$run_name/run.json" >&2; exit 2; }
fi
echo "run $RUN_ID on $MLFLOW_TRACKING_URI"

if [[ "$EVALUATE" != 0 ]] && $CLFOPS evaluate --help >/dev/null 2>&1; then
  step "evaluate run $RUN_ID on its test split (eval/* metrics into the run)"
  $CLFOPS evaluate --run-id "$RUN_ID" --log-mlflow
else
  echo "no evaluation: the gates read the test/* metrics training logged"
fi

step "register run $RUN_ID as $MODEL_NAME"
$CLFOPS register --run-id "$RUN_ID" --name "$MODEL_NAME"

step "promote to staging if: $STAGING_GATE"
mapfile -t staging_gates < <(gate_args "$STAGING_GATE")
$CLFOPS promote --name "$MODEL_NAME" --run-id "$RUN_ID" --alias staging "${staging_gates[@]}"

step "promote to production if: $PRODUCTION_GATE and better than the current production version"
mapfile -t production_gates < <(gate_args "$PRODUCTION_GATE")
$CLFOPS promote --name "$MODEL_NAME" --run-id "$RUN_ID" --alias production "${production_gates[@]}" \
  --compare-to production

step "registry"
$CLFOPS models "$MODEL_NAME"
