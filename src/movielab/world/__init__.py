"""The world: a simulated movie-streaming service whose users produce the course's event stream."""
