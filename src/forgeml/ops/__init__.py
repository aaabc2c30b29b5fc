"""Every differentiable op, grouped by family; ``forgeml`` re-exports the public functions."""
