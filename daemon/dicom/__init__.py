"""DICOM: the Storage SCP and study index, and the DICOM write-back (private tags, SR, forwarding)."""
