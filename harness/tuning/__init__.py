"""A fair comparison: every method gets the same tuning under the same budget (the `tune:` section).

The protocol, in the order `harness run` follows it for a suite with a `tune:` section:
1. each method's search space: the loss's declared space (harness.losses.base: its own dimensions
   and the shared learning rate), narrowed or overridden by `tune.space` (space.py), checked against
   the loss's constraints before anything runs;
2. per method and starting point (a suite with several starts tunes each on its own),
   `tune.trials` trials proposed by one of Optuna's samplers (grid, quasi-random, model-based) through ask/tell with fixed distributions, seeded by `tune.seed` (sampler.py). A
   trial is an ordinary run (content-hash id) evaluated on the validation prompts, stored under
   results/<suite>/tuning/trials/; a re-run replays the same proposals and reuses stored trials,
   so an interrupted tuning resumes with only the missing trials (harness.tune, the stage above
   the runner that runs all this);
3. selection reads the trials' validation rows only: per (start, method), the best `tune.metric`
   in `tune.direction` among the trials whose validation KL meets `tune.kl_budget`, or nothing when
   none does (select.py; results/<suite>/tuning/trials.parquet records every trial and the choice);
4. the selected setting re-runs with `tune.seeds` on the test prompts, into results/<suite>/ (the
   headline), and each method's default setting likewise into results/<suite>/tuning/defaults/,
   so the report can say what tuning changed.

Every trial gets the suite's budget, so each method's tuning costs `trials` budgets per start.
"""
