"""Release: the canary's statistics, its controller, online metrics per arm, and the operator that runs it all."""
