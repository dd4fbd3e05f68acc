"""The runtime: where rollouts come from, who ticks them when, and the composition root."""
