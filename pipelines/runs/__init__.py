"""The run folder: what a run writes (folder), guards it (guard), resumes it (resume), reports and cards it."""
