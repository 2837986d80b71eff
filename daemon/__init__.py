"""neurolabel: labels head MRI studies from their radiology reports."""

__version__ = "0.1.0"
