"""Running a course: one course file for many teams, checkpoints that survive restarts (imports the world only)."""
