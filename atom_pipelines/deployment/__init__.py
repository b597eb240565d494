"""How the deployment runs: instance-level pieces that dagster.yaml names (the run launcher)."""
