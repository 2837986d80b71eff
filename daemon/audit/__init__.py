"""The audit trail and the scheduled audit reports."""
