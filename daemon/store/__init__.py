"""The database: tables, sessions, the job queue."""
