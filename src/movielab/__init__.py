"""movielab: a simulated movie-streaming world on Kafka and the recommender built against it."""

__version__ = "0.1.0"
