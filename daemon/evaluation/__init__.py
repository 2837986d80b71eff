"""Evaluation of the report classifier: metrics, the rule-based baseline, `neurolabel evaluate`."""
