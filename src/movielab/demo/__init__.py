"""The demo (`movielab demo`): the live world against the operated recommender and the random placeholder,
with the figures computed from the stream (`streamstats`) and a real Prometheus when installed (`prometheus`).
"""
