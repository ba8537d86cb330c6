"""Run folders: where they live, the registry of runs, the writer lock, and which model a run holds."""
