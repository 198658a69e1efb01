"""Health checks of real servers, the per-director agent and its metrics."""
