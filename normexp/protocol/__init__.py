"""The fair protocol: a learning rate per cell chosen on validation (select.py: the rule;
plan.py: the jobs it takes; hydra_plugins/normexp_sweeper: the Hydra sweeper that runs them)."""
