"""What the ``spikeguide`` subcommands run beyond one training: the quickstart, the EnOF
ablation, evaluating a finished run."""
