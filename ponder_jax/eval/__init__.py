"""Evaluation: the four methods' measures on a trained model, from one registry of tasks.

  tasks.py           task specs and the registry (perplexity / bits per byte, procedural exact
                     match by generation, synthetic math direct and with thoughts, multiple
                     choice by log-likelihood; any of them with M_inf pauses)
  sets.py            the items (procedural, math, multiple choice) and the shipped eval sets
  runner.py          runs tasks through the inference engine (infer/) and the trainer's loss
  report.py          results.json, the markdown table, plots, the table across a sweep's runs
  cli.py             `ponder-eval --workdir=RUN | --hf=DIR | --sweep=DIR --tasks=...`
  lm_eval_adapter.py the `ponder_jax` model of lm-evaluation-harness (optional extra `eval`),
                     with local task definitions in lm_eval_tasks/

Training runs tasks too: `train.eval_tasks` every `train.eval_every` steps (train/trainer.py).
"""
