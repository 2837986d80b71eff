"""Operations: logging, health and metrics endpoints."""
