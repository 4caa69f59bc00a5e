#!/bin/sh
# Sinusoid regression (Finn et al. 2017 setup) for the MAML family, iMAML, MAML + a learned inner
# optimizer and a pretrained baseline, seeds 0, 1 and 2 one after the other, 10,000
# meta-iterations per (method, K). Writes $WORKDIR/seed_<s>/results.json and
# $WORKDIR/results_seeds.json (default WORKDIR /tmp/l2l_sinusoid) and prints the mean +- std
# table (README.md quotes it); cells where held-out tasks diverged say how many. A rerun resumes
# from the checkpoints (and re-evaluates); `--methods=iMAML` (say) adds one method to existing
# results (results.json merges). Exit status 3 if a method diverged (see maml.py).
# Settings chosen on the validation split (BUILD.md), never on the test tasks:
# iMAML: 2 damped Newton-CG steps (5 CG iterations each, line search) on the proximal objective
# with lam $IMAML_LAM (default 100), 5 CG steps for the meta-gradient, $IMAML_ITERATIONS
# meta-iterations (default 6,000: its meta-step costs about 20 MAML meta-steps); at evaluation
# "1 step" / "10 steps" are Newton steps. FOMAML: outer learning rate $FOMAML_META_LR (default
# 1e-2; the others 1e-3).
# ANIL: its head reads $ANIL_HEAD_INPUT (default linear: the last hidden layer's
# pre-activations, signed), inner step size $ANIL_INNER_LR (default 0.03) and outer learning
# rate $ANIL_META_LR (default 3e-3); the previous row (ReLU features, Raghu et al.'s):
# ANIL_HEAD_INPUT=relu ANIL_META_LR=1e-2. MetaSGD-ANIL: initial step sizes $ANIL_INNER_LR,
# outer learning rate 1e-3.
# MAML+LSTM / FOMAML+LSTM: MAML's step plus a coordinatewise LSTM (8 units) meta-trained with
# the initialization (fewshot.JOINT_LSTM_*); FOMAML+LSTM: outer learning rates
# $FOMAML_LSTM_META_LR (default 1e-2) for the initialization and $FOMAML_LSTM_RULE_META_LR
# (default 1e-5) for the LSTM's weights, two Adams.
cd "$(dirname "$0")/.." && exec nice -n "${NICE:-10}" "${PYTHON:-python}" maml.py \
  --problem=sinusoid --num_iterations="${ITERATIONS:-10000}" --shots=5,10,20 --eval_steps=1,10 \
  --imaml_solver=newton --imaml_lam="${IMAML_LAM:-100}" --imaml_inner_steps=2 \
  --imaml_iterations="${IMAML_ITERATIONS:-6000}" --fomaml_meta_lr="${FOMAML_META_LR:-1e-2}" \
  --imaml_newton_cg_steps=5 --imaml_cg_steps=5 \
  --anil_inner_lr="${ANIL_INNER_LR:-0.03}" --anil_meta_lr="${ANIL_META_LR:-3e-3}" \
  --anil_head_input="${ANIL_HEAD_INPUT:-linear}" \
  --fomaml_lstm_meta_lr="${FOMAML_LSTM_META_LR:-1e-2}" \
  --fomaml_lstm_rule_meta_lr="${FOMAML_LSTM_RULE_META_LR:-1e-5}" \
  --seeds="${SEEDS:-0,1,2}" --workdir="${WORKDIR:-/tmp/l2l_sinusoid}" "$@"
