"""Workers, linking and write-back."""
