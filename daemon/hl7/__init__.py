"""HL7 v2 report intake over MLLP: framing, parsing, acknowledgements (pure) and the listener and store (adapters)."""
