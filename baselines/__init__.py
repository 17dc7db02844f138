"""Model wrappers. Each module registers one family with ``bench.registry.register``;
``baselines.nn`` holds the shared building blocks (U-Net, noise schedules, flow layers)."""
