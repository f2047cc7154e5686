"""Kafka plumbing shared by the world and the recommender: embedded broker, topics, sink, reader.

Imports nothing else of movielab, and connects to nothing until called.
"""

from movielab.kafka.admin import KafkaSetupError, ensure_topics, topic_name
from movielab.kafka.broker import BrokerError, EmbeddedBroker, run_broker
from movielab.kafka.consumer import ConsumeError, consumer_config, read_topic
from movielab.kafka.producer import DeliveryError, KafkaSink

__all__ = [
    "BrokerError",
    "ConsumeError",
    "DeliveryError",
    "EmbeddedBroker",
    "KafkaSetupError",
    "KafkaSink",
    "consumer_config",
    "ensure_topics",
    "read_topic",
    "run_broker",
    "topic_name",
]
