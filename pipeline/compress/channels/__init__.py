"""Structured (channel) pruning: the traced dependency graph (graph), channel importance
(importance), layer cutting and its transform (cut), the rule and plan (prune), and the
sensitivity analysis that chooses per-group ratios for a target (sensitivity)."""
