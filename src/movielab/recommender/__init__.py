"""The recommender: the production service a team builds against the world's stream and API.

Never imports `movielab.world`; it sees only the contract, the Kafka topic and the world's HTTP API.
"""
