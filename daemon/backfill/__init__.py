"""`neurolabel backfill`: label historic reports (JSONL, CSV or HL7) through Triton, resumably."""
