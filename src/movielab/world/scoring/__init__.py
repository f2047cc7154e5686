"""Scoring every team from the hidden truth: per team and per day (`daily`), the course's checks from the
stream (`coursechecks`), the scoreboard with its files and Prometheus gauges (`board`). Instructor-only."""
